"""bass_pitch: the bass line's pitch with PESTO (its weights ship in its wheel), on demucs' bass
stem: it is available when demucs is. An audio whose separation failed is read on the mix (the
predominant low pitch), recorded as such, and turns stale once its stems exist.

A frame counts as voiced when it is within 40 dB of the signal's loudest frame and above
-60 dBFS: PESTO's own confidence is reported, but did not separate clean tones from noise in
our tests, so it does not decide voicing. Statistics are over voiced frames, 10 ms apart.
PESTO was trained on singing: on thin timbres below about E2 (82 Hz) it can read an octave high.
"""

from __future__ import annotations

from catalog.extractor import Extractor, Output

EXTRACTOR = Extractor(
    name="bass_pitch",
    version=1,
    device="gpu",
    uses=("demucs",),  # the bass stem
    needs=("demucs",),
    description="Bass f0 statistics (PESTO): median and spread in Hz and MIDI notes, voiced ratio.",
    params={"step_ms": 10.0, "model": "mir-1k_g7", "floor_db": -40.0},
    outputs=[
        Output("bass_f0_median", "Hz", (30, 400), "scalar", "Median f0 of voiced frames"),
        Output("bass_f0_mean", "Hz", (30, 400), "scalar", "Mean f0 of voiced frames"),
        Output("bass_note_median", "MIDI note", (23, 67), "scalar", "Median f0 as a MIDI note number (A4 = 69)"),
        Output("bass_pitch_std", "semitones", (0, 12), "scalar", "Spread of the pitch of voiced frames"),
        Output("bass_pitch_range", "semitones", (0, 36), "scalar", "5th to 95th percentile of the pitch"),
        Output("bass_voiced_ratio", "", (0, 1), "scalar", "Share of frames with a bass sounding"),
        Output("bass_pesto_confidence", "", (0, 1), "scalar", "PESTO's mean confidence over voiced frames"),
        Output("bass_source", "", None, "categorical", "What it listened to: stems (bass) or mix"),
    ],
)


def extract(audio, params):  # type: ignore[no-untyped-def]
    import numpy as np

    from catalog.devices import resolve

    device = resolve(audio.device)
    import pesto
    import torch

    stem = audio.stems_mono("demucs", ("bass",))
    signal = stem if stem is not None else audio.mono()
    rate, hop = 44100, int(44100 * params["step_ms"] / 1000)
    _, f0, confidence, _ = pesto.predict(torch.from_numpy(signal).to(device), rate,
                                         step_size=params["step_ms"], model_name=params["model"])
    f0, confidence = f0.cpu().numpy(), confidence.cpu().numpy()
    frames = len(f0)
    padded = np.pad(signal, (hop // 2, hop * frames))
    rms = np.sqrt(np.array([np.mean(padded[i * hop : i * hop + hop] ** 2) for i in range(frames)]) + 1e-20)
    level = 20 * np.log10(rms)
    voiced = (level > level.max() + params["floor_db"]) & (level > -60) & (f0 > 0)
    result: dict[str, object] = {"bass_voiced_ratio": float(voiced.mean()) if frames else 0.0,
                                 "bass_source": "stems" if stem is not None else "mix"}
    if not voiced.any():
        return {**result, "bass_f0_median": None, "bass_f0_mean": None, "bass_note_median": None,
                "bass_pitch_std": None, "bass_pitch_range": None, "bass_pesto_confidence": None}
    hz = f0[voiced].astype(np.float64)
    notes = 69 + 12 * np.log2(hz / 440)
    return {
        **result,
        "bass_f0_median": float(np.median(hz)),
        "bass_f0_mean": float(hz.mean()),
        "bass_note_median": float(np.median(notes)),
        "bass_pitch_std": float(notes.std()),
        "bass_pitch_range": float(np.percentile(notes, 95) - np.percentile(notes, 5)),
        "bass_pesto_confidence": float(confidence[voiced].mean()),
    }
