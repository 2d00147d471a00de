"""Export speed: muscat's streamed Parquet writer (DuckDB -> Arrow record batches -> pyarrow's
ParquetWriter, with each feature's unit and description in its field metadata) against DuckDB's
own `COPY (SELECT ...) TO 'x.parquet'` of the same table, in the same run; and peak memory of each.

A table of ROWS rows x FEATURES DOUBLE columns (plus path and audio_id) is made in a DuckDB
file; both sides read it through the same SELECT and write zstd Parquet. This measures the
writing path of `muscat export` (catalog/export.py `_write_file`); the catalogue's pivot of
`features` into columns is the same query for both and is not in the figure.

    uv run python bench/export.py [ROWS] [FEATURES]
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import sys, time, resource
sys.path.insert(0, {repo!r})
import duckdb
mode, db, out, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
con = duckdb.connect(db, read_only=True)
con.execute("SET enable_progress_bar = false")
started = time.perf_counter()
if mode == "copy":
    con.execute(f"COPY (SELECT * FROM t ORDER BY path) TO '{{out}}' (FORMAT parquet, COMPRESSION zstd)")
else:
    from catalog.export import FeatureColumn, ExportReport, _write_file, BATCH_ROWS
    features = {{f"f{{i}}": FeatureColumn(f"f{{i}}", "bench", "scalar", "dB", 0.0, 1.0, "a feature", None, None)
                for i in range(n)}}
    reader = con.sql("SELECT * FROM t ORDER BY path").to_arrow_reader(BATCH_ROWS)
    report = ExportReport(out=out, format="parquet", rows=0, columns=[], features=n)
    _write_file(reader, __import__("pathlib").Path(out), "parquet", features, False, report, 0, None)
print(time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def run(mode: str, db: str, out: str, features: int) -> tuple[float, int]:
    code = CHILD.format(repo=str(REPO))
    done = subprocess.run([sys.executable, "-c", code, mode, db, out, str(features)], capture_output=True,
                          text=True, check=True)
    seconds, rss = done.stdout.split()
    return float(seconds), int(rss) * 1024


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    features = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    import duckdb

    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "bench.duckdb")
        with duckdb.connect(db) as con:
            columns = ", ".join(f"random() * {i + 1} AS f{i}" for i in range(features))
            con.execute(f"CREATE TABLE t AS SELECT '/music/' || i || '.flac' AS path, md5(i::VARCHAR) AS audio_id, "
                        f"{columns} FROM range({rows}) r(i)")
        results = {}
        for mode in ("copy", "muscat", "copy", "muscat", "copy", "muscat"):  # interleaved; best of 3
            seconds, rss = run(mode, db, os.path.join(tmp, f"{mode}.parquet"), features)
            best = results.get(mode)
            results[mode] = (min(seconds, best[0]) if best else seconds, max(rss, best[1]) if best else rss)
        import pyarrow.parquet as pq

        table = pq.read_table(os.path.join(tmp, "muscat.parquet"))
        assert table.num_rows == rows and table.schema.field("f0").metadata[b"unit"] == b"dB"
    copy, ours = results["copy"], results["muscat"]
    print(f"{rows:,} rows x {features} features -> Parquet (zstd), best of 3, load {os.getloadavg()[0]:.1f}")
    print(f"  DuckDB COPY ... TO   {copy[0]:6.2f} s   peak {copy[1] / 2**20:6.0f} MiB")
    print(f"  muscat export writer {ours[0]:6.2f} s   peak {ours[1] / 2**20:6.0f} MiB   {ours[0] / copy[0]:.2f}x COPY "
          f"(target <= 1.5x)")


if __name__ == "__main__":
    main()
