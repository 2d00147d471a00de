"""Model-based extractors in three stages, so that one process can hold the models for many.

An extractor whose work is mostly a neural network (demucs, drums, bass_pitch) may define, in
place of `extract`:

    load_model(params, device) -> model           once per process that holds models
    model_info(model) -> dict                     optional: plain values `prepare` needs
                                                  (sample rate, window length)
    prepare(audio, params, info, inputs) -> (items, state)   CPU: decode-side work; `items` is a float32
                                                  array [N, ...] of inputs of one shape
    forward(model, batch) -> batch                the network on a torch tensor [B, ...] of
                                                  items, perhaps from several files
    finish(audio, params, info, state, outputs, inputs) -> Made   CPU: from the outputs, in
                                                  order, in blocks ([n, ...] arrays that
                                                  concatenate to [N, ...]) to what it made
                                                  (catalog/extractor.py), writing any files

`prepare` and `finish` run in the CPU worker that decoded the file; `load_model` and `forward`
wherever the models are: in the GPU worker (catalog/gpu_worker.py), which batches items of many
files per forward pass, or in this process (`LocalModels`) when there is none.
"""

from __future__ import annotations

import threading
from types import ModuleType
from typing import TYPE_CHECKING, Any, Iterator, Protocol

if TYPE_CHECKING:  # numpy and torch load only where extractors run
    import numpy as np

    from .extractor import Inputs, Made

STAGES = ("load_model", "prepare", "forward", "finish")
LOCAL_BATCH = 4  # items per forward pass in a CPU worker (no GPU worker): bounds its memory


def is_staged(module: ModuleType) -> bool:
    return all(callable(getattr(module, stage, None)) for stage in STAGES)


class Models(Protocol):
    """Where the models of staged extractors run: here, or in the GPU worker."""

    def info(self, name: str) -> dict[str, Any]: ...

    def forward(self, name: str, items: np.ndarray) -> Iterator[np.ndarray]:
        """The outputs of `items`, in order, in blocks (so a long file's are never all in memory)."""


def run_staged(name: str, module: ModuleType, params: dict[str, Any], audio: Any, inputs: Inputs,
               models: Models) -> Made | dict[str, Any]:
    import numpy as np

    info = models.info(name)
    items, state = module.prepare(audio, params, info, inputs)
    outputs = models.forward(name, np.ascontiguousarray(items, dtype=np.float32))
    return module.finish(audio, params, info, state, outputs, inputs)


class ModelCache:
    """Staged extractors' models, each loaded on first use and kept (thread-safe)."""

    def __init__(self, modules: dict[str, tuple[ModuleType, dict[str, Any]]], device: str) -> None:
        self.modules = modules  # name -> (module, params)
        self.requested = device
        self._device: str | None = None
        self._loaded: dict[str, tuple[Any, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    @property
    def device(self) -> str:
        """The torch device (resolving `auto` imports torch: not before a model is needed)."""
        if self._device is None:
            from .devices import resolve

            self._device = resolve(self.requested)
        return self._device

    def get(self, name: str) -> tuple[Any, dict[str, Any]]:
        """(model, info) for an extractor."""
        with self._lock:
            if name not in self._loaded:
                module, params = self.modules[name]
                model = module.load_model(params, self.device)
                describe = getattr(module, "model_info", None)
                self._loaded[name] = (model, describe(model) if callable(describe) else {})
            return self._loaded[name]


def forward_in_batches(module: ModuleType, model: Any, items: np.ndarray, batch_size: int,
                       device: str) -> Iterator[np.ndarray]:
    """`module.forward` over `items`, `batch_size` at a time: float32 output blocks."""
    import torch

    for start in range(0, len(items), batch_size):
        with torch.inference_mode():
            batch = torch.from_numpy(items[start : start + batch_size]).to(device)
            output = module.forward(model, batch).float().cpu().numpy()
        yield output


class LocalModels:
    """Models held by this process: what a CPU worker uses when there is no GPU worker."""

    def __init__(self, modules: dict[str, tuple[ModuleType, dict[str, Any]]], device: str, batch_size: int) -> None:
        self.cache = ModelCache(modules, device)
        self.batch_size = batch_size

    def info(self, name: str) -> dict[str, Any]:
        return self.cache.get(name)[1]

    def forward(self, name: str, items: np.ndarray) -> Iterator[np.ndarray]:
        model, _ = self.cache.get(name)
        module, _ = self.cache.modules[name]
        return forward_in_batches(module, model, items, self.batch_size, self.cache.device)


def run_here(module: ModuleType, audio: Any, params: dict[str, Any], inputs: Inputs | None = None,
             device: str = "cpu", batch_size: int = LOCAL_BATCH) -> Made:
    """Run one staged extractor module in this process (tests, scripts)."""
    from .extractor import Inputs, Made

    name = module.EXTRACTOR.name
    inputs = inputs if inputs is not None else Inputs(device=device)
    made = run_staged(name, module, params, audio, inputs, LocalModels({name: (module, params)}, device, batch_size))
    return made if isinstance(made, Made) else Made(made)
