"""Transcription speed: muscat's `notes` extractor against Basic Pitch's own `predict`, in one run.

Generates --tracks stereo FLAC tracks of --minutes each (chords, a beat, some noise; as
bench/extract_cpu.py), then, in this process after a warm-up (imports, model load), times on
each file:

  muscat notes            decode + the `notes` extractor (windows batched 4 to an
                          onnxruntime call on one thread, as a CPU worker runs it, on
                          nmp.onnx with extractors/_basic_pitch.py's faster_graph edits; MIDI
                          written)
  muscat notes, batch 1   the same, one window per call (what batching buys)
  muscat, stock graph     the same on nmp.onnx as it ships (what faster_graph buys)
  predict, 1 thread       basic_pitch.inference.predict with the same ONNX model, its session on
                          one thread (a worker's share of the machine)
  predict, default        the same with onnxruntime's default threads (all cores)

each --repeats times, interleaved file by file, keeping per file each one's least wall and least
CPU time (the machine is shared), and reports audio seconds per wall second (the realtime factor
of one worker) and per CPU second, and muscat against predict (1 thread) as ratios of both.
Target (issue 17): at least as fast. No GPU is used.

    uv run python bench/notes.py [--tracks 4] [--minutes 1]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from extract_cpu import make_track  # noqa: E402  (bench/ is this script's folder)

import catalog  # noqa: E402
from catalog import decode, registry  # noqa: E402
from catalog.extractor import Inputs  # noqa: E402
from extractors import _basic_pitch  # noqa: E402


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(run, paths: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of run(path) over all paths."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    for path in paths:
        run(path)
    return time.perf_counter() - wall, cpu_seconds() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # basic_pitch's start-up notes on back ends it does not use
    warnings.simplefilter("ignore")
    import onnxruntime as ort
    from basic_pitch import inference

    work = Path(tempfile.mkdtemp(prefix="muscat-bench-"))
    try:
        paths = []
        for i in range(args.tracks):
            path = work / f"track{i:02d}.flac"
            make_track(path, args.minutes * 60, seed=i)
            paths.append(str(path))
        warm = work / "warm.flac"
        make_track(warm, 5, seed=99)
        audio_seconds = args.tracks * args.minutes * 60
        print(f"{args.tracks} tracks x {args.minutes:g} min = {audio_seconds / 60:.0f} min of stereo 44.1 kHz FLAC",
              flush=True)

        settings = catalog.load_settings(db=work / "x.duckdb")
        notes = {e.name: e for e in registry.load_extractors(settings)}["notes"]
        inputs = Inputs(artifacts_dir=str(work / "artifacts"))
        counts: dict[str, int] = {}

        def muscat(path: str) -> None:
            counts[path] = notes.run(decode.decode(path), inputs).values["note_count"]

        def predictor(threads: int | None):
            model = inference.Model(_basic_pitch.model_path())
            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = options.inter_op_num_threads = threads
            model.model = ort.InferenceSession(str(_basic_pitch.model_path()), options,
                                               providers=["CPUExecutionProvider"])

            def run(path: str) -> None:
                with open(os.devnull, "w") as quiet:  # predict prints a line per file
                    stdout, sys.stdout = sys.stdout, quiet
                    try:
                        inference.predict(path, model)
                    finally:
                        sys.stdout = stdout
            return run

        def batched(size: int):
            def run(path: str) -> None:
                batch, _basic_pitch.BATCH = _basic_pitch.BATCH, size
                try:
                    muscat(path)
                finally:
                    _basic_pitch.BATCH = batch
            return run

        def stock_graph(path: str) -> None:
            _basic_pitch.STOCK_GRAPH = True
            try:
                muscat(path)
            finally:
                _basic_pitch.STOCK_GRAPH = False

        runs = {"muscat notes": muscat, "muscat notes, batch 1": batched(1), "muscat, stock graph": stock_graph,
                "predict, 1 thread": predictor(1), "predict, default": predictor(None)}
        for run in runs.values():
            run(str(warm))
        counts.clear()
        start_load = os.getloadavg()[0]
        # Interleaved file by file, so that a burst of other work on a shared machine falls on all
        # of them alike; per file each one's least wall and least CPU time over the passes (kept
        # apart: a wall time also holds the time other processes had the core), summed over files.
        least: dict[tuple[str, str], tuple[float, float]] = {}
        for _ in range(args.repeats):
            for path in paths:
                for name, run in runs.items():
                    wall, cpu = timed(run, [path])
                    old_wall, old_cpu = least.get((name, path), (wall, cpu))
                    least[name, path] = (min(wall, old_wall), min(cpu, old_cpu))
        walls = {name: sum(least[name, path][0] for path in paths) for name in runs}
        cpus = {name: sum(least[name, path][1] for path in paths) for name in runs}

        load = os.getloadavg()
        print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, load average {start_load:.1f} at the "
              f"start, {load[0]:.1f} (1 min) {load[1]:.1f} (5 min) at the end, Python {platform.python_version()}, "
              f"onnxruntime {ort.__version__}\n")
        print(f"{'':24} {'wall s':>8} {'CPU s':>8} {'audio s/wall s':>15} {'audio s/CPU s':>14}")
        for name in runs:
            wall, cpu = walls[name], cpus[name]
            print(f"{name:24} {wall:8.2f} {cpu:8.2f} {audio_seconds / wall:15.1f} {audio_seconds / cpu:14.1f}")
        print(f"\nnotes found per file: {sorted(counts.values())}")

        def ratio(label: str, base: str, ours: str = "muscat notes") -> str:
            return (f"{label:30} {walls[base] / walls[ours]:.3f}x wall, {cpus[base] / cpus[ours]:.3f}x CPU")
        mark = "ok" if walls["predict, 1 thread"] >= walls["muscat notes"] else "MISSED"
        print(ratio("muscat vs predict (1 thread):", "predict, 1 thread") + f"  (target >= 1.0x wall: {mark})")
        print(ratio(f"batch {_basic_pitch.BATCH} vs batch 1:", "muscat notes, batch 1"))
        print(ratio("faster_graph vs stock graph:", "muscat, stock graph"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
