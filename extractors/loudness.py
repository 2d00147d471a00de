"""loudness: EBU R128 loudness, peaks and dynamics.

A mono file is measured as [m, 0] (one loudspeaker), not as two copies (+3 dB). Levels of
digital silence are floored: loudness at -70 LUFS (the R128 absolute gate), peaks and RMS at
-120 dBFS.
"""

from __future__ import annotations

import numpy as np

from catalog.extractor import Extractor, Output

EXTRACTOR = Extractor(
    name="loudness",
    version=1,
    device="cpu",
    description="EBU R128 loudness (Essentia), true and sample peak, RMS, dynamics, ReplayGain.",
    params={"true_peak_oversampling": 4},
    outputs=[
        Output("loudness_integrated", "LUFS", (-70, 0), "scalar", "EBU R128 integrated loudness (gated)"),
        Output("loudness_range", "LU", (0, 30), "scalar", "EBU R128 loudness range (LRA)"),
        Output("loudness_momentary_max", "LUFS", (-70, 3), "scalar", "Loudest 400 ms window"),
        Output("loudness_short_term_max", "LUFS", (-70, 3), "scalar", "Loudest 3 s window"),
        Output("true_peak", "dBTP", (-60, 3), "scalar", "Highest inter-sample peak (4x oversampled)"),
        Output("sample_peak", "dBFS", (-60, 0), "scalar", "Highest absolute sample value"),
        Output("rms", "dBFS", (-60, 0), "scalar", "RMS level over all channels"),
        Output("crest_factor", "dB", (0, 40), "scalar", "Sample peak over RMS"),
        Output("dynamic_complexity", "dB", (0, 20), "scalar", "Average deviation from the mean loudness (Essentia)"),
        Output("replay_gain", "dB", (-30, 30), "scalar", "Gain to bring the track to ReplayGain's 89 dB reference"),
    ],
)


def _true_peak(stereo: np.ndarray, factor: int) -> float:
    """Largest absolute value of the signal upsampled `factor` times (windowed-sinc, 12 taps/phase)."""
    if factor <= 1:
        return float(np.max(np.abs(stereo)))
    taps = 12
    n = np.arange(-taps // 2 * factor, taps // 2 * factor) / factor
    kernel = np.sinc(n) * np.kaiser(len(n), 8.0)
    peak = 0.0
    for channel in stereo.T:
        for phase in range(factor):
            sub = kernel[phase::factor].astype(np.float32)
            filtered = np.convolve(channel, sub, mode="same")
            peak = max(peak, float(np.max(np.abs(filtered))))
    return max(peak, float(np.max(np.abs(stereo))))


def extract(audio, params):  # type: ignore[no-untyped-def]
    import essentia.standard as es

    from extractors._levels import LUFS_FLOOR, power_to_db, to_db

    stereo = audio.stereo()
    mono = audio.mono()
    silent = not np.any(stereo)
    if silent or len(mono) < 44100 * 0.4:
        momentary = short_term = np.array([LUFS_FLOOR])
        integrated, lra = LUFS_FLOOR, 0.0
    else:
        momentary, short_term, integrated, lra = es.LoudnessEBUR128(sampleRate=44100, startAtZero=True)(stereo)
    sample_peak = float(np.max(np.abs(stereo)))
    channels = audio.channels if audio.channels <= 2 else 2
    mean_square = float(np.mean(stereo[:, :channels].astype(np.float64) ** 2))
    rms = power_to_db(mean_square)
    dynamic = es.DynamicComplexity(sampleRate=44100)(mono)[0] if not silent else 0.0
    try:
        replay_gain = es.ReplayGain(sampleRate=44100)(mono) if not silent else None
    except RuntimeError:  # shorter than ReplayGain's 50 ms window
        replay_gain = None
    return {
        "loudness_integrated": max(LUFS_FLOOR, float(integrated)),
        "loudness_range": float(lra),
        "loudness_momentary_max": max(LUFS_FLOOR, float(np.max(momentary))),
        "loudness_short_term_max": max(LUFS_FLOOR, float(np.max(short_term))),
        "true_peak": to_db(_true_peak(stereo, params["true_peak_oversampling"])),
        "sample_peak": to_db(sample_peak),
        "rms": rms,
        "crest_factor": to_db(sample_peak) - rms if not silent else 0.0,
        "dynamic_complexity": float(dynamic),
        "replay_gain": replay_gain,
    }
