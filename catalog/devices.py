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
from importlib.metadata import PackageNotFoundError, version

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


def resolve(requested: str) -> str:
    """The torch device for a request: `auto` takes the first GPU when there is one."""
    prepare_environment()
    import torch

    if requested == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        return "cuda:0"
    return requested
