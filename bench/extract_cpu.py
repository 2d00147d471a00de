"""CPU extraction speed: muscat's CPU set against Essentia's MusicExtractor, in one run.

Generates --tracks stereo FLAC tracks of --minutes each (chords, a beat, some noise), then:

  muscat, 1 worker    muscat extract --workers 1 --only the CPU set (rhythm, key, loudness,
                      spectral, hpcp; probe runs anyway) on a fresh catalogue, process start and
                      catalogue writes included
  muscat, 2 workers   the same with --workers 2
  MusicExtractor      essentia.standard.MusicExtractor on each file, one process, one core
  before, 1 worker    with --before DIR: the same as "muscat, 1 worker" with DIR's muscat (a
                      checkout of an older commit with its own .venv), for a before/after in one run

  machine, 1 -> 2      the baseline for two workers: MusicExtractor on --scaling-tracks of the
                      tracks in one process, then the same tracks split between two processes
                      running at once (no coordination at all): what this machine gives two
                      CPU-bound Essentia processes against one, in the same round

The two muscat runs and the machine's pair are made --repeat times, alternating (1 worker, 2
workers, machine 1, machine 2, 1, 2, ...): this machine's speed drifts by a tenth from minute to
minute, so one pair can say 1.75x where the next says 1.99x, and two processes at once can each
run a tenth slower than one alone (the virtual cores share a host). It reports each round's
1 -> 2 worker speed-up (wall) beside the machine's, their medians, the median of each run's
figures, audio seconds per CPU second and per wall second, and muscat (1 worker) against
MusicExtractor in CPU seconds and in wall seconds. Targets (issue 16): one worker at most 0.5x
MusicExtractor's time; 2 workers at least 1.9x one. On a machine shared with other work read the
CPU seconds: wall times there say how busy the machine was.

    uv run python bench/extract_cpu.py [--tracks 12] [--minutes 3] [--repeat 3] [--scaling-tracks 4]
                                       [--before DIR]
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

MUSCAT = Path(sys.executable).parent / "muscat"
CPU_SET = "rhythm,key,loudness,spectral,hpcp"
MUSIC_EXTRACTOR = """
import sys, essentia
essentia.log.warningActive = False
essentia.log.infoActive = False
import essentia.standard as es
for path in sys.argv[1:]:
    es.MusicExtractor()(path)
"""


def make_track(path: Path, seconds: float, seed: int, sr: int = 44100) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    roots = [0, 5, 7, 9]  # I IV V vi in some key
    key = rng.integers(0, 12)
    bpm = rng.uniform(90, 140)
    out = np.zeros(len(t))
    bar = 4 * 60 / bpm
    for i, start in enumerate(np.arange(0, seconds, bar)):
        a, b = int(start * sr), min(len(t), int((start + bar) * sr))
        base = 220 * 2 ** ((key + roots[i % 4]) / 12)
        seg = t[a:b] - t[a]
        for interval in (0, 4, 7):
            f = base * 2 ** (interval / 12)
            out[a:b] += sum(np.sin(2 * np.pi * f * k * seg) / k for k in (1, 2, 3)) * np.exp(-seg)
    for beat in np.arange(0, seconds, 60 / bpm):
        a = int(beat * sr)
        n = min(len(t) - a, int(0.05 * sr))
        out[a : a + n] += rng.standard_normal(n) * np.exp(-np.arange(n) / (0.01 * sr))
    out = 0.2 * out / np.max(np.abs(out)) + 0.01 * rng.standard_normal(len(t))
    stereo = np.stack([out, np.roll(out, 100)], axis=1).astype(np.float32)
    sf.write(path, stereo, sr, subtype="PCM_16")


def measured(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, child processes included) of a command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({result.returncode}): {result.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def muscat_run(work: Path, library: Path, workers: int, muscat: Path = MUSCAT) -> tuple[float, float]:
    db = work / f"bench-{workers}-{abs(hash(str(muscat)))}.duckdb"
    for suffix in ("", ".wal"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    subprocess.run([str(muscat), "--db", str(db), "scan", str(library)], check=True, capture_output=True)
    return measured([str(muscat), "--db", str(db), "extract", "--workers", str(workers), "--only", CPU_SET])


def machine_pair(paths: list[str]) -> tuple[float, float]:
    """Wall seconds of MusicExtractor on `paths` in one process, then split between two
    processes started together (until both have ended)."""
    one, _ = measured([sys.executable, "-c", MUSIC_EXTRACTOR, *paths])
    started = time.perf_counter()
    halves = [subprocess.Popen([sys.executable, "-c", MUSIC_EXTRACTOR, *part], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True) for part in (paths[0::2], paths[1::2])]
    for process in halves:
        _, err = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"MusicExtractor failed ({process.returncode}): {err[-2000:]}")
    return one, time.perf_counter() - started


def _median(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=12)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the two muscat runs, alternating")
    parser.add_argument("--scaling-tracks", type=int, default=4,
                        help="tracks of the machine's 1 -> 2 process baseline in each round (even)")
    parser.add_argument("--before", type=Path, help="a checkout whose .venv/bin/muscat is measured too (1 worker)")
    args = parser.parse_args()
    before = args.before / ".venv" / "bin" / "muscat" if args.before else None
    if before is not None and not before.exists():
        parser.error(f"--before: {before} does not exist (run `uv sync` in {args.before})")

    work = Path(tempfile.mkdtemp(prefix="muscat-bench-"))
    try:
        library = work / "library"
        library.mkdir()
        paths = []
        for i in range(args.tracks):
            path = library / f"track{i:02d}.flac"
            make_track(path, args.minutes * 60, seed=i)
            paths.append(str(path))
        audio_seconds = args.tracks * args.minutes * 60
        load_before = os.getloadavg()[0]
        print(f"{args.tracks} tracks x {args.minutes:g} min = {audio_seconds / 60:.0f} min of stereo 44.1 kHz FLAC",
              flush=True)

        rounds = []
        machine = []  # (1 process, 2 processes) wall seconds of each round's baseline
        for round_number in range(args.repeat):
            pair = (muscat_run(work, library, 1), muscat_run(work, library, 2))
            rounds.append(pair)
            machine.append(machine_pair(paths[: args.scaling_tracks]))
            muscat_speedup, machine_speedup = pair[0][0] / pair[1][0], machine[-1][0] / machine[-1][1]
            print(f"round {round_number + 1}: 1 worker {pair[0][0]:.1f} s, 2 workers {pair[1][0]:.1f} s: "
                  f"{muscat_speedup:.2f}x; the machine, 1 -> 2 processes: {machine[-1][0]:.1f} s -> "
                  f"{machine[-1][1]:.1f} s: {machine_speedup:.2f}x; muscat's share of it "
                  f"{muscat_speedup / machine_speedup:.0%}", flush=True)
        results = {
            "muscat, 1 worker": _median([one for one, _ in rounds]),
            "muscat, 2 workers": _median([two for _, two in rounds]),
            "MusicExtractor": measured([sys.executable, "-c", MUSIC_EXTRACTOR, *paths]),
        }
        if before is not None:
            results["before, 1 worker"] = muscat_run(work, library, 1, before)
        print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
              f"{platform.system()} {platform.release()}; load average {load_before:.1f} at the start, "
              f"{os.getloadavg()[0]:.1f} at the end\n")
        print(f"{'':20} {'wall s':>8} {'CPU s':>8} {'audio s/CPU s':>14} {'audio s/wall s':>15}")
        for name, (wall, cpu) in results.items():
            print(f"{name:20} {wall:8.1f} {cpu:8.1f} {audio_seconds / cpu:14.1f} {audio_seconds / wall:15.1f}")
        (one, one_cpu), _, (reference, reference_cpu) = (results[k] for k in list(results)[:3])
        speedup = statistics.median(a[0] / b[0] for a, b in rounds)
        machine_speedup = statistics.median(a / b for a, b in machine)
        share = statistics.median((a[0] / b[0]) / (m1 / m2) for (a, b), (m1, m2) in zip(rounds, machine))
        print(f"\n2 workers vs 1 (wall, median of {len(rounds)} rounds): {speedup:.2f}x  (target >= 1.9x: "
              f"{'ok' if speedup >= 1.9 else 'MISSED'})")
        print(f"the machine, 2 processes vs 1 (MusicExtractor, {args.scaling_tracks} tracks, same rounds): "
              f"{machine_speedup:.2f}x; muscat's 2-worker speed-up over the machine's: {share:.0%} (median of rounds)")
        for unit, ours, theirs in (("CPU", one_cpu, reference_cpu), ("wall", one, reference)):
            print(f"1 worker / MusicExtractor ({unit + ' s):':9} {ours / theirs:.2f}x  (target <= 0.5x: "
                  f"{'ok' if ours / theirs <= 0.5 else 'MISSED'})")
        if before is not None:
            print(f"1 worker / before, 1 worker (CPU s):    {one_cpu / results['before, 1 worker'][1]:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
