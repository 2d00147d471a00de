"""Synthesised test audio with known content, written with soundfile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

# soundfile's (format, subtype) per extension; OGG is written in blocks (a libvorbis bug
# crashes on long single writes).
FORMATS = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "opus": ("OGG", "OPUS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "aiff": ("AIFF", "PCM_16"),
}


def sine(freq: float = 440.0, seconds: float = 1.0, sr: int = 44100, channels: int = 1, db: float = -12.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    mono = (10 ** (db / 20)) * np.sin(2 * np.pi * freq * t)
    return np.repeat(mono[:, None], channels, axis=1).astype(np.float32)


def write(path: Path, samples: np.ndarray, sr: int = 44100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = path.suffix.lower().lstrip(".")
    fmt, subtype = FORMATS[ext]
    if ext == "opus":
        sr = 48000 if sr not in (8000, 12000, 16000, 24000, 48000) else sr
    with sf.SoundFile(path, "w", samplerate=sr, channels=samples.shape[1], format=fmt, subtype=subtype) as f:
        for start in range(0, len(samples), 65536):
            f.write(samples[start : start + 65536])
    return path


def build_library(root: Path) -> dict[str, list[Path]]:
    """A small library: real audio in several formats and folders, some broken files, and
    things a scanner must not take (hidden files, other extensions, a folder named like audio).
    """
    good = [
        write(root / "Artist A" / "Album 1" / "01 Intro.flac", sine(220, 0.5)),
        write(root / "Artist A" / "Album 1" / "02 Song.wav", sine(330, 0.5, channels=2)),
        write(root / "Artist A" / "Album 2" / "01 Other.mp3", sine(440, 0.5)),
        write(root / "Artist B" / "Live" / "01 Opener.ogg", sine(550, 0.5, channels=2)),
        write(root / "Artist B" / "Live" / "02 Encore.aiff", sine(660, 0.5)),
        write(root / "Artist B" / "Ünïcödé 曲" / "01 Ñame.opus", sine(770, 0.5)),
        write(root / "loose.flac", sine(880, 0.25)),
    ]
    broken = []
    empty = root / "Broken" / "empty.flac"
    empty.parent.mkdir(parents=True, exist_ok=True)
    empty.write_bytes(b"")
    broken.append(empty)
    text = root / "Broken" / "notes.mp3"
    text.write_text("this is not audio\n")
    broken.append(text)
    noise = root / "Broken" / "random.wav"
    noise.write_bytes(np.random.default_rng(1).bytes(5000))
    broken.append(noise)
    ignored = []
    for rel in [".hidden.flac", "Artist A/.DS_Store", "Artist A/cover.jpg", "Artist A/Album 1/notes.txt",
                ".hidden_dir/track.flac"]:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
        ignored.append(p)
    # A folder whose name looks like an audio file: a folder, not a file; its contents count.
    inside = write(root / "Weird.flac" / "inside.wav", sine(440, 0.25))
    good.append(inside)
    return {"good": good, "broken": broken, "ignored": ignored}
