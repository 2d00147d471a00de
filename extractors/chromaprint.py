"""chromaprint: an acoustic fingerprint (Chromaprint, AcoustID's), to find the same recording in
other encodings: an MP3 and a FLAC of one master are one recording to a model, and a training
set that has one in `train` and the other in `test` leaks (`muscat duplicates`, `muscat split`).

Computed with libchromaprint through pyacoustid's ctypes binding (`chromaprint` module), fed the
samples muscat has decoded anyway (16-bit PCM, first `max_seconds`), so nothing is decoded twice
and no `fpcalc` binary is needed. libchromaprint is a system library (Debian: libchromaprint1,
which Debian's ffmpeg already pulls in; macOS: `brew install chromaprint`); without it the
extractor is unavailable, with that reason. The value is the compressed, base64 form that
`fpcalc` prints and AcoustID takes. Audio too short or too steady to tell apart (under 3 s,
digital silence, one held tone: every frame hashes alike) gets NULL, so it is never taken for a
duplicate of everything else like it; catalog/duplicates.py compares the fingerprints.
"""

from __future__ import annotations

import os
import sys

from catalog.extractor import Extractor, Output

EXTRACTOR = Extractor(
    name="chromaprint",
    version=1,
    device="cpu",
    description="Chromaprint acoustic fingerprint of the first max_seconds (libchromaprint), for near-duplicates.",
    params={"max_seconds": 120.0},
    outputs=[
        Output("chromaprint", "", None, "categorical",
               "Chromaprint fingerprint, compressed and base64 as fpcalc prints it; NULL when too short or steady"),
        Output("chromaprint_seconds", "s", (0, 120), "scalar", "Seconds of audio the fingerprint covers"),
    ],
)

# Chromaprint makes about 8 items (32-bit hashes) a second; fewer than this many, or this few
# distinct ones, cannot tell one recording from another.
MIN_ITEMS = 24
MIN_DISTINCT_SHARE = 0.2
BLOCK_FRAMES = 1 << 18


# The names pyacoustid's `chromaprint` module loads on Linux, in its order.
LIBRARY_NAMES = ("libchromaprint.so.1", "libchromaprint.so.0")
LD_SO_CACHE = "/etc/ld.so.cache"  # glibc's list of the libraries in its search folders


def _elf_kind(path: str) -> bytes | None:
    """The ELF class, byte order and machine of a file (what the loader matches), or None."""
    try:
        with open(path, "rb") as f:
            header = f.read(20)
    except OSError:
        return None
    return header[4:6] + header[18:20] if header[:4] == b"\x7fELF" and len(header) == 20 else None


def library_found() -> bool:
    """Whether the dynamic loader would find libchromaprint for this Python, looked up where it
    looks (LD_LIBRARY_PATH, then /etc/ld.so.cache) without loading it. Loading it maps FFmpeg's
    libavcodec and about 90 other libraries: ~50 ms of CPU that every `muscat status` paid for
    its availability check. False where this cannot tell (not glibc Linux): then it is loaded."""
    if not sys.platform.startswith("linux"):
        return False
    own = _elf_kind("/proc/self/exe")
    if own is None:
        return False
    candidates = [os.path.join(folder, name) for folder in os.environ.get("LD_LIBRARY_PATH", "").split(":")
                  if folder for name in LIBRARY_NAMES]
    try:
        with open(LD_SO_CACHE, "rb") as f:
            cache = f.read()
    except OSError:
        cache = b""
    for name in LIBRARY_NAMES:  # the cache holds each library's soname and full path, NUL-ended
        needle = b"/" + name.encode() + b"\0"
        at = cache.find(needle)
        while at >= 0:
            start = cache.rfind(b"\0", 0, at) + 1
            candidates.append(cache[start : at + len(needle) - 1].decode(errors="replace"))
            at = cache.find(needle, at + 1)
    return any(_elf_kind(path) == own for path in candidates)


def available(params):  # type: ignore[no-untyped-def]
    if not library_found():
        try:
            import chromaprint  # noqa: F401  (loads libchromaprint with ctypes on import)
        except ImportError as exc:
            return (f"libchromaprint is not installed ({exc}): install it (Debian/Ubuntu: apt install "
                    "libchromaprint1; macOS: brew install chromaprint)")
    if not params["max_seconds"] > 0:
        return f"max_seconds must be positive, not {params['max_seconds']!r}"
    return None


def extract(audio, params):  # type: ignore[no-untyped-def]
    import chromaprint
    import numpy as np

    samples = audio.whole()
    frames = min(len(samples), int(params["max_seconds"] * audio.sample_rate))
    printer = chromaprint.Fingerprinter()
    printer.start(audio.sample_rate, samples.shape[1])
    for start in range(0, frames, BLOCK_FRAMES):  # 16-bit interleaved, as libchromaprint takes it
        block = samples[start : min(frames, start + BLOCK_FRAMES)]
        printer.feed(np.round(np.clip(block, -1.0, 1.0) * 32767).astype("<i2").tobytes())
    encoded = printer.finish()
    items, _ = chromaprint.decode_fingerprint(encoded)
    seconds = frames / audio.sample_rate if audio.sample_rate else 0.0
    steady = len(items) < MIN_ITEMS or len(set(items)) < MIN_DISTINCT_SHARE * len(items)
    return {"chromaprint": None if steady else encoded.decode("ascii"), "chromaprint_seconds": seconds}
