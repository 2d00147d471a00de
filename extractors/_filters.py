"""The IIR filters of the loudness extractor (scipy.signal's sosfilt and lfilter) without
importing scipy.signal.

Importing scipy.signal costs about 1 s of CPU in every worker process (scipy.stats,
scipy.interpolate and the rest of the package come with it), for two compiled routines that
depend on numpy alone. They are loaded here from scipy's own extension modules
(`scipy.signal._sosfilt`, `scipy.signal._sigtools`, registered under those names, so that a
later `import scipy.signal` uses the same ones) and called as scipy.signal calls them, for what
loudness filters: float64, from rest. Where that fails (another scipy's layout), scipy.signal
is imported and used: the same values, a second later. tests/test_filters.py holds both ways to
scipy.signal's results, bit for bit, and checks that the pinned scipy takes the quick one.
"""

from __future__ import annotations

import functools
import sys
import threading
from typing import Any, Callable

_loading = threading.Lock()  # a Ray actor runs its jobs in threads: one load of each module


def compiled() -> tuple[Callable[..., Any], Callable[..., Any]] | None:
    """(scipy.signal._sosfilt._sosfilt, scipy.signal._sigtools._linear_filter), loaded without
    the scipy.signal package, or None where they cannot be."""
    with _loading:
        return _load()


@functools.cache
def _load() -> tuple[Callable[..., Any], Callable[..., Any]] | None:
    import importlib.machinery
    import importlib.util
    import os

    try:
        import scipy

        folder = os.path.join(scipy.__path__[0], "signal")
        modules = {}
        for name in ("_sosfilt", "_sigtools"):
            full = f"scipy.signal.{name}"
            if full not in sys.modules:
                path = next((os.path.join(folder, name + suffix) for suffix in importlib.machinery.EXTENSION_SUFFIXES
                             if os.path.exists(os.path.join(folder, name + suffix))), None)
                spec = importlib.util.spec_from_file_location(full, path) if path else None
                if spec is None or spec.loader is None:
                    return None
                module = importlib.util.module_from_spec(spec)
                sys.modules[full] = module  # as importlib does: an extension module is made once
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[full]
                    raise
            modules[name] = sys.modules[full]
        return modules["_sosfilt"]._sosfilt, modules["_sigtools"]._linear_filter
    except Exception:  # another layout: scipy.signal itself, below
        return None


def sosfilt(sos: Any, x: Any, axis: int = -1) -> Any:
    """scipy.signal.sosfilt(sos, x, axis) from rest, in float64."""
    import numpy as np

    routines = compiled()
    if routines is None:
        import scipy.signal

        return scipy.signal.sosfilt(np.asarray(sos, np.float64), np.asarray(x, np.float64), axis=axis)
    sos = np.asarray(sos, np.float64)
    x = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    shape = x.shape
    signals = np.array(x.reshape(-1, shape[-1]), np.float64, order="C")  # filtered in place
    state = np.zeros((len(signals), len(sos), 2))
    routines[0](sos, signals, state)
    return np.moveaxis(signals.reshape(shape), -1, axis)


def lfilter(b: Any, a: Any, x: Any) -> Any:
    """scipy.signal.lfilter(b, a, x) along the last axis, from rest, in float64 (len(a) > 1)."""
    import numpy as np

    b, a, x = np.atleast_1d(np.asarray(b, np.float64)), np.atleast_1d(np.asarray(a, np.float64)), np.asarray(x, np.float64)
    routines = compiled()
    if routines is None or len(a) < 2:
        import scipy.signal

        return scipy.signal.lfilter(b, a, x)
    return routines[1](b, a, x, -1)
