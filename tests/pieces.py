"""A small dataset of distinct synthetic pieces, one of them in several encodings and gains,
encoded by real encoders (PyAV's FFmpeg encoders, Debian's lame), tagged with genres, scanned
and extracted by the real `muscat` commands: what `similar`, `plot` and `report` are tested on.

Each piece differs from the others in tempo, key, register and timbre (the partials of its
notes), so a similarity measure that works must find the variants of piece A before any other
piece, on every aspect. `build(root)` writes the files; `catalogue(folder)` also scans and
extracts them into `folder/cat.duckdb` (only the CPU extractors these tests need).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from formats import encode_av, run_tool, write_wav16

RATE = 44100
SECONDS = 8.0
EXTRACTORS = "spectral,hpcp,key,rhythm,loudness"


@dataclass(frozen=True)
class Piece:
    bpm: float
    notes: tuple[int, ...]  # semitones above C4, in turn
    partials: tuple[float, ...]  # amplitude of harmonic k = 1, 2, ...
    decay: float  # per second
    octave: int = 0
    noise: float = 0.0  # share of a noise burst in each attack (percussive pieces)
    per_beat: int = 1  # notes per beat; those off the beat softer


PIECES = {
    "a": Piece(120, (0, 4, 7, 12, 7, 4, 2, 5), (1, 1 / 2, 1 / 3, 1 / 4, 1 / 5), 3.0, per_beat=2),
    "b": Piece(150, (4, 7, 11, 16, 14, 11, 7, 6), tuple(1 / np.sqrt(k) for k in range(1, 13)), 6.0, octave=1),
    "c": Piece(76, (5, 9, 12, 9), (1, 0.1), 0.7),
    "d": Piece(100, (0, 0, 7, 0), (1, 0.5), 12.0, octave=-2, noise=0.8),
    "e": Piece(135, (10, 13, 17, 22, 17, 13), tuple((1 / k if k % 2 else 0) for k in range(1, 10)), 2.0, octave=-1),
}


def render(piece: Piece, seconds: float = SECONDS, rate: int = RATE, gain_db: float = 0.0) -> np.ndarray:
    """The piece as float32 stereo [frames, 2], deterministic."""
    frames = int(seconds * rate)
    out = np.zeros(frames)
    step = 60.0 / piece.bpm / piece.per_beat
    rng = np.random.default_rng(7)
    for i, start_s in enumerate(np.arange(0, seconds, step)):
        start = int(start_s * rate)
        stop = min(frames, start + int(2.5 * rate))
        t = np.arange(stop - start) / rate
        envelope = np.minimum(1.0, t / 0.004) * np.exp(-t * piece.decay)
        f0 = 261.63 * 2 ** (piece.notes[i % len(piece.notes)] / 12 + piece.octave)
        tone = sum(a * np.sin(2 * np.pi * f0 * k * t) for k, a in enumerate(piece.partials, 1) if a and f0 * k < 18000)
        if piece.noise:
            tone = tone + piece.noise * rng.standard_normal(len(t)) * np.exp(-t * 40)
        accent = 1.0 if i % piece.per_beat == 0 else 0.6
        out[start:stop] += 0.2 * accent * envelope * tone
    out *= 10 ** (gain_db / 20)
    stereo = np.stack([out, 0.9 * out], axis=1)
    return np.clip(stereo, -1, 1).astype(np.float32)


# The variants of piece A: (file name, how it is made). The copy is the same audio as the
# original (it must never be listed as similar to it); the others are other audio of one piece.
VARIANTS = ("a-quiet.wav", "a.mp3", "a.m4a", "a-loud.ogg")
GENRES = {"a": "pop", "b": "rock", "c": "ambient", "d": "techno", "e": "rock"}


def build(root: Path) -> dict[str, Path]:
    """Write the files; returns name -> path."""
    from mutagen import File as Tagged

    root.mkdir(parents=True, exist_ok=True)
    made: dict[str, Path] = {}

    def av(name: str, codec: str, muxer: str, samples: np.ndarray, **kw) -> None:
        made[name] = root / name
        encode_av(made[name], codec, muxer, samples=samples, **kw)

    a = render(PIECES["a"])
    av("a.flac", "flac", "flac", a)
    made["a-copy.flac"] = root / "copies" / "a-copy.flac"
    made["a-copy.flac"].parent.mkdir()
    shutil.copyfile(made["a.flac"], made["a-copy.flac"])
    av("a-quiet.wav", "pcm_s16le", "wav", render(PIECES["a"], gain_db=-6))
    wav = write_wav16(root.parent / "lame-input.wav", a, RATE)  # outside the library
    made["a.mp3"] = root / "a.mp3"
    run_tool("lame", "--quiet", "-b", "128", wav, made["a.mp3"])  # Debian's lame
    wav.unlink()
    av("a.m4a", "aac", "ipod", a, bit_rate=128_000)
    av("a-loud.ogg", "vorbis", "ogg", render(PIECES["a"], gain_db=3), strict=True)
    for name in ("b", "c", "d", "e"):
        av(f"{name}.flac", "flac", "flac", render(PIECES[name]))
    for name, path in made.items():
        if path.suffix == ".wav":
            continue
        tagged = Tagged(path, easy=True)
        if tagged.tags is None:
            tagged.add_tags()
        tagged["genre"] = GENRES[name[0]]
        tagged["artist"] = f"Artist {name[0].upper()}"
        tagged.save()
    broken = root / "broken.flac"  # a failure for the report to show
    broken.write_bytes(made["b.flac"].read_bytes()[:3000])
    made["broken.flac"] = broken
    return made


def catalogue(folder: Path) -> tuple[Path, dict[str, Path]]:
    """Build, scan and extract; returns the catalogue's path and the files."""
    from conftest import run_muscat

    files = build(folder / "Music")
    db = folder / "cat.duckdb"
    scanned = run_muscat("scan", str(folder / "Music"), db=db)
    assert scanned.returncode == 0, scanned.stderr
    extracted = run_muscat("extract", "--only", EXTRACTORS, "--workers", "2", db=db, timeout=600)
    assert extracted.returncode == 1, extracted.stderr  # the broken file fails, the rest is done
    return db, files
