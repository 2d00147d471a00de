"""Keeping the catalogue's record of the extractors in step with the code and configuration.

The views need to know each extractor's current identity (to tell current from stale results
and to list pending work) and its declared outputs (units, ranges, `track_features` columns).
Commands call `sync()` first; it writes only when something changed.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from .blake2 import blake2b
from .clock import utc_now
from .extractor import LoadedExtractor

if TYPE_CHECKING:
    import duckdb

    from .config import Settings
    from .database import Database

TEMPLATE = Path(__file__).resolve().parent.parent / "schema" / "templates" / "track_features.sql"


def _state(extractors: list[LoadedExtractor]) -> list[dict]:
    return [
        {
            "name": e.name,
            "version": e.version,
            "params_hash": e.params_hash,
            "params": e.params,
            "device": e.device,
            "scope": e.declaration.scope,
            "enabled": e.enabled,
            "reason": e.unavailable_reason,
            "off_reason": e.off_reason,
            "uses": e.uses,
            "weights": e.weights_fingerprint,
            "outputs": [[o.name, o.kind, o.unit, o.range, o.size, o.labels, o.description]
                        for o in e.declaration.outputs],
        }
        for e in extractors
    ]


def _digest(extractors: list[LoadedExtractor]) -> str:
    # The template is part of it: a muscat whose track_features differs rewrites the view.
    text = json.dumps(_state(extractors), sort_keys=True, default=str) + TEMPLATE.read_text()
    return blake2b(text.encode(), digest_size=16).hexdigest()


def sync_extractors(db: Database, settings: Settings) -> None:
    """Record the configured extractors' identities and outputs in the catalogue if they changed."""
    from .registry import load_extractors

    sync(db, load_extractors(settings))


def sync(db: Database, extractors: list[LoadedExtractor]) -> None:
    digest = _digest(extractors)
    with db.read() as con:
        if _stored_digest(con) == digest:
            return
    _write_if_changed(db, extractors, digest)


@contextmanager
def read_in_step(db: Database, settings: Settings) -> Iterator[duckdb.DuckDBPyConnection]:
    """`db.read()`, with the catalogue's record of the extractors that of `settings`: checked in
    the read that follows (one attachment of the file, not two: ~15 ms of `muscat status`), and
    written first only when it differs."""
    from .registry import load_extractors

    extractors = load_extractors(settings)
    digest = _digest(extractors)
    with db.read() as con:
        if _stored_digest(con) == digest:
            yield con
            return
    _write_if_changed(db, extractors, digest)
    with db.read() as con:
        yield con


def _write_if_changed(db: Database, extractors: list[LoadedExtractor], digest: str) -> None:
    with db.write() as con:
        if _stored_digest(con) != digest:
            _write(con, extractors, digest)


def _stored_digest(con: duckdb.DuckDBPyConnection) -> str | None:
    row = con.execute("SELECT value FROM catalog_meta WHERE key = 'extractors_digest'").fetchone()
    return row[0] if row else None


def _write(con: duckdb.DuckDBPyConnection, extractors: list[LoadedExtractor], digest: str) -> None:
    now = utc_now()
    con.execute("DELETE FROM extractor_current")
    con.execute("DELETE FROM extractor_outputs")
    _insert(con, "extractor_current", [
        [e.name, e.version, e.params_hash, e.device, e.declaration.scope, e.enabled, e.available,
         e.unavailable_reason, e.uses, now]
        for e in extractors
    ])
    known = set(con.execute("SELECT extractor, version, params_hash FROM extractor_identities").fetchall())
    _insert(con, "extractor_identities", [
        [e.name, e.version, e.params_hash, json.dumps(e.params, sort_keys=True), e.weights_fingerprint, now]
        for e in extractors if (e.name, e.version, e.params_hash) not in known
    ])
    _insert(con, "extractor_outputs", [
        [e.name, o.name, o.kind, o.unit, *(o.range or (None, None)), o.size,
         list(o.labels) if o.labels else None, o.description, position]
        for e in extractors for position, o in enumerate(e.declaration.outputs)
    ])
    con.execute(track_features_sql(extractors))
    con.execute("DELETE FROM catalog_meta WHERE key = 'extractors_digest'")
    con.execute("INSERT INTO catalog_meta VALUES ('extractors_digest', ?)", [digest])


def _insert(con: duckdb.DuckDBPyConnection, table: str, rows: list[list[Any]]) -> None:
    """All of `rows` in one statement: a statement per row (~3 ms each, some 130 of them) made
    the first extract or status of a catalogue wait 0.4 s here."""
    if rows:
        row = "(" + ", ".join(["?"] * len(rows[0])) + ")"
        values = ", ".join([row] * len(rows))
        con.execute(f"INSERT INTO {table} VALUES {values}", [value for row in rows for value in row])


def track_features_sql(extractors: list[LoadedExtractor]) -> str:
    """The track_features view for these extractors (feature names are checked identifiers).

    The tag columns of `library` come first; a feature of the same name (a genre classifier's
    `genre`) takes the place of that tag column."""
    from .tags import TEXT_COLUMNS

    scalar_columns, vector_columns, columns = [], [], []
    for e in extractors:
        for o in e.declaration.outputs:
            condition = f"FILTER (WHERE feature = '{o.name}')"
            if o.kind == "vector":
                cast = f"::FLOAT[{o.size}]" if o.size else ""
                vector_columns.append(f"any_value(vector) {condition}{cast} AS {o.name}")
                columns.append(f"vectors.{o.name}")
            else:
                source = "value" if o.kind == "scalar" else "text"
                scalar_columns.append(f"any_value({source}) {condition} AS {o.name}")
                columns.append(f"scalars.{o.name}")

    def listing(items: list[str]) -> str:
        return "".join(f",\n        {item}" for item in items)

    features = {o.name for e in extractors for o in e.declaration.outputs}
    tag_columns = [f"l.{name}" for name in TEXT_COLUMNS if name not in features]
    return TEMPLATE.read_text().format(
        tag_columns=listing(tag_columns),
        scalar_columns=listing(scalar_columns),
        vector_columns=listing(vector_columns),
        columns=listing(columns),
    )
