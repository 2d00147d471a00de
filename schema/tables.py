"""SQLModel classes of the catalogue's tables and of its contract views, for typed access from
Python.

The tables and views themselves are made by the SQL in schema/migrations/ and schema/views/
(the single source of the DDL); these classes describe them, and muscat never creates
anything from them.
tests/test_schema.py checks every class against DuckDB's `DESCRIBE` of its table or view in a
catalogue muscat made: the same columns in the same order, each of the same DuckDB type (and,
for tables, nullability), with a Python annotation of the type the column's values have.
muscat's own commands use DuckDB directly and never import this module, so `muscat status`
stays fast.

    from sqlmodel import Session, select
    from schema.tables import Feature, File, engine_for
    with Session(engine_for("muscat.duckdb")) as session:
        print(session.exec(select(File).where(File.status == "missing")).all())
        print(session.exec(select(Feature).where(Feature.feature == "bpm")).all())

What duckdb_engine needs (see the design notes):
- `engine_for` uses `NullPool`: the default pool keeps the file locked after a session ends,
  and while it is locked no other process (the watcher writing) can open it.
- 64-bit columns are declared `BigInteger` (SQLModel makes a 32-bit INTEGER of an `int`:
  mtime_ns overflows it), unsigned ones with duckdb_engine's types; `float` columns `Double`
  (SQLModel makes a 32-bit FLOAT of them); times `TIMESTAMP` without a zone (SQLModel would
  declare TIMESTAMP WITH TIME ZONE): they come back naive and in UTC, as DuckDB gives them.
- Integer keys never autoincrement: SQLAlchemy would declare them SERIAL, which DuckDB lacks.
  The migrations number rows with sequences.
- Foreign keys are not declared (DuckDB reports false violations on update, upsert and
  cascading delete): muscat keeps the relationships, and catalog/integrity.py checks them
  (the tests run its checks after every kind of change, and `muscat doctor` on a catalogue).

The views have no keys in DuckDB. Each view class marks as its primary key the columns that
identify a row (SQLAlchemy needs one), and the view classes live in their own metadata: `SQLModel.metadata` holds the
tables only, so `create_all` never makes a table of a view. Vector features are FLOAT[]
(32-bit floats), as `feature_vector_values` stores them; `track_features` has a column per
declared feature, so it has no class: query it with SQL.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from duckdb_engine.datatypes import UBigInteger
from sqlalchemy import ARRAY, BigInteger, DateTime, Double, Float, Integer, String
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

# DuckDB's column types, as SQLAlchemy spells them through duckdb_engine.
TIMESTAMP = DateTime(timezone=False)  # UTC without a zone, as muscat stores every time


def pk(sa_type: Any = String) -> Any:
    """A primary-key column of the mapping; an integer one never autoincrements (no SERIAL)."""
    return Field(primary_key=True, sa_type=sa_type, sa_column_kwargs={"autoincrement": False})


def col(sa_type: Any, optional: bool = False) -> Any:
    """A column of a type SQLModel would not infer from the annotation."""
    return Field(default=None, sa_type=sa_type) if optional else Field(sa_type=sa_type)


def engine_for(db_path: str, read_only: bool = True):  # type: ignore[no-untyped-def]
    """A SQLAlchemy engine on the catalogue that releases the file after each session."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    return create_engine(
        f"duckdb:///{db_path}",
        connect_args={"read_only": read_only},
        poolclass=NullPool,  # the default pool keeps the file locked after a session ends
    )


# -- tables ----------------------------------------------------------------------------------


class SchemaVersion(SQLModel, table=True):
    __tablename__ = "schema_version"
    version: int = pk(Integer)
    applied_at: datetime = col(TIMESTAMP)
    muscat_version: Optional[str] = None


class CatalogMeta(SQLModel, table=True):
    __tablename__ = "catalog_meta"
    key: str = pk()
    value: Optional[str] = None


class Root(SQLModel, table=True):
    __tablename__ = "roots"
    root_id: int = pk(Integer)
    path: str
    added_at: datetime = col(TIMESTAMP)
    last_scan_at: Optional[datetime] = col(TIMESTAMP, optional=True)
    last_scan_status: Optional[str] = None


class File(SQLModel, table=True):
    __tablename__ = "files"
    file_id: int = pk(BigInteger)
    root_id: int
    dir: str
    name: str
    raw_path: Optional[bytes] = None
    size: int = col(UBigInteger)
    mtime_ns: int = col(BigInteger)
    dev: int = col(UBigInteger)
    inode: int = col(UBigInteger)
    head_tail_hash: Optional[str] = None
    audio_id: Optional[str] = None
    status: str
    codec: Optional[str] = None
    probed_at: Optional[datetime] = col(TIMESTAMP, optional=True)
    first_seen: datetime = col(TIMESTAMP)
    changed_at: datetime = col(TIMESTAMP)
    missing_since: Optional[datetime] = col(TIMESTAMP, optional=True)
    tags_read_at: Optional[datetime] = col(TIMESTAMP, optional=True)
    tags_error: Optional[str] = None
    artist: Optional[str] = None
    album: Optional[str] = None
    albumartist: Optional[str] = None
    title: Optional[str] = None
    genre: Optional[str] = None
    date: Optional[str] = None
    track_number: Optional[int] = None
    disc_number: Optional[int] = None


class FileTag(SQLModel, table=True):
    __tablename__ = "file_tags"
    file_id: int = pk(BigInteger)
    key: str = pk()
    ordinal: int = pk(Integer)
    value: str


class Dir(SQLModel, table=True):
    __tablename__ = "dirs"
    root_id: int = pk(Integer)
    dir: str = pk()
    fingerprint: int = col(BigInteger)
    files: int


class Audio(SQLModel, table=True):
    __tablename__ = "audio"
    audio_id: str = pk()
    duration_s: Optional[float] = col(Double, optional=True)
    sample_rate: Optional[int] = None
    channels: Optional[int] = None
    first_seen: datetime = col(TIMESTAMP)


class ScanProblem(SQLModel, table=True):
    __tablename__ = "scan_problems"
    root_id: int = pk(Integer)
    path: str = pk()
    reason: str
    seen_at: datetime = col(TIMESTAMP)


class ExtractorIdentity(SQLModel, table=True):
    __tablename__ = "extractor_identities"
    extractor: str = pk()
    version: int = pk(Integer)
    params_hash: str = pk()
    params: str
    weights: Optional[str] = None
    first_used: datetime = col(TIMESTAMP)


class ExtractorCurrent(SQLModel, table=True):
    __tablename__ = "extractor_current"
    extractor: str = pk()
    version: int
    params_hash: str
    device: str
    scope: str
    enabled: bool
    available: bool
    reason: Optional[str] = None
    uses: list[str] = col(ARRAY(String))
    updated_at: datetime = col(TIMESTAMP)


class ExtractorOutput(SQLModel, table=True):
    __tablename__ = "extractor_outputs"
    extractor: str = pk()
    feature: str = pk()
    kind: str
    unit: str
    min: Optional[float] = col(Double, optional=True)
    max: Optional[float] = col(Double, optional=True)
    size: Optional[int] = None
    labels: Optional[list[str]] = col(ARRAY(String), optional=True)
    description: str
    position: int


class Run(SQLModel, table=True):
    __tablename__ = "runs"
    run_id: int = pk(BigInteger)
    audio_id: Optional[str] = None
    file_id: Optional[int] = col(BigInteger, optional=True)
    extractor: str
    version: int
    params_hash: str
    input: Optional[str] = None
    status: str
    attempts: int
    error: Optional[str] = None
    started_at: datetime = col(TIMESTAMP)
    finished_at: datetime = col(TIMESTAMP)
    seconds: float = col(Double)
    audio_seconds: Optional[float] = col(Double, optional=True)
    device: str
    host: str


class FeatureValue(SQLModel, table=True):
    __tablename__ = "feature_values"
    run_id: int = pk(BigInteger)
    feature: str = pk()
    value: Optional[float] = col(Double, optional=True)
    text: Optional[str] = None


class FeatureVectorValue(SQLModel, table=True):
    __tablename__ = "feature_vector_values"
    run_id: int = pk(BigInteger)
    feature: str = pk()
    vector: list[float] = col(ARRAY(Float))


class RunArtifact(SQLModel, table=True):
    __tablename__ = "run_artifacts"
    run_id: int = pk(BigInteger)
    kind: str = pk()
    format: str
    path: str
    bytes: int = col(BigInteger)


class SplitDefinition(SQLModel, table=True):
    __tablename__ = "split_definitions"
    name: str = pk()
    by_key: str
    seed: int = col(BigInteger)
    ratios: list[float] = col(ARRAY(Double))
    names: list[str] = col(ARRAY(String))
    created_at: datetime = col(TIMESTAMP)
    updated_at: datetime = col(TIMESTAMP)


class SplitFile(SQLModel, table=True):
    __tablename__ = "split_files"
    name: str = pk()
    file_id: int = pk(BigInteger)
    split: str
    group_key: str


# -- contract views (schema/views/*.sql; their comments say what each row is) -----------------


class ContractView(SQLModel, registry=registry()):
    """Base of the view classes: their own metadata, apart from the tables'."""


class LibraryFile(ContractView, table=True):
    """`library`: one row per present file."""

    __tablename__ = "library"
    path: str  # absolute
    root: str
    audio_id: Optional[str] = None  # NULL until probed
    size: int = col(UBigInteger)
    mtime: datetime = col(TIMESTAMP)  # UTC
    duration_s: Optional[float] = col(Double, optional=True)
    sample_rate: Optional[int] = None
    channels: Optional[int] = None
    codec: Optional[str] = None
    artist: Optional[str] = None
    album: Optional[str] = None
    albumartist: Optional[str] = None
    title: Optional[str] = None
    genre: Optional[str] = None
    date: Optional[str] = None
    track_number: Optional[int] = None
    disc_number: Optional[int] = None
    file_id: int = pk(BigInteger)


class Tag(ContractView, table=True):
    """`tags`: every tag value of every present file."""

    __tablename__ = "tags"
    path: str
    audio_id: Optional[str] = None
    key: str = pk()
    value: str
    ordinal: int = pk(Integer)
    file_id: int = pk(BigInteger)


class Feature(ContractView, table=True):
    """`features`: one row per present file x scalar or categorical feature."""

    __tablename__ = "features"
    path: str = pk()
    audio_id: Optional[str] = None
    extractor: str = pk()
    version: int
    feature: str = pk()
    value: Optional[float] = col(Double, optional=True)  # numbers
    text: Optional[str] = None  # categorical values (key, scale, codec)
    unit: Optional[str] = None
    stale: bool


class FeatureVector(ContractView, table=True):
    """`feature_vectors`: one row per present file x vector feature."""

    __tablename__ = "feature_vectors"
    path: str = pk()
    audio_id: Optional[str] = None
    extractor: str = pk()
    version: int
    feature: str = pk()
    vector: list[float] = col(ARRAY(Float))
    stale: bool


class FeatureUnit(ContractView, table=True):
    """`feature_units`: every declared output with its unit and normal range."""

    __tablename__ = "feature_units"
    feature: str = pk()
    extractor: str = pk()
    unit: str
    min: Optional[float] = col(Double, optional=True)
    max: Optional[float] = col(Double, optional=True)
    description: str
    kind: str  # scalar, categorical or vector
    size: Optional[int] = None  # vectors of a fixed length


class FeatureStat(ContractView, table=True):
    """`feature_stats`: one row per scalar feature and per element of each fixed-size vector."""

    __tablename__ = "feature_stats"
    feature: str = pk()  # feature names are unique across extractors
    unit: str
    count: int = col(BigInteger)
    mean: Optional[float] = col(Double, optional=True)
    std: Optional[float] = col(Double, optional=True)
    min: Optional[float] = col(Double, optional=True)
    max: Optional[float] = col(Double, optional=True)


class PendingJob(ContractView, table=True):
    """`pending`: work that has never run (files to probe, then extractors per audio)."""

    __tablename__ = "pending"
    audio_id: Optional[str] = None
    path: str = pk()
    extractor: str = pk()


class StaleResult(ContractView, table=True):
    """`stale`: results shown from an older identity or input, with the reason."""

    __tablename__ = "stale"
    audio_id: Optional[str] = None
    path: str = pk()
    extractor: str = pk()
    version: int
    current_version: int
    reason: str  # version, params, weights or input


class FailedRun(ContractView, table=True):
    """`failed`: failed runs of the current identities, per present file."""

    __tablename__ = "failed"
    path: str = pk()
    audio_id: Optional[str] = None
    extractor: str = pk()
    version: int
    error: Optional[str] = None
    attempts: int
    host: str  # where it ran


class Artifact(ContractView, table=True):
    """`artifacts`: files produced for present audio (stems, MIDI)."""

    __tablename__ = "artifacts"
    path: str = pk()  # the library file
    audio_id: Optional[str] = None
    extractor: str = pk()
    version: int
    kind: str = pk()
    format: str
    bytes: int = col(BigInteger)
    artifact: str  # the produced file
    stale: bool


class Split(ContractView, table=True):
    """`splits`: the part of each present file in each named split (`muscat split`)."""

    __tablename__ = "splits"
    name: str = pk()
    path: str
    audio_id: Optional[str] = None
    split: str
    group_key: str
    file_id: int = pk(BigInteger)


VIEWS: tuple[type[ContractView], ...] = (
    LibraryFile, Tag, Feature, FeatureVector, FeatureUnit, FeatureStat, PendingJob, StaleResult,
    FailedRun, Artifact, Split,
)
