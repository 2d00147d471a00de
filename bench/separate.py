"""Separation throughput: muscat against the `demucs` command line, same model folder, one run.

Builds a random-weight HTDemucs in a local model folder (tiny by default: CPU-sized; `--size
real` gives htdemucs' real dimensions, for GPU machines), generates --files stereo tracks of
--seconds, then separates them:

  demucs CLI   python -m demucs -n MODEL --repo FOLDER per file, one process per file as the
               old pipeline ran it, --parallel processes at a time (torch and the model loaded
               each time)
  muscat       muscat extract --only demucs --workers --parallel (model loaded once per worker),
               WAV stems like the CLI's

and reports the wall-time ratio. Target (issue 4): muscat at least 1.3x faster on a CPU.
GPU busy fraction and realtime factor on a GPU machine: not measured yet (no GPU worker yet).

    uv run python bench/separate.py [--files 6] [--seconds 10] [--parallel 2] [--size tiny|real]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from models import tiny_demucs_repo  # noqa: E402

MUSCAT = Path(sys.executable).parent / "muscat"


def real_size_repo(folder: Path) -> Path:
    import torch
    from demucs.htdemucs import HTDemucs
    from demucs.states import get_state

    folder.mkdir(parents=True, exist_ok=True)
    model = HTDemucs(sources=["drums", "bass", "other", "vocals"])  # htdemucs' default dimensions
    args, kwargs = model._init_args_kwargs
    torch.save({"klass": HTDemucs, "args": args, "kwargs": kwargs, "state": get_state(model, None),
                "training_args": {}}, folder / "tiny.th")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--size", choices=["tiny", "real"], default="tiny")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="muscat-bench-"))
    try:
        repo = tiny_demucs_repo(work / "models") if args.size == "tiny" else real_size_repo(work / "models")
        library = work / "library"
        library.mkdir()
        rng = np.random.default_rng(0)
        files = []
        for i in range(args.files):
            path = library / f"track{i:02d}.wav"
            sf.write(path, (0.1 * rng.standard_normal((int(args.seconds * 44100), 2))).astype(np.float32), 44100)
            files.append(path)

        started = time.perf_counter()
        running: list[subprocess.Popen] = []
        for path in files:
            if len(running) >= args.parallel:
                running.pop(0).wait()
            running.append(subprocess.Popen(
                [sys.executable, "-m", "demucs", "-n", "tiny", "--repo", str(repo), "--shifts", "0",
                 "-o", str(work / "cli"), str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for proc in running:
            if proc.wait() != 0:
                raise SystemExit("the demucs command line failed")
        cli = time.perf_counter() - started

        db = work / "bench.duckdb"
        (work / "muscat.toml").write_text(f'[extractors.demucs]\nrepo = "{repo}"\nmodel = "tiny"\nshifts = 0\n'
                                          'format = "wav"\n')
        subprocess.run([str(MUSCAT), "--db", str(db), "scan", str(library)], check=True, capture_output=True)
        subprocess.run([str(MUSCAT), "--db", str(db), "extract", "--only", "probe"], capture_output=True)
        started = time.perf_counter()
        result = subprocess.run([str(MUSCAT), "--db", str(db), "extract", "--only", "demucs", "--workers",
                                 str(args.parallel), "--device", "cpu"], capture_output=True, text=True)
        ours = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"muscat failed: {result.stderr[-2000:]}")
        stems = len(list((work / "muscat-artifacts").rglob("*.wav")))
        assert stems == 4 * args.files, stems

        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
              f"{platform.system()} {platform.release()}")
        print(f"{args.files} files x {args.seconds:g} s, {args.size} random-weight HTDemucs, "
              f"{args.parallel} at a time, CPU\n")
        print(f"demucs CLI, a process per file:  {cli:7.1f} s")
        print(f"muscat extract --only demucs:    {ours:7.1f} s")
        ratio = cli / ours
        print(f"\nmuscat is {ratio:.2f}x faster (target >= 1.3x: {'ok' if ratio >= 1.3 else 'MISSED'})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
