"""Start-up: how long `muscat status` and `muscat sql` take as whole processes.

Builds a small catalogue (--files WAV files, scanned), then runs, in turn and --runs times each:
`python -c pass` (the interpreter alone), the DuckDB CLI (`duckdb -readonly`, the duckdb-cli dev
dependency) counting `library` on the same catalogue, `muscat status` and `muscat sql` with the
same query. Reports the median wall and CPU seconds of each and the ratios against the two
baselines measured in the same run; then, from `python -X importtime`, what `muscat status`
spends its imports on. Target (issue 16): status and sql under 0.3 s.

Python's compiled bytecode is kept in a temporary folder (PYTHONPYCACHEPREFIX), written by a
first run that is not counted: an installed muscat runs from compiled bytecode (pip compiles at
install, as `uv sync --compile-bytecode` does). With PYTHONDONTWRITEBYTECODE set and no cache,
every module is compiled from source at each start; --no-bytecode measures that.

With --before REV, `muscat status` and `muscat sql` are also timed at that commit (exported with
`git archive`, run with this environment's packages and its CLI's `main()`, as its console script
did), in the same rotation on the same catalogue, and the ratios of this tree's medians to
those are printed: a change measured against what it changes, under the same load. (A REV
whose views or extractors differ from this tree's would rewrite the catalogue at each turn: for
commits that share them.)

    uv run python bench/startup.py [--runs 15] [--files 50] [--no-bytecode] [--before REV]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _checkout import MUSCAT_AT, export  # noqa: E402

BIN = Path(sys.executable).parent
QUERY = "SELECT count(*) FROM library"


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one run of `command`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {result.stderr.decode()}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--no-bytecode", action="store_true", help="compile every module at each start")
    parser.add_argument("--before", metavar="REV", help="also time status and sql at this commit")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="muscat-bench-"))
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("MUSCAT_DB", "MUSCAT_CONFIG")}
        if args.no_bytecode:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
            env.pop("PYTHONPYCACHEPREFIX", None)
        else:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        library, db = work / "library", work / "cat.duckdb"
        t = np.arange(22050) / 44100
        for i in range(args.files):
            path = library / f"album{i // 10:02d}" / f"{i:03d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, (0.3 * np.sin(2 * np.pi * (220 + i) * t)).astype(np.float32), 44100, subtype="PCM_16")
        muscat = [str(BIN / "muscat"), "--db", str(db)]
        subprocess.run(muscat + ["scan", str(library)], env=env, check=True, stdout=subprocess.DEVNULL)
        commands = {
            "python -c pass": ([sys.executable, "-c", "pass"], env),
            "duckdb CLI, same query": ([str(BIN / "duckdb"), "-readonly", str(db), "-c", QUERY], env),
            "muscat status": (muscat + ["status"], env),
            "muscat sql, same query": (muscat + ["sql", QUERY], env),
        }
        if args.before:
            commit = export(args.before, work / "before")
            before_env = {**env, "PYTHONPATH": str(work / "before")}
            before = MUSCAT_AT + ["--db", str(db)]
            commands[f"status at {commit}"] = (before + ["status"], before_env)
            commands[f"sql at {commit}"] = (before + ["sql", QUERY], before_env)
        for command, command_env in commands.values():  # writes the bytecode cache and the extractors' record
            timed(command, command_env)
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, (command, command_env) in commands.items():
                figures[name].append(timed(command, command_env))

        load = os.getloadavg()[0]
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
              f"{platform.system()} {platform.release()}; load average {load:.1f}; {args.runs} runs each, "
              f"{'no bytecode cache' if args.no_bytecode else 'bytecode cached'}\n")
        medians = {name: (statistics.median(w for w, _ in f), statistics.median(c for _, c in f))
                   for name, f in figures.items()}
        print(f"{'command':26s} {'wall s':>8s} {'cpu s':>8s}")
        for name, (wall, cpu) in medians.items():
            print(f"{name:26s} {wall:8.3f} {cpu:8.3f}")
        python, duck = medians["python -c pass"], medians["duckdb CLI, same query"]
        print()
        for name in ("muscat status", "muscat sql, same query"):
            wall, cpu = medians[name]
            print(f"{name}: {wall / duck[0]:.2f}x the DuckDB CLI's wall time, {wall - python[0]:.3f} s more than "
                  f"Python starting; target < 0.3 s: {'ok' if wall < 0.3 else 'MISSED'}")
        if args.before:
            for name, old in (("muscat status", f"status at {commit}"), ("muscat sql, same query", f"sql at {commit}")):
                (wall, cpu), (old_wall, old_cpu) = medians[name], medians[old]
                print(f"{name}: {wall / old_wall:.2f}x the wall time at {commit}, {cpu / old_cpu:.2f}x its CPU time")

        trace = subprocess.run([sys.executable, "-X", "importtime", str(BIN / "muscat"), "--db", str(db), "status"],
                               env=env, capture_output=True, text=True).stderr
        top = []
        for line in trace.splitlines():
            parts = line.removeprefix("import time:").split("|")
            if len(parts) == 3 and parts[1].strip().isdigit() and not parts[2].startswith("  "):
                top.append((int(parts[1]), parts[2].strip()))
        print("\nmuscat status, top-level imports by cumulative time (one run):")
        for micros, name in sorted(top, reverse=True)[:8]:
            print(f"  {name:28s} {micros / 1000:7.1f} ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
