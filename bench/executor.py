"""The local executor before and after the run protocol (issue 13), on the same files, in one run.

The run protocol (typed messages, extractors returning what they made, the Executor interface)
replaced the worker pipes' positional tuples in commit b21a445; its local executor was to stay
unchanged in behaviour and speed. This times both versions of muscat's code, each exported with
`git archive` into a temporary folder and run with this environment's packages (PYTHONPATH puts
the exported code first), over the same --tracks stereo FLAC tracks of --minutes each
(bench/extract_cpu.py's tracks):

  before    muscat extract --workers W at --before (default b21a445^), a fresh catalogue
  after     the same at --after (default HEAD)

alternating, --repeat times each (median), and reports wall and CPU seconds (the whole process
tree: coordinator, workers, catalogue writes) and after/before as ratios. Target: after within
1.05x of before. CPU seconds are the steadier figure on a shared machine.

    uv run python bench/executor.py [--tracks 6] [--minutes 1] [--workers 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _checkout import MUSCAT_AT, export  # noqa: E402
from extract_cpu import make_track, measured  # noqa: E402

def run(code: Path, db: Path, library: Path, workers: int) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    muscat = [*MUSCAT_AT, "--db", str(db)]
    for suffix in ("", ".wal"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    subprocess.run(muscat + ["scan", str(library)], check=True, capture_output=True, env=env)
    return measured(muscat + ["extract", "--workers", str(workers)], env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="b21a445^")
    parser.add_argument("--after", default="HEAD")
    parser.add_argument("--tracks", type=int, default=6)
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="muscat-bench-"))
    try:
        versions = {name: export(rev, work / name) for name, rev in (("before", args.before), ("after", args.after))}
        library = work / "library"
        library.mkdir()
        for i in range(args.tracks):
            make_track(library / f"track{i:02d}.flac", args.minutes * 60, seed=i)
        print(f"{args.tracks} tracks x {args.minutes:g} min; {args.workers} workers; "
              f"before = {versions['before']}, after = {versions['after']}", flush=True)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in versions}
        for _ in range(args.repeat):
            for name in versions:
                times[name].append(run(work / name, work / f"{name}.duckdb", library, args.workers))
        print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
              f"load average {os.getloadavg()[0]:.1f}; median of {args.repeat}\n")
        print(f"{'':8} {'wall s':>8} {'CPU s':>8}")
        medians = {}
        for name, runs in times.items():
            medians[name] = (statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs))
            print(f"{name:8} {medians[name][0]:8.2f} {medians[name][1]:8.2f}")
        wall = medians["after"][0] / medians["before"][0]
        cpu = medians["after"][1] / medians["before"][1]
        print(f"\nafter / before: wall {wall:.3f}x, CPU {cpu:.3f}x  "
              f"(target <= 1.05x: {'ok' if max(wall, cpu) <= 1.05 else 'MISSED'})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
