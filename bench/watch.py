"""Watch latency: how long a dropped file takes to reach the catalogue, and its first features.

Starts `muscat watch --settle S` on an empty library, drops --files short WAV files into it
(in folders of 100, as fast as they can be written), and reports p50/p95/max of the time from
each file's close to its row in `library` (the `first_seen` of its row, taken when the write
batch starts; the batch commits within milliseconds) and to its first features (the probe
run's `finished_at`). Target (issue 5): p95 to `library` within the settle time plus one second.

    uv run python bench/watch.py [--files 1000] [--settle 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import catalog  # noqa: E402

MUSCAT = Path(sys.executable).parent / "muscat"


def quantiles(values: list[float]) -> str:
    values = sorted(values)
    p95 = values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]
    return f"p50 {statistics.median(values):6.2f} s   p95 {p95:6.2f} s   max {values[-1]:6.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--settle", type=float, default=2.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="muscat-bench-"))
    try:
        library, db = work / "library", work / "bench.duckdb"
        library.mkdir()
        template = work / "template.wav"
        t = np.arange(22050) / 44100
        sf.write(template, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 44100, subtype="PCM_16")
        data = template.read_bytes()
        watcher = subprocess.Popen([str(MUSCAT), "--db", str(db), "watch", "--settle", str(args.settle), str(library)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        database = catalog.Database(db, lock_timeout=60)
        while not db.exists():
            time.sleep(0.1)
        time.sleep(2.0)  # let the first scan finish and the observer start

        closed: dict[str, float] = {}
        for i in range(args.files):
            folder = library / f"album{i // 100:03d}"
            folder.mkdir(exist_ok=True)
            path = folder / f"{i:05d}.wav"
            with open(path, "wb") as f:
                f.write(data)
            closed[str(path)] = time.time()
        print(f"dropped {args.files} files in {max(closed.values()) - min(closed.values()):.1f} s", flush=True)

        def count(sql: str) -> int:
            with database.read() as con:
                return con.execute(sql).fetchone()[0]

        deadline = time.monotonic() + 600
        while count("SELECT count(*) FROM runs WHERE extractor = 'probe'") < args.files:
            if time.monotonic() > deadline:
                raise SystemExit("timed out waiting for the watcher")
            time.sleep(0.5)
        with database.read() as con:
            rows = con.execute(
                "SELECT l.path, f.first_seen, r.finished_at FROM library l JOIN files f USING (file_id) "
                "JOIN runs r ON r.file_id = f.file_id AND r.extractor = 'probe'"
            ).fetchall()
        watcher.send_signal(signal.SIGTERM)
        watcher.communicate(timeout=60)

        def seconds(ts: datetime) -> float:
            return ts.replace(tzinfo=timezone.utc).timestamp()

        to_library = [seconds(seen) - closed[path] for path, seen, _ in rows]
        to_features = [seconds(done) - closed[path] for path, _, done in rows]
        print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
              f"{platform.system()} {platform.release()}; settle {args.settle:g} s\n")
        print(f"close -> row in library:    {quantiles(to_library)}")
        print(f"close -> first features:    {quantiles(to_features)}")
        p95 = sorted(to_library)[int(round(0.95 * (len(to_library) - 1)))]
        target = args.settle + 1
        print(f"\ntarget: p95 to library <= {target:g} s: {'ok' if p95 <= target else 'MISSED'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
