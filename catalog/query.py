"""Read-only SQL over the catalogue: `muscat sql`.

Two locks keep it read-only: the file is opened read-only, and statements are checked before
anything runs, so that no part of a multi-statement query executes if any part would write
(to the catalogue, to another attached database, or to a file via COPY/EXPORT).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import QueryError, ReadOnlyViolation

if TYPE_CHECKING:
    from .config import Settings
    from .database import Database

# SELECT covers SHOW, DESCRIBE, SUMMARIZE, FROM-first queries and UNPIVOT; MULTI is a PIVOT,
# which defines a temporary ENUM before selecting.
_READ_ONLY_TYPES = {"SELECT", "EXPLAIN", "MULTI"}


def check_read_only(sql: str, db: Database | None = None) -> None:
    """Raise ReadOnlyViolation unless every statement in `sql` only reads (QueryError if it
    does not parse). With `db`, parsed on its readers' DuckDB instance."""
    from .duck import duckdb

    try:
        statements = db.statements(sql) if db is not None else duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"cannot parse the query: {exc}") from None
    if not statements:
        raise ReadOnlyViolation("the query is empty")
    for statement in statements:
        kind = statement.type.name
        if kind not in _READ_ONLY_TYPES:
            first = statement.query.strip().split(None, 1)[0].upper() if statement.query.strip() else kind
            raise ReadOnlyViolation(
                f"muscat sql is read-only: {first} statements are refused (nothing was run)"
            )


def query(db: Database, sql: str, settings: Settings | None = None) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run read-only SQL; returns column names and rows of the last statement.

    With `settings`, the catalogue's record of the extractors is brought in step with the
    configuration first, so that `pending`, `stale` and `track_features` reflect it.
    """
    check_read_only(sql, db)
    from .duck import duckdb

    if settings is not None:
        from .extractor_state import sync_extractors

        sync_extractors(db, settings)

    with db.read() as con:
        try:
            result = con.execute(sql)
            columns = [d[0] for d in result.description] if result.description else []
            rows = result.fetchall()
        except duckdb.Error as exc:
            raise QueryError(str(exc)) from None
    return columns, rows
