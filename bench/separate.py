"""Separation throughput: muscat against the `demucs` command line, same model folder, one run.

Builds random-weight models in a local model folder: `--size tiny` (default; CPU-sized),
`real` (one HTDemucs of htdemucs' dimensions) or `ft` (a bag of four of them weighted one stem
each, as htdemucs_ft is); generates --files stereo tracks of --seconds, then separates them:

  demucs CLI   python -m demucs -n MODEL --repo FOLDER -d DEVICE per file, one process per file
               as the old pipeline ran it, --parallel processes at a time (torch and the model
               loaded each time)
  muscat       muscat extract --only demucs --workers W --device DEVICE, WAV stems like the
               CLI's; on a GPU the GPU worker holds the model and batches windows of all files

and reports the wall-time ratio; on a GPU also the realtime factor (seconds of audio separated
per second) and the GPU busy fraction (nvidia-smi's utilisation, sampled every 100 ms while
muscat ran, over the whole run and over the span from the first to the last busy sample).
Targets (issue 4): muscat at least 1.3x the CLI on a CPU; on a GPU with `--size ft`, busy at
least 90% and at least 1.5x the CLI.

    uv run python bench/separate.py [--files 6] [--seconds 10] [--parallel 2] [--size tiny|real|ft]
                                    [--device cpu|cuda] [--workers W] [--batch 16] [--gpu-worker]
"""

from __future__ import annotations

import argparse
import json
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


def real_size_repo(folder: Path, members: int = 1) -> Path:
    """`tiny.th` of htdemucs' dimensions; with members > 1, `tiny.yaml` a bag of them, one stem each."""
    import torch
    from demucs.htdemucs import HTDemucs
    from demucs.states import get_state

    folder.mkdir(parents=True, exist_ok=True)
    names = ["tiny"] if members == 1 else [f"member{i}" for i in range(members)]
    for seed, name in enumerate(names):
        torch.manual_seed(seed)
        model = HTDemucs(sources=["drums", "bass", "other", "vocals"])  # htdemucs' default dimensions
        args, kwargs = model._init_args_kwargs
        torch.save({"klass": HTDemucs, "args": args, "kwargs": kwargs, "state": get_state(model, None),
                    "training_args": {}}, folder / f"{name}.th")
    if members > 1:
        weights = [[1.0 if i == j else 0.0 for j in range(4)] for i in range(members)]
        (folder / "tiny.yaml").write_text(f"models: {names}\nweights: {weights}\n")
    return folder


class BusySampler:
    """nvidia-smi's GPU utilisation every 100 ms, in the background (None without nvidia-smi)."""

    def __init__(self) -> None:
        self.proc = None
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                          "-i", "0", "-lms", "100"], stdout=subprocess.PIPE, text=True)

    def stop(self) -> tuple[float, float] | None:
        """(busy over the whole run, busy from the first to the last busy sample), as fractions."""
        if self.proc is None:
            return None
        self.proc.terminate()
        samples = [float(line) for line in self.proc.communicate()[0].split() if line.strip().isdigit()]
        busy = [i for i, v in enumerate(samples) if v > 0]
        if not busy:
            return 0.0, 0.0
        steady = samples[busy[0] : busy[-1] + 1]
        return sum(samples) / len(samples) / 100, sum(steady) / len(steady) / 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--size", choices=["tiny", "real", "ft"], default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=None, help="muscat's CPU workers (default: --parallel on a "
                        "CPU, all cores on a GPU)")
    parser.add_argument("--batch", type=int, default=16, help="windows per forward pass in the GPU worker")
    parser.add_argument("--shifts", type=int, default=0)
    parser.add_argument("--gpu-worker", action="store_true", help="use the GPU worker even on a CPU (it is on by "
                        "itself on a GPU)")
    parser.add_argument("--ray-address", metavar="ADDRESS", help="run muscat's side on this Ray cluster (a GPU actor "
                        "per GPU) instead of local worker processes")
    args = parser.parse_args()
    on_gpu = args.device != "cpu"
    workers = args.workers or (os.cpu_count() if on_gpu else args.parallel)
    work = Path(tempfile.mkdtemp(prefix="muscat-bench-"))
    try:
        if args.size == "tiny":
            repo = tiny_demucs_repo(work / "models")
        else:
            repo = real_size_repo(work / "models", members=4 if args.size == "ft" else 1)
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
                [sys.executable, "-m", "demucs", "-n", "tiny", "--repo", str(repo), "--shifts", str(args.shifts),
                 "-d", args.device, "-o", str(work / "cli"), str(path)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for proc in running:
            if proc.wait() != 0:
                raise SystemExit("the demucs command line failed")
        cli = time.perf_counter() - started

        db = work / "bench.duckdb"
        forced = "gpu_worker = true\n" if args.gpu_worker else ""
        (work / "muscat.toml").write_text(f'{forced}gpu_batch = {args.batch}\n[extractors.demucs]\nrepo = "{repo}"\n'
                                          f'model = "tiny"\nshifts = {args.shifts}\nformat = "wav"\n')
        subprocess.run([str(MUSCAT), "--db", str(db), "scan", str(library)], check=True, capture_output=True)
        subprocess.run([str(MUSCAT), "--db", str(db), "extract", "--only", "probe"], capture_output=True)
        sampler = BusySampler() if on_gpu else None
        started = time.perf_counter()
        on_ray = ["--executor", "ray", "--ray-address", args.ray_address] if args.ray_address else ["--workers",
                                                                                                   str(workers)]
        result = subprocess.run([str(MUSCAT), "--db", str(db), "extract", "--only", "demucs", *on_ray,
                                 "--device", args.device, "--json"], capture_output=True, text=True)
        ours = time.perf_counter() - started
        busy = sampler.stop() if sampler else None
        if result.returncode != 0:
            raise SystemExit(f"muscat failed: {result.stderr[-2000:]}")
        report = json.loads(result.stdout)
        stems = len(list((work / "muscat-artifacts").rglob("*.wav")))
        assert stems == 4 * args.files, stems

        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
              f"{platform.system()} {platform.release()}")
        if on_gpu:
            import torch

            print(f"GPU: {torch.cuda.get_device_name(0)}")
        print(f"{args.files} files x {args.seconds:g} s, {args.size} random-weight HTDemucs, shifts {args.shifts}, "
              f"CLI {args.parallel} at a time, muscat {workers} workers, device {args.device}\n")
        print(f"demucs CLI, a process per file:  {cli:7.1f} s")
        print(f"muscat extract --only demucs:    {ours:7.1f} s")
        ratio = cli / ours
        target = 1.5 if on_gpu else 1.3
        print(f"\nmuscat is {ratio:.2f}x faster (target >= {target}x: {'ok' if ratio >= target else 'MISSED'})")
        audio = args.files * args.seconds
        print(f"realtime factor: muscat {audio / ours:.1f}x, CLI {audio / cli:.1f}x (seconds of audio per second)")
        if report.get("gpu"):
            gpu = report["gpu"]
            print(f"GPU worker: {gpu['items']} windows in {gpu['batches']} forward passes, {gpu['shared_batches']} "
                  f"of them with windows of several files; batch size at the end {gpu['batch_size']}, "
                  f"out-of-memory retries {gpu['out_of_memory']}")
        if busy is not None:
            print(f"GPU busy: {busy[0]:.0%} of muscat's whole run, {busy[1]:.0%} from the first to the last busy "
                  f"sample (target >= 90%: {'ok' if busy[1] >= 0.9 else 'MISSED'})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
