"""Re-indexing at scale: the stale set and a full switch of one extractor, on synthetic rows.

Builds a catalogue of --audio audio (one file each) with a current result of every CPU extractor
and all its declared values (written with SQL, not extracted), changes a parameter of `spectral`
in muscat.toml, then times:

  stale set     the `stale` view counted, and `muscat reindex --dry-run`'s summary
  full switch   --audio new spectral results written through muscat's result writer, in its
                batches of 500, after which nothing is stale

Targets (issue 6): stale set under 1 s, full switch under 5 s.

    uv run python bench/reindex.py [--audio 10000]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import catalog  # noqa: E402
from catalog.registry import load_extractors  # noqa: E402
from catalog.writer import ResultWriter, Run  # noqa: E402


def fill(db: catalog.Database, extractors, count: int) -> None:
    """count files, audio, and a current run with every declared output per extractor."""
    with db.write() as con:
        con.execute("INSERT INTO roots (path, added_at) VALUES ('/library', now()::TIMESTAMP)")
        con.execute(
            """
            INSERT INTO files (root_id, dir, name, size, mtime_ns, dev, inode, audio_id, status, codec,
                               probed_at, first_seen, changed_at)
            SELECT 1, 'album' || (i // 100), i || '.flac', 30000000, 0, 1, i, 'audio' || i, 'present', 'flac',
                   now()::TIMESTAMP, now()::TIMESTAMP - INTERVAL 1 DAY, now()::TIMESTAMP - INTERVAL 1 DAY
            FROM range(?) t(i)
            """,
            [count],
        )
        con.execute("INSERT INTO audio SELECT 'audio' || i, 180.0, 44100, 2, now()::TIMESTAMP FROM range(?) t(i)",
                    [count])
        for position, e in enumerate(extractors):
            base = position * count
            con.execute(
                """
                INSERT INTO runs (run_id, audio_id, file_id, extractor, version, params_hash, input, status,
                                  attempts, started_at, finished_at, seconds, audio_seconds, device, host)
                SELECT ? + i + 1, 'audio' || i, i + 1, ?, ?, ?, 'mix', 'ok', 1, now()::TIMESTAMP,
                       now()::TIMESTAMP, 0.5, 180.0, 'cpu', 'bench'
                FROM range(?) t(i)
                """,
                [base, e.name, e.version, e.params_hash, count],
            )
            for o in e.declaration.outputs:
                if o.kind == "vector":
                    size = o.size or 400
                    con.execute(
                        "INSERT INTO feature_vector_values SELECT ? + i + 1, ?, "
                        "list_transform(range(?), lambda x: (x * 0.01)::FLOAT) FROM range(?) t(i)",
                        [base, o.name, size, count],
                    )
                else:
                    value, text = ("random()", "NULL") if o.kind == "scalar" else ("NULL", "'C'")
                    con.execute(f"INSERT INTO feature_values SELECT ? + i + 1, ?, {value}, {text} FROM range(?) t(i)",
                                [base, o.name, count])
        con.execute("SELECT setval('run_ids', ?)", [len(extractors) * count + 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audio", type=int, default=10_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="muscat-bench-"))
    try:
        path = work / "bench.duckdb"
        settings = catalog.load_settings(db=path)
        db = catalog.Database(path)
        # What runs here without model files (the CPU set): results of an extractor that cannot run
        # would make others stale for a reason (input) this benchmark is not about.
        extractors = [e for e in load_extractors(settings) if e.runnable]
        catalog.sync_extractors(db, settings)
        started = time.perf_counter()
        fill(db, extractors, args.audio)
        with db.read() as con:
            values = con.execute("SELECT (SELECT count(*) FROM feature_values) + "
                                 "(SELECT count(*) FROM feature_vector_values)").fetchone()[0]
        print(f"{args.audio:,} audio x {len(extractors)} extractors: {values:,} feature rows "
              f"(built in {time.perf_counter() - started:.1f} s)")

        (work / "muscat.toml").write_text("[extractors.spectral]\nrolloff = 0.9\n")
        settings = catalog.load_settings(db=path)
        catalog.sync_extractors(db, settings)
        started = time.perf_counter()
        with db.read() as con:
            stale = con.execute("SELECT count(*) FROM stale").fetchone()[0]
        stale_view = time.perf_counter() - started
        started = time.perf_counter()
        summary = catalog.stale_summary(db, settings)
        stale_summary = time.perf_counter() - started
        assert stale == summary["stale"] == args.audio, (stale, summary["stale"])

        spectral = {e.name: e for e in load_extractors(settings)}["spectral"]
        template = {o.name: ([0.5] * o.size if o.kind == "vector" else 1.0) for o in spectral.declaration.outputs}
        writer = ResultWriter(db)
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        started = time.perf_counter()
        for i in range(args.audio):
            writer.add_run(Run(spectral, f"audio{i}", i + 1, "ok", now, 0.3, 180.0, template))
            if len(writer.runs) >= writer.flush_runs:
                writer.flush()
        writer.flush()
        switch = time.perf_counter() - started
        with db.read() as con:
            left = con.execute("SELECT count(*) FROM stale").fetchone()[0]
        assert left == 0, left

        print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
              f"{platform.system()} {platform.release()}\n")
        print(f"stale set, the view counted:       {stale_view:6.2f} s  ({stale:,} stale)")
        print(f"stale set, reindex --dry-run:      {stale_summary:6.2f} s  (target < 1 s: "
              f"{'ok' if max(stale_view, stale_summary) < 1 else 'MISSED'})")
        print(f"full switch of spectral:           {switch:6.2f} s  ({args.audio:,} results, "
              f"{len(template)} values each; target < 5 s: {'ok' if switch < 5 else 'MISSED'})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
