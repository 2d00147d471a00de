"""The audio ids that muscat gave lossy files before the "packets" rule (catalog/decode.py).

Until then every audio id was a hash of the decoded samples, from libsndfile or, for what it
could not read (M4A, WMA), Essentia's FFmpeg loader. For lossless audio that is still the rule;
for lossy audio those ids depend on the decoder's version, so muscat now hashes the encoded
packets instead. A catalogue written before keeps its ids: when muscat next decodes such a
file (it changed, or an extractor needs it) and the new id differs from the one on record, it
computes the old one here; if that matches, the audio is the same and its id is carried over to
the new rule with all its results (the writer's re-keying). Nothing else uses this module.
"""

from __future__ import annotations

import os

import numpy as np

from .decode import BLOCK_FRAMES, pcm_hasher


def legacy_audio_id(path: str) -> str | None:
    """The id the decoders before the packets rule gave `path`, or None if they could not read it."""
    try:
        return _soundfile_id(path)
    except Exception:  # noqa: BLE001 - not for libsndfile: it went to Essentia's loader then
        pass
    try:
        return _essentia_id(path)
    except Exception:  # noqa: BLE001 - neither read it: there is no old id to match
        return None


def _soundfile_id(path: str) -> str:
    import soundfile as sf

    with sf.SoundFile(os.fsencode(path)) as f:
        digest = pcm_hasher(f.samplerate, f.channels)
        while True:
            block = f.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
            if len(block) == 0:
                return digest.hexdigest()
            digest.update(memoryview(np.ascontiguousarray(block)).cast("B"))


def _essentia_id(path: str) -> str:
    from .essentia_import import load

    es = load()
    loaded = es.AudioLoader(filename=path)()
    samples, rate, channels = loaded[0], int(loaded[1]), int(loaded[2])
    samples = np.ascontiguousarray(samples[:, :channels], dtype=np.float32)
    digest = pcm_hasher(rate, channels)
    for start in range(0, len(samples), BLOCK_FRAMES):
        digest.update(samples[start : start + BLOCK_FRAMES].tobytes())
    return digest.hexdigest()
