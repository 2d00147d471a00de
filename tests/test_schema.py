"""schema/tables.py against the catalogue muscat makes: every table and contract view has a class
with its columns, in order, each of DuckDB's type, and annotated with the Python type its values
have; the view classes read a catalogue through SQLModel."""

from __future__ import annotations

import json
import math
import types
import typing
from datetime import datetime

import pytest
from conftest import run_muscat
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session, SQLModel, select

import catalog
from schema import tables

# The minimum columns of each contract view (the design notes, "Database").
CONTRACT = {
    "library": ["path", "root", "audio_id", "size", "mtime", "duration_s", "sample_rate", "channels", "codec",
                "artist", "album", "albumartist", "title", "genre", "date", "track_number", "disc_number"],
    "tags": ["path", "audio_id", "key", "value"],
    "features": ["path", "audio_id", "extractor", "version", "feature", "value", "text", "unit", "stale"],
    "feature_vectors": ["path", "audio_id", "extractor", "version", "feature", "vector", "stale"],
    "feature_units": ["feature", "extractor", "unit", "min", "max", "description"],
    "feature_stats": ["feature", "unit", "count", "mean", "std", "min", "max"],
    "pending": ["audio_id", "path", "extractor"],
    "stale": ["audio_id", "path", "extractor", "version", "current_version", "reason"],
    "failed": ["path", "audio_id", "extractor", "version", "error", "attempts", "host"],
    "artifacts": ["path", "audio_id", "extractor", "version", "kind", "format", "bytes"],
    "splits": ["name", "path", "audio_id", "split"],
}


Described = dict[str, list[tuple[str, str, bool]]]


@pytest.fixture(scope="module")
def described(tmp_path_factory) -> tuple[Described, Described]:
    """(column, DuckDB type, nullable) of every table, and of every view, of a new catalogue."""
    path = tmp_path_factory.mktemp("schema") / "cat.duckdb"
    with catalog.Database(path).read() as con:
        def describe(names_sql: str) -> Described:
            return {name: [(column, kind, null == "YES") for column, kind, null, *_ in
                           con.execute(f"DESCRIBE {name}").fetchall()]
                    for (name,) in con.execute(names_sql).fetchall()}

        return (describe("SELECT table_name FROM duckdb_tables() WHERE NOT internal"),
                describe("SELECT view_name FROM duckdb_views() WHERE NOT internal"))


def table_classes() -> dict[str, type[SQLModel]]:
    return {m.__tablename__: m for m in vars(tables).values()
            if isinstance(m, type) and issubclass(m, SQLModel) and "__table__" in vars(m)
            and m.__table__.metadata is SQLModel.metadata}


def duckdb_type(sa_type) -> str:
    """The DuckDB type a SQLAlchemy column type stands for: compiled by duckdb_engine as it would
    be in DDL, then named by DuckDB itself (DOUBLE PRECISION is DOUBLE, UBigInt UBIGINT)."""
    import duckdb
    from duckdb_engine import Dialect

    ddl = sa_type.compile(dialect=Dialect())
    with duckdb.connect() as con:
        return con.execute(f"SELECT typeof(NULL::{ddl})").fetchone()[0]


def python_type(annotation) -> type:
    """`Optional[list[float]]` -> list; `int` -> int."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        (annotation,) = args
    return typing.get_origin(annotation) or annotation


def declared(model) -> list[tuple[str, str, bool]]:
    return [(c.name, duckdb_type(c.type), c.nullable) for c in model.__table__.columns]


def check_annotations(model) -> None:
    """Each field's annotation is the Python type of its column's values; Optional exactly where
    the class lets the column be NULL."""
    hints = typing.get_type_hints(model)
    for c in model.__table__.columns:
        hint = hints[c.name]
        sa_type = c.type.impl_instance if isinstance(c.type, TypeDecorator) else c.type  # SQLModel's AutoString
        assert python_type(hint) is sa_type.python_type, (model.__name__, c.name, hint, c.type)
        optional = type(None) in typing.get_args(hint)
        assert optional == (c.nullable and not c.primary_key), (model.__name__, c.name, hint)


def test_table_classes_match_the_tables_column_by_column_and_type_by_type(described):
    catalogue_tables, _ = described
    models = table_classes()
    assert set(models) == set(catalogue_tables)
    for name, model in models.items():
        # Tables: nullability too, as the migrations declare it.
        assert declared(model) == catalogue_tables[name], name
        check_annotations(model)


def test_view_classes_match_the_contract_views_column_by_column_and_type_by_type(described):
    _, views = described
    assert {v.__tablename__ for v in tables.VIEWS} == set(CONTRACT)
    for view in tables.VIEWS:
        name = view.__tablename__
        # Names and types, not nullability: DuckDB infers a view's from its sources and gets it
        # wrong both ways (`features.unit` comes through a LEFT JOIN and says NOT NULL).
        assert [(c, t) for c, t, _ in declared(view)] == [(c, t) for c, t, _ in views[name]], name
        columns = [c for c, _, _ in views[name]]
        assert [c for c in columns if c in CONTRACT[name]] == CONTRACT[name], name
        check_annotations(view)


def test_view_classes_are_not_in_the_tables_metadata():
    assert not set(SQLModel.metadata.tables) & {v.__tablename__ for v in tables.VIEWS}
    assert all(not c.autoincrement for t in SQLModel.metadata.tables.values() for c in t.primary_key)


def test_view_classes_read_a_catalogue(library, tmp_path):
    root, files = library
    path = tmp_path / "cat.duckdb"
    assert run_muscat("scan", str(root), db=path).returncode == 0
    engine = tables.engine_for(str(path))
    with Session(engine) as session:
        present = session.exec(select(tables.LibraryFile)).all()
        assert len(present) == len(files["good"] + files["broken"])
        assert all(f.path.startswith(str(root)) and isinstance(f.mtime, datetime) for f in present)
        pending = session.exec(select(tables.PendingJob).where(tables.PendingJob.extractor == "probe")).all()
        assert {p.path for p in pending} == {f.path for f in present}
    extract = run_muscat("extract", "--only", "hpcp", "--json", db=path)
    assert extract.returncode == 1, extract.stderr  # the broken files fail to probe
    assert json.loads(extract.stdout)["failed"] >= len(files["broken"])
    with Session(engine) as session:
        durations = session.exec(select(tables.Feature).where(tables.Feature.feature == "duration")).all()
        assert len(durations) == len(files["good"])
        assert all(0.2 < d.value < 0.6 and d.unit == "s" and d.stale is False for d in durations)
        chroma = session.exec(select(tables.FeatureVector).where(tables.FeatureVector.feature == "chroma")).all()
        assert len(chroma) == len(files["good"])
        assert all(len(c.vector) == 12 and math.isclose(sum(c.vector), 1, abs_tol=1e-3) for c in chroma)
        failed = session.exec(select(tables.FailedRun)).all()
        assert {f.path for f in failed} == {str(p) for p in files["broken"]}
        assert all(f.extractor == "probe" and f.attempts == 1 and f.host for f in failed)
        unit = session.get(tables.FeatureUnit, ("loudness_integrated", "loudness"))
        assert unit.unit == "LUFS" and unit.kind == "scalar"
        stat = session.get(tables.FeatureStat, "duration")
        assert stat.count == len(files["good"]) and stat.unit == "s"
        assert session.exec(select(tables.StaleResult)).all() == []
        assert session.exec(select(tables.Artifact)).all() == []
    # NullPool: the file is free again for a writer.
    with catalog.Database(path).write():
        pass
