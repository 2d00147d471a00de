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


def click_track(bpm: float = 128.0, seconds: float = 30.0, sr: int = 44100) -> np.ndarray:
    """Decaying 1 kHz clicks every beat, accented on the bar (mono)."""
    out = np.zeros(int(seconds * sr), np.float32)
    t = np.arange(int(0.03 * sr)) / sr
    for i, start in enumerate(np.arange(0, seconds, 60.0 / bpm)):
        gain = 0.9 if i % 4 == 0 else 0.6
        click = (gain * np.sin(2 * np.pi * 1000 * t) * np.exp(-t * 80)).astype(np.float32)
        a = int(start * sr)
        out[a : a + len(click)] += click[: len(out) - a]
    return out[:, None]


NOTE = {"C": 0, "C#": 1, "D": 2, "D#": 3, "E": 4, "F": 5, "F#": 6, "G": 7, "G#": 8, "A": 9, "A#": 10, "B": 11}


def chord_progression(chords=(("C", "E", "G"), ("F", "A", "C"), ("C", "E", "G"), ("G", "B", "D"),
                              ("C", "E", "G")), seconds_each: float = 3.0, sr: int = 44100) -> np.ndarray:
    """Piano-like chords (harmonics decaying 1/k, note envelopes), octave 4, mono."""
    t = np.arange(int(seconds_each * sr)) / sr
    envelope = np.minimum(1.0, t / 0.01) * np.exp(-t * 0.8)
    parts = []
    for chord in chords:
        tone = np.zeros_like(t)
        for note in chord:
            f0 = 261.63 * 2 ** (NOTE[note] / 12)
            for k in range(1, 6):
                tone += np.sin(2 * np.pi * f0 * k * t) / k
        parts.append(0.15 * tone * envelope)
    return np.concatenate(parts).astype(np.float32)[:, None]


def sine_at_rms(dbfs: float, freq: float = 1000.0, seconds: float = 10.0, sr: int = 44100, channels: int = 1) -> np.ndarray:
    """A sine whose RMS is `dbfs` (its peak is 3 dB higher)."""
    return sine(freq, seconds, sr, channels, db=dbfs + 20 * np.log10(np.sqrt(2)))


def white_noise(seconds: float = 20.0, sr: int = 44100, channels: int = 2, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal((int(seconds * sr), channels))).astype(np.float32)


def write_m4a(path: Path, samples: np.ndarray, sr: int = 44100) -> Path:
    """AAC in MP4, which soundfile cannot write, through PyAV (FFmpeg in its wheel)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    layout = "stereo" if samples.shape[1] == 2 else "mono"
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=sr)
        stream.layout = layout
        for start in range(0, len(samples), 1024):
            chunk = np.ascontiguousarray(samples[start : start + 1024].T, dtype=np.float32)
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate = sr
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path
