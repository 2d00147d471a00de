"""catalog/signal_filters.py: scipy.signal's filters, bit for bit, without importing scipy.signal."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent

# What a worker computes first: loudness of a track, with the filters loaded alone. The values
# are printed (the arrays as SHA-256 of their bytes) and compared with scipy.signal's own below.
LOUDNESS = """
import hashlib, sys
import numpy as np
from catalog.signal_filters import lfilter, sosfilt
from extractors import loudness
rng = np.random.default_rng(7)
stereo = (0.3 * rng.standard_normal((44100 * 4, 2))).astype(np.float32)
out = [sosfilt(np.array(loudness.K_WEIGHTING), stereo, axis=0), sosfilt(loudness.K_WEIGHTING[0], stereo[:, 0]),
       lfilter(loudness.BUTTER_B, loudness.BUTTER_A, lfilter(loudness.YULE_B, loudness.YULE_A, stereo[:, 0].astype(np.float64))),
       lfilter(loudness.BUTTER_B, loudness.BUTTER_A, stereo, axis=0)]
assert "scipy.signal" not in sys.modules, "scipy.signal imported"
print(repr([hashlib.sha256(a.tobytes()).hexdigest() for a in out]), repr([str(a.dtype) for a in out]),
      repr(loudness.ebu_r128(stereo)[2:]), repr(loudness.replay_gain(stereo.mean(axis=1))))
import scipy.signal  # later, alongside the modules loaded alone
assert np.array_equal(scipy.signal.sosfilt(np.array(loudness.K_WEIGHTING), stereo, axis=0), out[0])
"""


def test_the_filters_are_scipy_signals_bit_for_bit_and_scipy_signal_is_not_imported():
    out = subprocess.run([sys.executable, "-c", LOUDNESS], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    alone = out.stdout
    import scipy.signal  # from here on, the module's functions are scipy.signal's own

    from extractors import loudness

    rng = np.random.default_rng(7)
    stereo = (0.3 * rng.standard_normal((44100 * 4, 2))).astype(np.float32)
    reference = [scipy.signal.sosfilt(np.array(loudness.K_WEIGHTING), stereo, axis=0),
                 scipy.signal.sosfilt(loudness.K_WEIGHTING[0], stereo[:, 0]),
                 scipy.signal.lfilter(loudness.BUTTER_B, loudness.BUTTER_A,
                                      scipy.signal.lfilter(loudness.YULE_B, loudness.YULE_A,
                                                           stereo[:, 0].astype(np.float64))),
                 scipy.signal.lfilter(loudness.BUTTER_B, loudness.BUTTER_A, stereo, axis=0)]
    expected = (f"{[hashlib.sha256(a.tobytes()).hexdigest() for a in reference]!r} {[str(a.dtype) for a in reference]!r} "
                f"{loudness.ebu_r128(stereo)[2:]!r} {loudness.replay_gain(stereo.mean(axis=1))!r}\n")
    assert alone == expected


def test_bad_filters_are_refused_as_scipy_refuses_them():
    from catalog.signal_filters import sosfilt

    with pytest.raises(ValueError, match="n_sections, 6"):
        sosfilt(np.ones((2, 5)), np.ones(10))
    with pytest.raises(ValueError, match="at least 1-D"):
        sosfilt(np.array([1.0, 0, 0, 1, 0, 0]), np.float64(1.0))
