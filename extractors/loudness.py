"""loudness: EBU R128 loudness, peaks and dynamics.

A mono file is measured as [m, 0] (one loudspeaker), not as two copies (+3 dB). Levels of
digital silence are floored: loudness at -70 LUFS (the R128 absolute gate), peaks and RMS at
-120 dBFS.
"""

from __future__ import annotations

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


def _true_peak(stereo, factor: int) -> float:  # type: ignore[no-untyped-def]
    """Largest absolute value of the signal upsampled `factor` times.

    Windowed-sinc interpolation, 12 taps per phase (as ITU-R BS.1770-4 suggests), computed as a
    matrix product of sliding windows with the polyphase kernel, block by block.
    """
    import numpy as np
    from numpy.lib.stride_tricks import sliding_window_view

    sample_peak = float(np.max(np.abs(stereo))) if stereo.size else 0.0
    if factor <= 1 or len(stereo) < 12:
        return sample_peak
    taps = 12
    offsets = np.arange(taps)[:, None] - taps // 2 + 1 - np.arange(factor)[None, :] / factor
    kernel = (np.sinc(offsets) * np.kaiser(taps, 5.0)[:, None]).astype(np.float32)  # [taps, factor]
    peak = sample_peak
    block = 1 << 16
    for channel in np.asarray(stereo, dtype=np.float32).T:
        padded = np.concatenate([np.zeros(taps, np.float32), channel, np.zeros(taps, np.float32)])
        for start in range(0, len(padded) - taps + 1, block):
            windows = sliding_window_view(padded[start : start + block + taps - 1], taps)
            peak = max(peak, float(np.max(np.abs(windows @ kernel))))
    return peak


def extract(audio, params):  # type: ignore[no-untyped-def]
    import essentia.standard as es
    import numpy as np

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
    channels = min(audio.channels, 2)  # a mono file's second channel is the silent one
    mean_square = sum(float(np.dot(stereo[:, c], stereo[:, c])) for c in range(channels)) / (len(stereo) * channels)
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
