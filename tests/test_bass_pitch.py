"""PESTO on a synthetic bass line: its pitch within a semitone, and the voiced share."""

from __future__ import annotations

import numpy as np
import pytest
from audio import write

from catalog import decode
from catalog.model_stage import run_here
from extractors import bass_pitch


def bass_line(notes: list[float], seconds_each: float = 0.75, sr: int = 44100) -> np.ndarray:
    parts = []
    for note in notes:
        t = np.arange(int(seconds_each * sr)) / sr
        if note is None:
            parts.append(np.zeros_like(t))
            continue
        f0 = 440 * 2 ** ((note - 69) / 12)
        parts.append(sum(a * np.sin(2 * np.pi * f0 * k * t) for k, a in ((1, 0.5), (2, 0.2), (3, 0.1))))
    return np.concatenate(parts).astype(np.float32)[:, None]


def run(tmp_path, samples):
    audio = decode.decode(str(write(tmp_path / "bass.wav", samples)))
    return run_here(bass_pitch, audio, bass_pitch.EXTRACTOR.params).values


def test_pesto_finds_the_bass_line_within_a_semitone(tmp_path):
    # E2 E2 G2 A2 E2: PESTO (trained on singing) makes octave errors below about E2 on thin
    # synthetic timbres; the README says so.
    result = run(tmp_path, bass_line([40, 40, 43, 45, 40]))
    assert result["bass_note_median"] == pytest.approx(40, abs=1)
    assert result["bass_f0_median"] == pytest.approx(82.4, rel=0.06)
    assert result["bass_voiced_ratio"] > 0.9 and result["bass_source"] == "mix"
    assert result["bass_pitch_range"] == pytest.approx(5, abs=1)


def test_silence_counts_as_unvoiced(tmp_path):
    half = run(tmp_path, bass_line([40, None, 40, None]))
    assert half["bass_voiced_ratio"] == pytest.approx(0.5, abs=0.06)
    silent = run(tmp_path, np.zeros((44100, 1), np.float32))
    assert silent["bass_voiced_ratio"] == 0.0 and silent["bass_f0_median"] is None
