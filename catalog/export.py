"""From catalogue to dataset file: `muscat export`.

One row per present file: path, audio_id, the tag columns of `library`, the file's part in the
split named 'default' (when a split was made), then a column per declared feature — scalars as
DOUBLE, categorical values (key, scale, codec) as text, vectors as lists (fixed-size ones keep
their length). Values are current results only: a value of an older extractor identity is NULL
unless `include_stale`, which exports it and names it in the row's `stale_features` list.

Rows stream: DuckDB hands Arrow record batches of the query to pyarrow's writers (Parquet,
CSV), or to a line writer (JSON Lines), so memory stays at a few batches whatever the size.
Each feature's unit, description, extractor, kind and normal range go into its Parquet field's
metadata (and the schema's `muscat` key holds them all as JSON), or into `features.json` beside a
CSV or JSONL file. `hf` writes a folder Hugging Face `datasets` loads with
`load_dataset("audiofolder", data_dir=OUT)`: per split a folder with the audio (linked or
copied) and a `metadata.parquet` whose `file_name` points at it (and `<stem>_file_name` at each
Demucs stem with `stems`); with the audio left out, `load_dataset("parquet", data_dir=OUT)`.

A Parquet, CSV or JSONL file is written under a temporary name beside OUT and renamed when
whole; an hf folder is filled in place (it must be new or empty).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .errors import UsageError

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from .config import Settings
    from .database import Database

FORMATS = ("parquet", "csv", "jsonl", "hf")
AUDIO_MODES = ("link", "copy", "none")
TAG_COLUMNS = ("artist", "album", "albumartist", "title", "genre", "date", "track_number", "disc_number")
BATCH_ROWS = 65536  # rows per Arrow batch and per Parquet row group (small groups write slowly)
SPLIT_NAME = "default"


@dataclass(frozen=True)
class FeatureColumn:
    """A declared feature of a configured extractor, as a column of an export."""

    name: str
    extractor: str
    kind: str  # scalar | categorical | vector
    unit: str
    min: float | None
    max: float | None
    description: str
    size: int | None
    labels: list[str] | None

    def metadata(self) -> dict[str, str]:
        """Parquet field metadata (strings only)."""
        meta = {"unit": self.unit, "description": self.description, "extractor": self.extractor,
                "kind": self.kind}
        if self.min is not None:
            meta["min"] = repr(self.min)
        if self.max is not None:
            meta["max"] = repr(self.max)
        if self.labels:
            meta["labels"] = json.dumps(self.labels)
        return meta


def feature_columns(db: Database, settings: Settings | None = None,
                    kinds: tuple[str, ...] = ("scalar", "categorical", "vector")) -> list[FeatureColumn]:
    """The features of the configured extractors, in declaration order, with their units and
    ranges (`kinds=("scalar",)`: the numeric ones, e.g. to plot or standardise)."""
    if settings is not None:
        from .extractor_state import sync_extractors

        sync_extractors(db, settings)
    with db.read() as con:
        return _columns(con, kinds)


def _columns(con: duckdb.DuckDBPyConnection, kinds: tuple[str, ...]) -> list[FeatureColumn]:
    rows = con.execute(
        """
        SELECT o.feature, o.extractor, o.kind, o.unit, o.min, o.max, o.description, o.size, o.labels
        FROM extractor_outputs o JOIN extractor_current c USING (extractor)
        WHERE list_contains(?, o.kind)
        ORDER BY c.extractor <> 'probe', c.extractor, o.position
        """,
        [list(kinds)],
    ).fetchall()
    return [FeatureColumn(*row) for row in rows]


def column_names(features: list[FeatureColumn]) -> list[str]:
    """Each feature's column: its name, or `extractor__name` where two extractors declare it."""
    from collections import Counter

    counts = Counter(f.name for f in features)
    return [f.name if counts[f.name] == 1 else f"{f.extractor}__{f.name}" for f in features]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass
class ExportReport:
    """What `muscat export` wrote."""

    out: str
    format: str
    rows: int
    columns: list[str]
    features: int
    audio_files: int = 0  # hf: audio (and stems) linked or copied
    unsplit: int = 0  # hf: rows with no part in the default split

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def build_query(con: duckdb.DuckDBPyConnection, features: list[FeatureColumn], include_stale: bool,
                where: str | None, stems: list[str], for_text: bool, with_root: bool = False) -> tuple[str, list[str]]:
    """The export's SELECT and its column names. `for_text`: vectors and lists as JSON text (CSV);
    `with_root`: the file's root too (hf places files under it)."""
    has_split = con.execute("SELECT count(*) FROM split_files WHERE name = ?", [SPLIT_NAME]).fetchone()[0] > 0
    current = "" if include_stale else " AND NOT stale"
    scalar_items, vector_items, outer = [], [], []
    labels = column_names(features)
    for f, label in zip(features, labels):
        condition = f"FILTER (WHERE extractor = {_literal(f.extractor)} AND feature = {_literal(f.name)}{current})"
        alias = _quote(f"{f.extractor}.{f.name}")
        if f.kind == "vector":
            cast = f"::FLOAT[{f.size}]" if f.size else ""
            vector_items.append(f"any_value(vector) {condition}{cast} AS {alias}")
            source = f"vecs.{alias}"
        else:
            scalar_items.append(f"any_value({'value' if f.kind == 'scalar' else 'text'}) {condition} AS {alias}")
            source = f"vals.{alias}"
        outer.append(f"{f'to_json({source})::VARCHAR' if for_text and f.kind == 'vector' else source} AS {_quote(label)}")
    names = set(labels)
    columns = ["path", "audio_id"] + [c for c in TAG_COLUMNS if c not in names]
    select = [f"l.{c}" for c in columns]
    if has_split and "split" not in names:
        columns.append("split")
        select.append("s.split")
    select += outer
    columns += labels
    if include_stale:
        stale = ("list_sort(list_distinct(list_concat(coalesce(vals.stale_features, []), "
                 "coalesce(vecs.stale_features, []))))")
        select.append(f"{f'array_to_string({stale}, {_literal(chr(44))})' if for_text else stale} AS stale_features")
        columns.append("stale_features")
        scalar_items.append("list(feature) FILTER (WHERE stale) AS stale_features")
        vector_items.append("list(feature) FILTER (WHERE stale) AS stale_features")
    stem_joins = ""
    if stems:
        items = ", ".join(f"any_value(artifact) FILTER (WHERE kind = {_literal('stem:' + k)}) AS {_quote('stem_' + k)}"
                          for k in stems)
        stem_joins = (f"LEFT JOIN (SELECT path, {items} FROM artifacts WHERE NOT stale GROUP BY path) AS st "
                      "USING (path)")
        select += [f"st.{_quote('stem_' + k)}" for k in stems]
        columns += [f"stem_{k}" for k in stems]
    if with_root:
        select.append("l.root")
        columns.append("root")

    def sub(items: list[str], source: str) -> str:
        listing = "".join(f", {item}" for item in items)
        return f"(SELECT path{listing} FROM {source} GROUP BY path)"

    split_join = (f"LEFT JOIN (SELECT file_id, split FROM splits WHERE name = {_literal(SPLIT_NAME)}) AS s "
                  "USING (file_id)" if has_split else "")
    inner = (f"SELECT {', '.join(select)} FROM library l {split_join} "
             f"LEFT JOIN {sub(scalar_items, 'features')} AS vals USING (path) "
             f"LEFT JOIN {sub(vector_items, 'feature_vectors')} AS vecs USING (path) {stem_joins}")
    sql = f"SELECT * FROM ({inner}) AS export"
    if where:
        sql += f" WHERE ({where})"
    return sql + " ORDER BY path", columns


def _check_where(con: duckdb.DuckDBPyConnection, sql: str, where: str | None) -> None:
    """Bind the query without running it (DESCRIBE), or a UsageError naming --where and DuckDB's
    reason; one statement, read-only, as `muscat sql` checks them."""
    import duckdb

    from .query import check_read_only

    try:
        if len(duckdb.extract_statements(sql)) != 1:
            raise UsageError(f"--where must be one condition, not statements ({where!r})")
        check_read_only(sql)
        con.execute(f"DESCRIBE {sql}").fetchall()
    except UsageError:
        raise
    except Exception as exc:  # DuckDB's parser and binder errors, and muscat sql's read-only check
        reason = str(exc).splitlines()[0]
        raise UsageError(f"--where {where!r}: {reason}") from None


def export(db: Database, settings: Settings | None, out: str | Path, fmt: str = "parquet", *,
           where: str | None = None, features: list[str] | None = None, include_stale: bool = False,
           audio: str = "link", stems: bool = False,
           progress: Callable[[int, int], None] | None = None) -> ExportReport:
    """Export one row per present file (see the module's docstring) to `out`."""
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if audio not in AUDIO_MODES:
        raise UsageError(f"--audio must be one of {', '.join(AUDIO_MODES)}, not {audio!r}")
    if stems and fmt != "hf":
        raise UsageError("--stems is for --format hf (the other formats have no audio files)")
    out = Path(out).expanduser().absolute()
    if fmt == "hf":
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UsageError(f"{out}: the hf folder must be new or empty")
    elif out.is_dir():
        raise UsageError(f"{out} is a folder: --format {fmt} writes a file (a folder is for --format hf)")
    elif not out.parent.is_dir():
        raise UsageError(f"{out.parent}: no such folder to write {out.name} in")
    if settings is not None:
        from .extractor_state import sync_extractors

        sync_extractors(db, settings)
    with db.read() as con:
        known = _columns(con, ("scalar", "categorical", "vector"))
        chosen = _choose(known, features)
        stem_kinds = [k for (k,) in con.execute(
            "SELECT DISTINCT substr(kind, 6) FROM artifacts WHERE kind LIKE 'stem:%' AND NOT stale ORDER BY 1"
        ).fetchall()] if stems else []
        sql, columns = build_query(con, chosen, include_stale, where, stem_kinds, for_text=fmt == "csv",
                                   with_root=fmt == "hf")
        _check_where(con, sql, where)
        # The progress bar's total: counting rows under a condition would run the export twice.
        total = 0 if where else con.execute("SELECT count(*) FROM library").fetchone()[0]
        roots = [path for (path,) in con.execute("SELECT path FROM roots").fetchall()]
        # Nothing else may run on `con` while the reader streams (it would cut the stream).
        reader = con.sql(sql).to_arrow_reader(BATCH_ROWS)
        report = ExportReport(out=str(out), format=fmt, rows=0, columns=columns, features=len(chosen))
        by_name = dict(zip(column_names(chosen), chosen))
        if fmt == "hf":
            _write_hf(reader, out, by_name, audio, stem_kinds, _root_names(roots), include_stale, report, total,
                      progress)
        else:
            _write_file(reader, out, fmt, by_name, include_stale, report, total, progress)
    return report


def _choose(known: list[FeatureColumn], names: list[str] | None) -> list[FeatureColumn]:
    if not names:
        return known
    import difflib

    by_name: dict[str, FeatureColumn] = {}
    for f in known:
        by_name.setdefault(f.name, f)
    chosen = []
    for name in names:
        if name not in by_name:
            near = difflib.get_close_matches(name, list(by_name), n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise UsageError(f"--features: no feature named {name!r}{hint}; `muscat sql \"FROM feature_units\"` "
                             "lists them")
        if by_name[name] not in chosen:
            chosen.append(by_name[name])
    return chosen


def _schema(schema: pa.Schema, features: dict[str, FeatureColumn], include_stale: bool) -> pa.Schema:
    """The batches' schema with each feature's unit and description on its field."""
    import pyarrow as pa

    fields = []
    for field in schema:
        if field.name in features:
            field = field.with_metadata(features[field.name].metadata())
        elif field.name == "stale_features":
            field = field.with_metadata({"description": "features whose value in this row is from an older "
                                                        "extractor version or parameters (muscat reindex)"})
        fields.append(field)
    meta = {"muscat": json.dumps({"features": [asdict(f) for f in features.values()],
                                  "include_stale": include_stale})}
    return pa.schema(fields, metadata=meta)


def _features_json(features: dict[str, FeatureColumn], columns: list[str], include_stale: bool) -> str:
    return json.dumps({"columns": columns, "include_stale": include_stale,
                       "features": {name: asdict(f) for name, f in features.items()}}, indent=2,
                      ensure_ascii=False) + "\n"


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _write_file(reader: pa.RecordBatchReader, out: Path, fmt: str, features: dict[str, FeatureColumn],
                include_stale: bool, report: ExportReport, total: int,
                progress: Callable[[int, int], None] | None) -> None:
    import pyarrow as pa

    schema = _schema(reader.schema, features, include_stale)
    temporary = _temporary(out)
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            # Dictionary pages only for text: measured features rarely repeat, and trying them
            # cost more than half the writing time (bench/export.py).
            writer = pq.ParquetWriter(temporary, schema, compression="zstd", use_dictionary=_text_columns(schema))
            write = writer.write_batch
        elif fmt == "csv":
            import pyarrow.csv as pacsv

            writer = pacsv.CSVWriter(temporary, schema)
            write = writer.write_batch
        else:
            writer = open(temporary, "w", encoding="utf-8")

            def write(batch: pa.RecordBatch) -> None:
                writer.write("".join(json.dumps(_finite_row(row), ensure_ascii=False, default=str) + "\n"
                                     for row in batch.to_pylist()))
        try:
            if progress:
                progress(0, total)
            for batch in reader:
                write(pa.RecordBatch.from_arrays(batch.columns, schema=schema))
                report.rows += batch.num_rows
                if progress:
                    progress(report.rows, total)
        finally:
            writer.close()
        if fmt != "parquet":
            sidecar = out.with_name("features.json")
            sidecar_tmp = _temporary(sidecar)
            sidecar_tmp.write_text(_features_json(features, report.columns, include_stale), encoding="utf-8")
            os.replace(sidecar_tmp, sidecar)
        os.replace(temporary, out)
    finally:
        if temporary.exists():
            temporary.unlink()


def _text_columns(schema: pa.Schema) -> list[str]:
    import pyarrow as pa

    return [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]


def _finite_row(row: dict[str, Any]) -> dict[str, Any]:
    """NaN and infinities are not JSON: null."""
    import math

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return {k: clean(v) for k, v in row.items()}


def _root_names(roots: list[str]) -> dict[str, str]:
    """Each root -> a folder name for it in an hf export (its own name; numbered when two match)."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    for root in sorted(roots):
        base = os.path.basename(root.rstrip("/")) or "root"
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}-{n}"
        taken.add(name)
        names[root] = name
    return names


def _place(source: str, target: Path, mode: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if mode == "copy":
        shutil.copy2(source, target)
    else:
        os.symlink(source, target)


def _write_hf(reader: pa.RecordBatchReader, out: Path, features: dict[str, FeatureColumn], audio: str,
              stems: list[str], root_names: dict[str, str], include_stale: bool, report: ExportReport, total: int,
              progress: Callable[[int, int], None] | None) -> None:
    """Per split (train, validation, test; `unsplit` for files the split has not placed, or
    `train` when there is no split) a folder of audio and its metadata.parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    base = reader.schema
    has_split = "split" in base.names
    stem_columns = [f"stem_{k}" for k in stems]
    keep = [f for f in base if f.name not in stem_columns and f.name != "root"]
    file_fields = [pa.field("file_name", pa.string())] if audio != "none" else []
    file_fields += [pa.field(f"{k}_file_name", pa.string()) for k in stems]
    schema = _schema(pa.schema(file_fields + keep), features, include_stale)
    writers: dict[str, Any] = {}
    out.mkdir(parents=True, exist_ok=True)
    try:
        if progress:
            progress(0, total)
        for batch in reader:
            rows = batch.to_pydict()
            parts: dict[str, list[int]] = {}
            for i in range(batch.num_rows):
                part = (rows["split"][i] or "unsplit") if has_split else "train"
                parts.setdefault(part, []).append(i)
            for part, indices in parts.items():
                folder = out / part
                names: dict[str, list[str | None]] = {"file_name": []} if audio != "none" else {}
                names.update({f"{k}_file_name": [] for k in stems})
                for i in indices:
                    path = rows["path"][i]
                    root = rows["root"][i]
                    relative = f"{root_names[root]}/{path[len(root) + 1:]}"
                    if audio != "none":
                        _place(path, folder / relative, audio)
                        names["file_name"].append(relative)
                        report.audio_files += 1
                    for k in stems:
                        stem = rows[f"stem_{k}"][i]
                        if stem is None or audio == "none":
                            names[f"{k}_file_name"].append(None)
                            continue
                        target = f"stems/{relative}/{k}{os.path.splitext(stem)[1]}"
                        _place(stem, folder / target, audio)
                        names[f"{k}_file_name"].append(target)
                        report.audio_files += 1
                taken = batch.take(pa.array(indices))
                arrays = [pa.array(names[f.name], pa.string()) for f in file_fields] + \
                         [taken.column(f.name) for f in keep]
                if part not in writers:
                    folder.mkdir(parents=True, exist_ok=True)
                    writers[part] = pq.ParquetWriter(folder / "metadata.parquet", schema, compression="zstd",
                                                     use_dictionary=_text_columns(schema))
                writers[part].write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
                if part == "unsplit":
                    report.unsplit += len(indices)
            report.rows += batch.num_rows
            if progress:
                progress(report.rows, total)
    finally:
        for writer in writers.values():
            writer.close()
