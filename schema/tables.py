"""SQLModel classes for the catalogue's tables, for typed access from Python.

The tables themselves are created by the SQL migrations in schema/migrations/ (the single
source of the DDL); tests/test_schema.py checks that these classes match them. muscat's own
commands use DuckDB directly and never import this module, so `muscat status` stays fast.

    from sqlmodel import Session, select
    from schema.tables import File, engine_for
    with Session(engine_for("muscat.duckdb")) as session:
        print(session.exec(select(File).where(File.status == "missing")).all())

Foreign keys are not declared (DuckDB reports false violations on update): relationships are
kept by muscat and checked by catalog/integrity.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Optional

from sqlalchemy import ARRAY, BigInteger, Column, Float, Integer, LargeBinary, String
from sqlmodel import Field, SQLModel


class SchemaVersion(SQLModel, table=True):
    __tablename__ = "schema_version"
    version: int = Field(sa_column=Column(Integer, primary_key=True))
    applied_at: datetime
    muscat_version: Optional[str] = None


class CatalogMeta(SQLModel, table=True):
    __tablename__ = "catalog_meta"
    key: str = Field(primary_key=True)
    value: Optional[str] = None


class Root(SQLModel, table=True):
    __tablename__ = "roots"
    root_id: int = Field(sa_column=Column(Integer, primary_key=True))
    path: str
    added_at: datetime
    last_scan_at: Optional[datetime] = None
    last_scan_status: Optional[str] = None


class File(SQLModel, table=True):
    __tablename__ = "files"
    file_id: int = Field(sa_column=Column(BigInteger, primary_key=True))
    root_id: int = Field(sa_column=Column(Integer, nullable=False))
    dir: str
    name: str
    raw_path: Optional[bytes] = Field(default=None, sa_column=Column(LargeBinary))
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    mtime_ns: int = Field(sa_column=Column(BigInteger, nullable=False))
    dev: int = Field(sa_column=Column(BigInteger, nullable=False))
    inode: int = Field(sa_column=Column(BigInteger, nullable=False))
    head_tail_hash: Optional[str] = None
    audio_id: Optional[str] = None
    status: str
    codec: Optional[str] = None
    probed_at: Optional[datetime] = None
    first_seen: datetime
    changed_at: datetime
    missing_since: Optional[datetime] = None
    tags_read_at: Optional[datetime] = None
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
    file_id: int = Field(sa_column=Column(BigInteger, primary_key=True))
    key: str = Field(primary_key=True)
    ordinal: int = Field(sa_column=Column(Integer, primary_key=True))
    value: str


class Dir(SQLModel, table=True):
    __tablename__ = "dirs"
    root_id: int = Field(sa_column=Column(Integer, primary_key=True))
    dir: str = Field(primary_key=True)
    fingerprint: int = Field(sa_column=Column(BigInteger, nullable=False))
    files: int


class Audio(SQLModel, table=True):
    __tablename__ = "audio"
    audio_id: str = Field(primary_key=True)
    duration_s: Optional[float] = None
    sample_rate: Optional[int] = None
    channels: Optional[int] = None
    first_seen: datetime


class ScanProblem(SQLModel, table=True):
    __tablename__ = "scan_problems"
    root_id: int = Field(sa_column=Column(Integer, primary_key=True))
    path: str = Field(primary_key=True)
    reason: str
    seen_at: datetime


def engine_for(db_path: str, read_only: bool = True):  # type: ignore[no-untyped-def]
    """A SQLAlchemy engine on the catalogue that releases the file after each session."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    return create_engine(
        f"duckdb:///{db_path}",
        connect_args={"read_only": read_only},
        poolclass=NullPool,  # the default pool keeps the file locked after a session ends
    )


class ExtractorIdentity(SQLModel, table=True):
    __tablename__ = "extractor_identities"
    extractor: str = Field(primary_key=True)
    version: int = Field(primary_key=True)
    params_hash: str = Field(primary_key=True)
    params: str
    weights: Optional[str] = None
    first_used: datetime


class ExtractorCurrent(SQLModel, table=True):
    __tablename__ = "extractor_current"
    extractor: str = Field(primary_key=True)
    version: int
    params_hash: str
    device: str
    scope: str
    enabled: bool
    available: bool
    reason: Optional[str] = None
    uses: list[str] = Field(sa_column=Column(ARRAY(String), nullable=False))
    updated_at: datetime


class ExtractorOutput(SQLModel, table=True):
    __tablename__ = "extractor_outputs"
    extractor: str = Field(primary_key=True)
    feature: str = Field(primary_key=True)
    kind: str
    unit: str
    min: Optional[float] = None
    max: Optional[float] = None
    size: Optional[int] = None
    labels: Optional[list[str]] = Field(default=None, sa_column=Column(ARRAY(String)))
    description: str
    position: int


class Run(SQLModel, table=True):
    __tablename__ = "runs"
    run_id: int = Field(sa_column=Column(BigInteger, primary_key=True))
    audio_id: Optional[str] = None
    file_id: Optional[int] = Field(default=None, sa_column=Column(BigInteger))
    extractor: str
    version: int
    params_hash: str
    input: Optional[str] = None
    status: str
    attempts: int
    error: Optional[str] = None
    started_at: datetime
    finished_at: datetime
    seconds: float
    audio_seconds: Optional[float] = None
    device: str
    host: str


class FeatureValue(SQLModel, table=True):
    __tablename__ = "feature_values"
    run_id: int = Field(sa_column=Column(BigInteger, primary_key=True))
    feature: str = Field(primary_key=True)
    value: Optional[float] = None
    text: Optional[str] = None


class FeatureVectorValue(SQLModel, table=True):
    __tablename__ = "feature_vector_values"
    run_id: int = Field(sa_column=Column(BigInteger, primary_key=True))
    feature: str = Field(primary_key=True)
    vector: list[float] = Field(sa_column=Column(ARRAY(Float), nullable=False))


class RunArtifact(SQLModel, table=True):
    __tablename__ = "run_artifacts"
    run_id: int = Field(sa_column=Column(BigInteger, primary_key=True))
    kind: str = Field(primary_key=True)
    format: str
    path: str
    bytes: int = Field(sa_column=Column(BigInteger, nullable=False))
