"""Export speed: `muscat export` to Parquet (catalog/export.py: the export query streamed from
DuckDB as Arrow record batches into pyarrow's ParquetWriter, units in the field metadata)
against DuckDB's own `COPY (SELECT ...) TO 'x.parquet'` of the same SELECT on the same
catalogue, in the same run; and the peak memory of each (each runs in its own process).

The catalogue is made directly in its tables: ROWS present files, each with its audio and one ok
run of an extractor `bench` that declares FEATURES scalar outputs (ROWS x FEATURES rows of
feature_values), so both sides pay the same pivot of `features` into columns.

    uv run python bench/export.py [ROWS] [FEATURES] [REPEATS]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import sys, time, resource
sys.path.insert(0, {repo!r})
import catalog
from catalog.export import _columns, build_query, export
mode, path, out = sys.argv[1], sys.argv[2], sys.argv[3]
db = catalog.Database(path)
started = time.perf_counter()
if mode == "copy":
    with db.read() as con:
        sql, _ = build_query(con, _columns(con, ("scalar", "categorical", "vector")), False, None, [], False)
        con.execute(f"COPY ({{sql}}) TO '{{out}}' (FORMAT parquet, COMPRESSION zstd)")
else:
    export(db, None, out, "parquet")
print(time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def build(path: str, rows: int, features: int) -> None:
    sys.path.insert(0, str(REPO))
    import catalog

    with catalog.Database(path).write() as con:
        con.execute("INSERT INTO roots VALUES (1, '/music', now(), now(), 'ok')")
        con.execute(f"""
            INSERT INTO files BY NAME
            SELECT i AS file_id, 1 AS root_id, 'a' || (i // 1000) AS dir, i || '.flac' AS name, 1000000 AS size,
                   0 AS mtime_ns, 1 AS dev, i AS inode, md5(i::VARCHAR) AS audio_id, 'present' AS status,
                   'flac' AS codec, now() AS probed_at, now() AS first_seen, now() AS changed_at,
                   now() AS tags_read_at, 'artist ' || (i % 300) AS artist, 'album ' || (i % 3000) AS album,
                   'track ' || i AS title, (i % 12) AS track_number
            FROM range({rows}) r(i)""")
        con.execute(f"INSERT INTO audio BY NAME SELECT md5(i::VARCHAR) AS audio_id, 180.0 AS duration_s, "
                    f"44100 AS sample_rate, 2 AS channels, now() AS first_seen FROM range({rows}) r(i)")
        con.execute("INSERT INTO extractor_current VALUES ('bench', 1, 'h', 'cpu', 'audio', true, true, NULL, [], now())")
        con.execute(f"INSERT INTO extractor_outputs SELECT 'bench', 'f' || j, 'scalar', 'dB', 0, 1, NULL, NULL, "
                    f"'feature ' || j, j FROM range({features}) r(j)")
        con.execute(f"""
            INSERT INTO runs BY NAME
            SELECT i AS run_id, md5(i::VARCHAR) AS audio_id, i AS file_id, 'bench' AS extractor, 1 AS version,
                   'h' AS params_hash, 'mix' AS input, 'ok' AS status, 1 AS attempts, now() AS started_at,
                   now() AS finished_at, 0.1 AS seconds, 180.0 AS audio_seconds, 'cpu' AS device, 'bench' AS host
            FROM range({rows}) r(i)""")
        con.execute(f"INSERT INTO feature_values SELECT i, 'f' || j, random() * (j + 1), NULL "
                    f"FROM range({rows}) r(i), range({features}) s(j)")
    # The extractors' digest is left unset on purpose: the children pass no settings, so nothing
    # replaces the `bench` extractor with the configured ones.


def run(mode: str, path: str, out: str) -> tuple[float, int]:
    done = subprocess.run([sys.executable, "-c", CHILD.format(repo=str(REPO)), mode, path, out],
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(done.stderr)
    seconds, rss = done.stdout.split()
    return float(seconds), int(rss) * 1024


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    features = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.duckdb")
        build(path, rows, features)
        results: dict[str, tuple[float, int]] = {}
        for mode in ("copy", "muscat") * repeats:  # interleaved; the best time and the highest peak
            seconds, rss = run(mode, path, os.path.join(tmp, f"{mode}.parquet"))
            best = results.get(mode, (seconds, rss))
            results[mode] = (min(seconds, best[0]), max(rss, best[1]))
        import pyarrow.parquet as pq

        ours, theirs = pq.read_table(os.path.join(tmp, "muscat.parquet")), pq.read_table(os.path.join(tmp, "copy.parquet"))
        assert ours.num_rows == theirs.num_rows == rows and ours.column("f7").equals(theirs.column("f7"))
        assert ours.schema.field("f0").metadata[b"unit"] == b"dB"
    copy, mine = results["copy"], results["muscat"]
    print(f"{rows:,} rows x {features} features -> Parquet (zstd), best of {repeats}, load {os.getloadavg()[0]:.1f}")
    print(f"  DuckDB COPY (SELECT ...) TO  {copy[0]:6.2f} s   peak {copy[1] / 2**20:6.0f} MiB")
    print(f"  muscat export                {mine[0]:6.2f} s   peak {mine[1] / 2**20:6.0f} MiB   "
          f"{mine[0] / copy[0]:.2f}x COPY (target <= 1.5x)")


if __name__ == "__main__":
    main()
