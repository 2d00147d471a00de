"""Where GPU extractors run: `--device auto|cpu|cuda|cuda:N|...`, or several devices separated by
commas (`cuda:0,cuda:1`): one GPU worker per device, the CPU workers shared out among them.

torch is imported only here and only when a GPU extractor runs. On ROCm (HIP) builds of torch,
two settings that the original pipeline learnt the hard way are put in place before torch
initialises, unless the user set them: HIP does not support `expandable_segments`, so the
allocator collects garbage at 80% instead, and MIOpen's exhaustive kernel search (minutes per
new shape) is cut short. CUDA keeps its own defaults.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROCM_DEFAULTS = {"PYTORCH_ALLOC_CONF": "garbage_collection_threshold:0.8", "MIOPEN_FIND_MODE": "2"}


def is_rocm_build() -> bool:
    try:
        return "rocm" in version("torch")
    except PackageNotFoundError:
        return False


def prepare_environment() -> None:
    """Call before torch is imported."""
    if is_rocm_build():
        for key, value in ROCM_DEFAULTS.items():
            os.environ.setdefault(key, value)


def split(requested: str) -> list[str]:
    """The devices of a `--device` value, in order."""
    return [device.strip() for device in requested.split(",") if device.strip()] or ["auto"]


# The device files through which torch reaches a GPU on Linux: NVIDIA's driver (nvidia*, and
# nvhost*/nvgpu/nvmap on Jetson), WSL 2's (dxg) and ROCm's (kfd).
GPU_DEVICE_FILES = ("nvidia*", "nvhost*", "nvgpu*", "nvmap", "dxg", "kfd")


def may_have_gpu() -> bool:
    """False when torch certainly sees no GPU: Linux with none of GPU_DEVICE_FILES in /dev.
    Elsewhere, or with any of them, only torch can tell."""
    if not sys.platform.startswith("linux"):
        return True
    dev = Path("/dev")
    return any(next(dev.glob(pattern), None) is not None for pattern in GPU_DEVICE_FILES)


def resolve(requested: str) -> str:
    """The torch device for a request: `auto` takes the first GPU when there is one.

    torch is imported only to ask about `auto` on a machine that may have a GPU: its import
    costs seconds of CPU (3.8 s here), in the coordinator and every worker that names a device.
    """
    prepare_environment()
    if requested == "cuda":
        return "cuda:0"
    if requested != "auto":
        return requested
    if not may_have_gpu():
        return "cpu"
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"
