"""Forward migrations of the catalogue schema, and (re)installing its views.

Migrations are the numbered SQL files in schema/migrations/, applied in order inside one
transaction each, recorded in `schema_version`. Before an existing catalogue is migrated, a copy
of it is kept beside it (`<name>.duckdb.bak-v<old version>`). A catalogue written by a newer
muscat is refused, untouched. Views (schema/views/*.sql, applied in file-name order) are
re-created whenever their text changes.

This module knows the catalogue only as the `Catalogue` protocol below (catalog/database.py's
`Database` is one): the database imports the migrations, never the other way round.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .blake2 import blake2b
from .clock import utc_now
from .errors import DatabaseError

if TYPE_CHECKING:
    import duckdb

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schema"
MIGRATIONS = sorted((SCHEMA_DIR / "migrations").glob("[0-9][0-9][0-9][0-9]_*.sql"))
VIEWS = sorted((SCHEMA_DIR / "views").glob("*.sql"))
LATEST = len(MIGRATIONS)


class Catalogue(Protocol):
    """What migrating needs of a catalogue file."""

    @property
    def path(self) -> Path: ...

    def connect_read_only(self) -> duckdb.DuckDBPyConnection:
        """A read-only connection to the file as it is, waiting while a writer holds it."""
        ...

    def reattach(self, con: duckdb.DuckDBPyConnection) -> None:
        """Detach the file from `con` (which checkpoints it) and attach it again."""
        ...


def _version(con: duckdb.DuckDBPyConnection) -> int:
    from .duck import duckdb

    # Asked of the table itself: listing duckdb_tables() first cost ~20 ms of CPU (the first
    # query of every `muscat status`), the missing table of a new file is an error at once.
    try:
        return con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
    except duckdb.CatalogException:
        return 0


def _views_digest() -> str:
    digest = blake2b(digest_size=16)
    for path in VIEWS:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _refuse_newer(db: Catalogue, version: int) -> None:
    if version > LATEST:
        raise DatabaseError(
            f"the catalogue {db.path} has schema version {version}, newer than this muscat "
            f"understands ({LATEST}): upgrade muscat to use it (the file was not changed)"
        )


def needs_upgrade(db: Catalogue, con: duckdb.DuckDBPyConnection | None = None) -> bool:
    """Whether the file's schema (or its views) is older than this muscat's, checked read-only
    (on `con` when given: the catalogue attached and in use). A catalogue newer than this muscat
    is a DatabaseError."""
    own = con is None
    if con is None:
        con = db.connect_read_only()
    try:
        version = _version(con)
        _refuse_newer(db, version)
        if version < LATEST:
            return True
        stored = con.execute("SELECT value FROM catalog_meta WHERE key = 'views_digest'").fetchone()
        return stored is None or stored[0] != _views_digest()
    finally:
        if own:
            con.close()


def upgrade(db: Catalogue, con: duckdb.DuckDBPyConnection) -> None:
    """Bring the attached catalogue up to date. `con` has it attached and in use."""
    from . import __version__

    version = _version(con)
    _refuse_newer(db, version)
    if 0 < version < LATEST:
        backup = db.path.with_name(f"{db.path.name}.bak-v{version}")
        db.reattach(con)  # detaching checkpoints, so the file alone is a complete copy
        import shutil  # only here: ~10 ms of imports that every read would pay

        shutil.copyfile(db.path, backup)
    for number in range(version + 1, LATEST + 1):
        con.begin()
        try:
            con.execute(MIGRATIONS[number - 1].read_text())
            con.execute(
                "INSERT INTO schema_version VALUES (?, ?, ?)",
                [number, utc_now(), __version__],
            )
        except BaseException:
            con.rollback()
            raise
        con.commit()
    digest = _views_digest()
    stored = con.execute("SELECT value FROM catalog_meta WHERE key = 'views_digest'").fetchone()
    if stored is None or stored[0] != digest:
        con.begin()
        for path in VIEWS:
            con.execute(path.read_text())
        con.execute("DELETE FROM catalog_meta WHERE key = 'views_digest'")
        con.execute("INSERT INTO catalog_meta VALUES ('views_digest', ?)", [digest])
        con.commit()
