"""Read-only SQL over the catalogue: `muscat sql`.

Two locks keep it read-only: the file is opened read-only, and statements are checked before
anything runs, so that no part of a multi-statement query executes if any part would write
(to the catalogue, to another attached database, or to a file via COPY/EXPORT).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import QueryError, ReadOnlyViolation

if TYPE_CHECKING:
    import duckdb

    from .config import Settings
    from .database import Database

# SELECT covers SHOW, DESCRIBE, SUMMARIZE, FROM-first queries and UNPIVOT; MULTI is a PIVOT,
# which defines a temporary ENUM before selecting.
_READ_ONLY_TYPES = {"SELECT", "EXPLAIN", "MULTI"}


def check_read_only(sql: str, db: Database | None = None) -> list[duckdb.Statement]:
    """Raise ReadOnlyViolation unless every statement in `sql` only reads (QueryError if it
    does not parse); returns the statements. With `db`, parsed on its readers' DuckDB instance."""
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
    return statements


# Types whose Python values would not say what DuckDB holds: an INTERVAL's months become 30
# days, TIMESTAMP_NS loses its nanoseconds, an infinite DATE or TIMESTAMP becomes 9999-12-31,
# a TIMESTAMPTZ needs pytz. With `as_text`, they are read as DuckDB's own text instead, as its
# CLI prints them (TIMESTAMPTZ in the session's time zone, with its offset).
_AS_TEXT = {"interval", "date", "time", "time_ns", "timestamp", "timestamp_s", "timestamp_ms",
            "timestamp_ns", "timestamp with time zone", "time with time zone"}


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _text_type(kind: duckdb.DuckDBPyType) -> str | None:
    """`kind` with the types above (also inside lists, arrays, structs, maps and unions) made
    VARCHAR, or None when it holds none of them."""
    if kind.id in _AS_TEXT:
        return "VARCHAR"
    if kind.id in ("list", "array", "map", "struct", "union"):
        children = list(kind.children)
        if kind.id == "union":
            children = children[1:]  # the first child is the tag
        if kind.id == "array":
            children, size = children[:1], children[1][1]
        texts = [_text_type(child) for _, child in children]
        if all(t is None for t in texts):
            return None
        parts = [t or str(child) for t, (_, child) in zip(texts, children)]
        if kind.id == "list":
            return f"{parts[0]}[]"
        if kind.id == "array":
            return f"{parts[0]}[{size}]"
        if kind.id == "map":
            return f"MAP({parts[0]}, {parts[1]})"
        fields = ", ".join(f"{_quoted(name)} {part}" for (name, _), part in zip(children, parts))
        return f"{kind.id.upper()}({fields})"
    return None


def _execute_as_text(con: duckdb.DuckDBPyConnection, statements: list[duckdb.Statement]):  # type: ignore[no-untyped-def]
    """Run the statements; the last one's columns of the types above come as text. A statement
    that cannot be described or wrapped (EXPLAIN, PIVOT) runs as it is."""
    from .duck import duckdb

    *before, last = statements
    for statement in before:
        con.execute(statement)
    if last.type.name == "SELECT":
        text = last.query.strip().rstrip(";")
        try:
            described = con.execute(f"DESCRIBE {text}").fetchall()
            casts = [_text_type(con.dtype(row[1])) for row in described]
        except duckdb.Error:
            casts = []
        if any(casts):
            columns = ", ".join(
                f"#{i}::{cast} AS {_quoted(row[0])}" if cast else f"#{i} AS {_quoted(row[0])}"
                for i, (row, cast) in enumerate(zip(described, casts), 1)
            )
            try:
                # On lines of their own: the statement may end in a -- comment.
                return con.execute(f"SELECT {columns} FROM (\n{text}\n)")
            except duckdb.Error:
                pass
    return con.execute(last)


def query(db: Database, sql: str, settings: Settings | None = None,
          as_text: bool = False) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run read-only SQL; returns column names and rows of the last statement.

    With `settings`, the catalogue's record of the extractors is brought in step with the
    configuration first, so that `pending`, `stale` and `track_features` reflect it. With
    `as_text`, dates, times, timestamps and intervals (also inside nested values) come as
    DuckDB's text, exactly as it holds them (what `muscat sql` prints).
    """
    statements = check_read_only(sql, db)
    from .duck import duckdb

    from .extractor_state import read_in_step

    with db.read() if settings is None else read_in_step(db, settings) as con:
        try:
            result = _execute_as_text(con, statements) if as_text else con.execute(sql)
            columns = [d[0] for d in result.description] if result.description else []
            rows = result.fetchall()
        except duckdb.Error as exc:
            raise QueryError(str(exc)) from None
    return columns, rows
