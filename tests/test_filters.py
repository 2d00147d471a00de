"""extractors/_filters.py: scipy.signal's two IIR filters without importing scipy.signal give
scipy.signal's values, bit for bit, both ways (the compiled routines, and the fallback)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.signal
from conftest import REPO

from extractors import _filters, loudness


@pytest.fixture
def signals():
    rng = np.random.default_rng(7)
    return rng.standard_normal((44100, 2)).astype(np.float32), rng.standard_normal(30000)


@pytest.mark.parametrize("way", ["compiled", "fallback"])
def test_the_filters_give_scipy_signals_values(signals, monkeypatch, way):
    stereo, mono = signals
    if way == "fallback":
        monkeypatch.setattr(_filters, "compiled", lambda: None)
    else:
        assert _filters.compiled() is not None  # the pinned scipy takes the quick way
    sos = np.array(loudness.K_WEIGHTING)
    for axis, data in ((0, stereo), (-1, stereo.T), (0, mono)):
        assert np.array_equal(_filters.sosfilt(loudness.K_WEIGHTING, data, axis=axis),
                              scipy.signal.sosfilt(sos, np.asarray(data, np.float64), axis=axis))
    assert np.array_equal(_filters.lfilter(loudness.YULE_B, loudness.YULE_A, mono),
                          scipy.signal.lfilter(loudness.YULE_B, loudness.YULE_A, mono))
    assert np.array_equal(_filters.lfilter(loudness.BUTTER_B, loudness.BUTTER_A, stereo.T),
                          scipy.signal.lfilter(loudness.BUTTER_B, loudness.BUTTER_A, np.asarray(stereo.T, np.float64)))


def test_loudness_does_not_import_scipy_signal_and_a_later_import_shares_the_routines():
    code = """
import json, sys
import numpy as np
from extractors import loudness
rng = np.random.default_rng(3)
stereo = rng.standard_normal((3 * 44100, 2)) * 0.1
_, _, integrated, _ = loudness.ebu_r128(stereo)
gain = loudness.replay_gain(stereo.mean(axis=1))
before = "scipy.signal" in sys.modules
import scipy.signal  # afterwards, as another library might: the routines loaded are its own
from extractors import _filters
same = scipy.signal._signaltools._sosfilt is _filters.compiled()[0]
print(json.dumps([before, same, integrated, gain]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    before, same, integrated, gain = json.loads(done.stdout)
    assert before is False and same is True
    rng = np.random.default_rng(3)
    stereo = rng.standard_normal((3 * 44100, 2)) * 0.1
    assert integrated == loudness.ebu_r128(stereo)[2]
    assert gain == loudness.replay_gain(stereo.mean(axis=1))


def test_threads_share_one_load():
    """A Ray actor runs its jobs in threads: the modules are loaded once, and each gets them."""
    code = """
import concurrent.futures, json
from extractors import _filters
with concurrent.futures.ThreadPoolExecutor(8) as pool:
    got = list(pool.map(lambda _: _filters.compiled(), range(32)))
print(json.dumps([got[0] is not None, all(g == got[0] for g in got)]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [True, True]
