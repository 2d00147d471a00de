"""A third-party extractor for the tests, registered through the `muscat.extractors` entry point.

It can also kill its own worker process (a segfault, as a broken decoder might) on files whose
path contains `crash_on`, so tests can see a crash recorded and the rest carry on.
"""

import os
import signal

import numpy as np

from catalog.extractor import Extractor, Output

EXTRACTOR = Extractor(
    name="peakiness",
    version=1,
    device="cpu",
    description="Peak over mean absolute value (test plugin).",
    params={"crash_on": ""},
    outputs=[Output("peakiness", "", (1, 100), "scalar", "Sample peak over mean absolute sample")],
)


def extract(audio, params):
    if params["crash_on"] and params["crash_on"] in audio.path:
        os.kill(os.getpid(), signal.SIGSEGV)
    mono = np.abs(audio.mono())
    return {"peakiness": float(mono.max() / mono.mean()) if mono.mean() > 0 else None}
