"""scipy.signal's `sosfilt` and `lfilter` without the cost of importing `scipy.signal`.

`import scipy.signal` imports all of it (scipy.stats, scipy.interpolate, the LTI systems...):
1.7 s of CPU here beyond scipy.fft, in every worker before its first loudness, though loudness
uses two filters. The filters themselves are two compiled modules of scipy.signal, `_sosfilt`
and `_sigtools`, which need nothing of the package: they are loaded here from scipy's own folder
(under their own names, without running the package's `__init__`), and called as scipy.signal's
Python wrappers call them, for the cases muscat uses (no initial state; IIR filters). The
numbers are scipy's, bit for bit (tests/test_signal_filters.py). Where the modules cannot be
loaded so (another layout of scipy), or once `scipy.signal` is imported anyway, these are
scipy.signal's functions.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

_loaded: dict[str, ModuleType | None] = {}
_loading = threading.Lock()  # a Ray actor runs jobs in threads: one load of each module


def _compiled(name: str) -> ModuleType | None:
    """scipy.signal's compiled module `name`, loaded alone (None where it cannot be)."""
    full = f"scipy.signal.{name}"
    with _loading:
        return sys.modules[full] if full in sys.modules else _load(name, full)


def _load(name: str, full: str) -> ModuleType | None:
    if name not in _loaded:
        _loaded[name] = None
        import scipy

        folder = Path(scipy.__file__).parent / "signal"
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = folder / f"{name}{suffix}"
            if path.is_file():
                try:
                    spec = importlib.util.spec_from_file_location(full, path)
                    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
                    spec.loader.exec_module(module)  # type: ignore[union-attr]
                except (ImportError, AttributeError, OSError):
                    break
                # Under its own name: a later `import scipy.signal` takes this module, not a second copy.
                sys.modules[full] = module
                _loaded[name] = module
                break
    return _loaded[name]


def sosfilt(sos: Any, x: Any, axis: int = -1) -> Any:
    """scipy.signal.sosfilt(sos, x, axis) (no `zi`)."""
    import numpy as np

    core = _compiled("_sosfilt")
    if "scipy.signal" in sys.modules or core is None or not hasattr(core, "_sosfilt"):
        import scipy.signal

        return scipy.signal.sosfilt(sos, x, axis=axis)
    # What scipy.signal.sosfilt does with zi=None (scipy/signal/_signaltools.py).
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError("x must be at least 1-D")
    sos = np.asarray(sos)
    sos = sos[None] if sos.ndim == 1 else sos
    if sos.ndim != 2 or sos.shape[1] != 6 or not np.all(sos[:, 3] == 1):
        raise ValueError("sos array must be shape (n_sections, 6) with sos[:, 3] all ones")
    sections = sos.shape[0]
    dtype = np.result_type(sos, x)
    if dtype.char not in "fdgFDGO":
        raise NotImplementedError(f"input type '{dtype}' not supported")
    zi_shape = list(x.shape)
    zi_shape[axis] = 2
    zi = np.zeros([sections, *zi_shape], dtype=dtype)
    axis = axis % x.ndim
    x = np.moveaxis(x, axis, -1)
    zi = np.moveaxis(zi, (0, axis + 1), (-2, -1))
    shape = x.shape
    x = np.array(np.reshape(x, (-1, x.shape[-1])), dtype, order="C")  # a copy, filtered in place
    zi = np.ascontiguousarray(np.reshape(zi, (-1, sections, 2)))
    core._sosfilt(sos.astype(dtype, copy=False), x, zi)
    return np.moveaxis(x.reshape(shape), -1, axis)


def lfilter(b: Any, a: Any, x: Any, axis: int = -1) -> Any:
    """scipy.signal.lfilter(b, a, x, axis) of an IIR filter (len(a) > 1; no `zi`)."""
    import numpy as np

    b, a = np.atleast_1d(b), np.atleast_1d(a)
    core = _compiled("_sigtools")
    if ("scipy.signal" in sys.modules or core is None or not hasattr(core, "_linear_filter")
            or b.ndim != 1 or a.ndim != 1 or not b.size or len(a) < 2):
        import scipy.signal

        return scipy.signal.lfilter(b, a, x, axis=axis)
    return core._linear_filter(b, a, np.asarray(x), axis)  # as scipy.signal.lfilter calls it
