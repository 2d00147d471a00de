"""The Ray executor's overhead: the CPU set over the same files, locally and on Ray, in one run.

Generates --tracks stereo FLAC tracks of --minutes each (bench/extract_cpu.py's tracks), then:

  local, 2 workers     muscat extract --workers 2 (worker processes), a fresh catalogue
  Ray, 2 CPUs          a Ray head started apart (`ray start --head --num-cpus 2`, timed on its
                       own), then muscat extract --executor ray --ray-address ADDRESS on another
                       fresh catalogue: actors per CPU, the coordinator the only writer

Each muscat time is the whole command (process start, connecting, actor start-up, catalogue
writes). Target (issue 13): Ray's time at most 1.15x local's. The cluster is kept on loopback.

    uv run python bench/ray.py [--tracks 8] [--minutes 1]

On a machine with GPUs, the GPU-actor path (demucs in one actor per GPU, batching windows of
several files) runs with the separation benchmark's models and files:

    ray start --head && uv run python bench/separate.py --device cuda --size ft \\
        --ray-address 127.0.0.1:6379
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract_cpu import make_track, measured  # noqa: E402

BIN = Path(sys.executable).parent
RAY_ENV = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
           "RAY_agent_register_timeout_ms": "180000", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}


def fresh_catalogue(work: Path, name: str, library: Path) -> Path:
    db = work / f"{name}.duckdb"
    subprocess.run([str(BIN / "muscat"), "--db", str(db), "scan", str(library)], check=True, capture_output=True)
    return db


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=1.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="muscat-bench-ray-"))
    try:
        library = work / "library"
        library.mkdir()
        for i in range(args.tracks):
            make_track(library / f"track{i:02d}.flac", args.minutes * 60, seed=i)
        audio_seconds = args.tracks * args.minutes * 60
        print(f"{args.tracks} tracks x {args.minutes:g} min = {audio_seconds / 60:.0f} min of stereo FLAC", flush=True)

        local_db = fresh_catalogue(work, "local", library)
        local, _ = measured([str(BIN / "muscat"), "--db", str(local_db), "extract", "--workers", "2"])

        started = time.perf_counter()
        head = subprocess.run([str(BIN / "ray"), "start", "--head", "--num-cpus", "2", "--node-ip-address",
                               "127.0.0.1", "--include-dashboard", "false", "--disable-usage-stats"],
                              capture_output=True, text=True, env=RAY_ENV)
        ray_start = time.perf_counter() - started
        if head.returncode != 0:
            raise SystemExit(f"ray start failed: {head.stderr[-2000:]}")
        address = re.search(r"--address='([^']+)'", head.stdout)
        address = address.group(1) if address else "127.0.0.1:6379"
        try:
            ray_db = fresh_catalogue(work, "ray", library)
            on_ray, _ = measured([str(BIN / "muscat"), "--db", str(ray_db), "extract", "--executor", "ray",
                                  "--ray-address", address], env=RAY_ENV)
        finally:
            subprocess.run([str(BIN / "ray"), "stop", "--force"], capture_output=True, env=RAY_ENV)

        print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
              f"{platform.system()} {platform.release()}, load {os.getloadavg()[0]:.1f}\n")
        print(f"{'':28} {'wall s':>8} {'audio s/wall s':>15}")
        print(f"{'local, 2 workers':28} {local:8.1f} {audio_seconds / local:15.1f}")
        print(f"{'Ray, 2 CPUs':28} {on_ray:8.1f} {audio_seconds / on_ray:15.1f}")
        print(f"{'(ray start --head, apart)':28} {ray_start:8.1f}")
        ratio = on_ray / local
        print(f"\nRay / local: {ratio:.2f}x  (target <= 1.15x: {'ok' if ratio <= 1.15 else 'MISSED'})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
