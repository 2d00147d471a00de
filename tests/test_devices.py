"""--device: ROCm builds get their allocator and MIOpen settings, unless the user chose."""

from __future__ import annotations

from catalog import devices


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

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.resolve("auto") == "cpu"
    assert devices.resolve("cuda") == "cuda:0"
