"""Scan speed against `find`, measured in one run on the same tree.

Builds a tree of --files files in --folders folders (default 100,000 in 1,000), then times
as separate processes, each several times (median):

  find      find DIR -type f -printf '%s %T@ %p\\n'   (the baseline: one stat per file)
  cold      muscat scan DIR on a new catalogue
  rescan    muscat scan DIR again, nothing changed

and reports each as a ratio to find, with muscat's peak resident memory (the walker processes
included). Targets (issue 2): rescan within 3x find, cold within 6x, peak under 500 MB.

    uv run python bench/scan.py [--files 100000] [--folders 1000] [--repeat 5]
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
import time
from pathlib import Path

MUSCAT = Path(sys.executable).parent / "muscat"


def build_tree(root: Path, files: int, folders: int) -> None:
    per_folder = files // folders
    for d in range(folders):
        folder = root / f"artist{d // 50:03d}" / f"album{d:04d}"
        folder.mkdir(parents=True)
        for i in range(per_folder):
            with open(folder / f"{i:03d} track.flac", "wb") as f:
                f.write(b"x" * (i + 1))


def timed(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS in bytes of one process (and the children it waited for)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd[0]} failed: {proc.stderr.read().decode()}")
    return elapsed, usage.ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--folders", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="muscat-bench-"))
    try:
        tree = work / "tree"
        print(f"building {args.files:,} files in {args.folders:,} folders under {tree} ...", flush=True)
        build_tree(tree, args.files, args.folders)
        db = work / "bench.duckdb"
        find_cmd = ["find", str(tree), "-type", "f", "-printf", r"%s %T@ %p\n"]
        scan_cmd = [str(MUSCAT), "--db", str(db), "scan", str(tree)]
        timed(find_cmd)  # warm the page cache for everyone alike

        results: dict[str, list[tuple[float, int]]] = {"find": [], "cold": [], "rescan": []}
        for _ in range(args.repeat):
            results["find"].append(timed(find_cmd))
            for suffix in ("", ".wal"):
                Path(str(db) + suffix).unlink(missing_ok=True)
            results["cold"].append(timed(scan_cmd))
            results["rescan"].append(timed(scan_cmd))

        find_s = statistics.median(t for t, _ in results["find"])
        print()
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
              f"{platform.system()} {platform.release()}")
        print(f"tree:    {args.files:,} files in {args.folders:,} folders; median of {args.repeat} runs\n")
        print(f"{'':8} {'seconds':>8} {'x find':>7} {'peak MB':>8}  target")
        targets = {"find": None, "cold": 6.0, "rescan": 3.0}
        for name, runs in results.items():
            seconds = statistics.median(t for t, _ in runs)
            peak = max(m for _, m in runs) / 2**20
            ratio = seconds / find_s
            target = targets[name]
            verdict = "" if target is None else f"<= {target:.0f}x {'ok' if ratio <= target else 'MISSED'}"
            if name != "find":
                verdict += f", < 500 MB {'ok' if peak < 500 else 'MISSED'}"
            print(f"{name:8} {seconds:8.3f} {ratio:7.2f} {peak:8.0f}  {verdict}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
