"""--device: ROCm builds get their allocator and MIOpen settings, unless the user chose."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from catalog import devices

REPO = Path(__file__).resolve().parent.parent


def test_rocm_builds_get_their_defaults_unless_set(monkeypatch):
    monkeypatch.setattr(devices, "version", lambda name: "2.11.0+rocm6.4")
    monkeypatch.delenv("PYTORCH_ALLOC_CONF", raising=False)
    monkeypatch.setenv("MIOPEN_FIND_MODE", "1")  # the user's own choice stays
    devices.prepare_environment()
    import os

    assert os.environ["PYTORCH_ALLOC_CONF"] == "garbage_collection_threshold:0.8"
    assert os.environ["MIOPEN_FIND_MODE"] == "1"


def test_cuda_and_cpu_builds_keep_their_defaults(monkeypatch):
    monkeypatch.setattr(devices, "version", lambda name: "2.11.0")
    monkeypatch.delenv("PYTORCH_ALLOC_CONF", raising=False)
    monkeypatch.delenv("MIOPEN_FIND_MODE", raising=False)
    devices.prepare_environment()
    import os

    assert "PYTORCH_ALLOC_CONF" not in os.environ and "MIOPEN_FIND_MODE" not in os.environ


def test_auto_takes_the_cpu_when_there_is_no_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(devices, "may_have_gpu", lambda: True)  # a machine where torch must be asked
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.resolve("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.resolve("auto") == "cuda:0"
    assert devices.resolve("cuda") == "cuda:0"


def test_auto_is_what_torch_says_here():
    import torch

    assert devices.resolve("auto") == ("cuda:0" if torch.cuda.is_available() else "cpu")
    if not devices.may_have_gpu():  # no GPU device files: torch sees no GPU either
        assert not torch.cuda.is_available()


def test_a_named_device_and_auto_without_gpu_device_files_do_not_import_torch():
    code = ("import sys; from catalog import devices; "
            "assert [devices.resolve(d) for d in ('cpu', 'cuda', 'cuda:1')] == ['cpu', 'cuda:0', 'cuda:1']; "
            "assert 'torch' not in sys.modules, 'named'; "
            "assert devices.may_have_gpu() or devices.resolve('auto') == 'cpu'; "
            "assert devices.may_have_gpu() or 'torch' not in sys.modules, 'auto'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
