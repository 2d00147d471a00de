"""A third-party extractor for the tests, registered through the `muscat.extractors` entry point.

It can also kill its own worker process (a segfault, as a broken decoder might) on files whose
path contains `crash_on`, so tests can see a crash recorded and the rest carry on; and with
SIGKILL (as a lost node would) on files whose path contains `kill_on`, or once per file on
those whose path contains `kill_once_on` (leaving `<file>.killed` beside it), so tests can see
a job tried again elsewhere. (A Ray worker survives the SIGSEGV of a thread; SIGKILL is sure.)
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
    params={"crash_on": "", "kill_on": "", "kill_once_on": ""},
    outputs=[Output("peakiness", "", (1, 100), "scalar", "Sample peak over mean absolute sample")],
)


def extract(audio, params):
    if params["crash_on"] and params["crash_on"] in audio.path:
        os.kill(os.getpid(), signal.SIGSEGV)
    if params["kill_on"] and params["kill_on"] in audio.path:
        os.kill(os.getpid(), signal.SIGKILL)
    marker = audio.path + ".killed"
    if params["kill_once_on"] and params["kill_once_on"] in audio.path and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    mono = np.abs(audio.mono())
    return {"peakiness": float(mono.max() / mono.mean()) if mono.mean() > 0 else None}
