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


RATE = 44100


def load_model(params, device: str):  # type: ignore[no-untyped-def]
    from pesto.loader import load_model as load_pesto

    return load_pesto(params["model"], params["step_ms"], sampling_rate=RATE).to(device).eval()


def prepare(audio, params, info, inputs):  # type: ignore[no-untyped-def]
    """The bass stem (else the mix), mono at 44.1 kHz, one item."""
    stem = inputs.stems_mono("demucs", ("bass",))
    signal = stem if stem is not None else audio.mono()
    return signal[None], {"signal": signal, "source": "stems" if stem is not None else "mix"}


def forward(model, batch):  # type: ignore[no-untyped-def]
    """[B, samples] -> [B, frames, 2]: f0 in Hz and PESTO's confidence, every step_ms."""
    import torch

    f0, confidence, _, _ = model(batch, sr=RATE, convert_to_freq=True, return_activations=True)
    return torch.stack([f0, confidence], dim=-1)


def finish(audio, params, info, state, outputs, inputs):  # type: ignore[no-untyped-def]
    import numpy as np

    frames_out = np.concatenate(list(outputs))[0]
    f0, confidence = frames_out[:, 0], frames_out[:, 1]
    signal = state["signal"]
    hop = int(RATE * params["step_ms"] / 1000)
    frames = len(f0)
    padded = np.pad(signal, (hop // 2, hop * frames))
    rms = np.sqrt(np.array([np.mean(padded[i * hop : i * hop + hop] ** 2) for i in range(frames)]) + 1e-20)
    level = 20 * np.log10(rms)
    voiced = (level > level.max() + params["floor_db"]) & (level > -60) & (f0 > 0)
    result: dict[str, object] = {"bass_voiced_ratio": float(voiced.mean()) if frames else 0.0,
                                 "bass_source": state["source"]}
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
