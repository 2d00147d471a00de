"""Malformed audio, generated: each case is (file name, bytes, must_fail).

`must_fail` cases are broken by construction (random bytes, impossible headers, cut files);
the others (a few flipped bytes, a wrong extension) may still decode, and must then be read
correctly or fail cleanly, never crash.
"""

from __future__ import annotations

import io
import random
import struct

import numpy as np
import soundfile as sf


def _encoded(fmt: str, subtype: str | None, seconds: float, rng: random.Random, channels: int = 2) -> bytes:
    rate = 44100
    t = np.arange(int(rate * seconds)) / rate
    tone = 0.3 * np.sin(2 * np.pi * rng.uniform(80, 2000) * t)
    samples = np.repeat(tone[:, None], channels, axis=1).astype(np.float32)
    out = io.BytesIO()
    sf.write(out, samples, rate, format=fmt, subtype=subtype)
    return out.getvalue()


def wav_header(channels: int, rate: int, bits: int, data_bytes: int, tag: int = 1) -> bytes:
    """A canonical 44-byte WAV header with whatever values it is given."""
    block = max(channels * bits // 8, 0) & 0xFFFF
    fmt = struct.pack("<HHIIHH", tag & 0xFFFF, channels & 0xFFFF, rate & 0xFFFFFFFF,
                      (rate * block) & 0xFFFFFFFF, block, bits & 0xFFFF)
    return (b"RIFF" + struct.pack("<I", (36 + data_bytes) & 0xFFFFFFFF) + b"WAVE" + b"fmt "
            + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", data_bytes & 0xFFFFFFFF))


def flac_with_claimed_samples(body: bytes, total_samples: int) -> bytes:
    """A FLAC file whose STREAMINFO claims `total_samples` (36 bits)."""
    data = bytearray(body)
    # fLaC, block header (4 bytes), STREAMINFO: min/max block (4), min/max frame (6), then
    # 20 bits rate, 3 channels-1, 5 bits-1, 36 bits total samples.
    packed = int.from_bytes(data[18:26], "big")
    packed = (packed & ~((1 << 36) - 1)) | (total_samples & ((1 << 36) - 1))
    data[18:26] = packed.to_bytes(8, "big")
    return bytes(data)


def cases(rng: random.Random, count: int) -> list[tuple[str, bytes, bool]]:
    bases = {
        "wav": _encoded("WAV", "PCM_16", 1.0, rng),
        "flac": _encoded("FLAC", "PCM_16", 1.0, rng),
        "ogg": _encoded("OGG", "VORBIS", 1.0, rng),
        "mp3": _encoded("MP3", "MPEG_LAYER_III", 1.0, rng),
    }
    makers = [
        # (kind, must_fail, maker)
        ("random", True, lambda ext: (ext, rng.randbytes(rng.randint(1, 65536)))),
        ("empty", True, lambda ext: (ext, b"")),
        ("header-only", True, lambda ext: (ext, bases[ext][: rng.randint(4, 60)])),
        ("truncated", True, lambda ext: (ext, bases[ext][: int(len(bases[ext]) * rng.uniform(0.02, 0.6))])),
        ("zero-channels", True, lambda ext: ("wav", wav_header(0, 44100, 16, 4000) + rng.randbytes(4000))),
        ("absurd-rate", True, lambda ext: ("wav", wav_header(2, rng.choice([0, 1_000_000_000, 0xFFFFFFFF]), 16, 4000)
                                            + rng.randbytes(4000))),
        ("odd-bits", False, lambda ext: ("wav", wav_header(2, 44100, rng.choice([0, 3, 13, 64, 65535]), 4000)
                                        + rng.randbytes(4000))),
        ("unknown-tag", True, lambda ext: ("wav", wav_header(2, 44100, 16, 4000, tag=rng.choice([0, 0x1234, 0xFFFF]))
                                           + rng.randbytes(4000))),
        ("huge-claim-wav", True, lambda ext: ("wav", wav_header(2, 44100, 16, 0xFFFFFFF0) + rng.randbytes(8000))),
        ("huge-claim-flac", True, lambda ext: ("flac", flac_with_claimed_samples(bases["flac"], rng.choice(
            [44100 * 3000, 44100 * 3600 * 20, (1 << 36) - 1])))),
        ("many-channels", True, lambda ext: ("wav", wav_header(65535, 44100, 16, 4000) + rng.randbytes(4000))),
        ("random-m4a", False, lambda ext: ("m4a", rng.randbytes(rng.randint(1, 20000)))),
        ("bitflip", False, lambda ext: (ext, _flipped(bases[ext], rng))),
        ("wrong-extension", False, lambda ext: (rng.choice([e for e in bases if e != ext]), bases[ext])),
    ]
    made = []
    for i in range(count):
        kind, must_fail, maker = makers[i % len(makers)]
        ext, data = maker(rng.choice(sorted(bases)))
        made.append((f"{i:04d}-{kind}.{ext}", data, must_fail))
    return made


def _flipped(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 20)):
        position = rng.randrange(len(out))
        out[position] ^= 1 << rng.randrange(8)
    return bytes(out)
