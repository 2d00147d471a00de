"""loudness: EBU R128 loudness, peaks and dynamics.

A mono file is measured as [m, 0] (one loudspeaker), not as two copies (+3 dB). Levels of
digital silence are floored: loudness at -70 LUFS (the R128 absolute gate), peaks and RMS at
-120 dBFS.

EBU R128 and ReplayGain are computed here with scipy's filters over the whole track (version 2;
version 1 called Essentia's LoudnessEBUR128 and ReplayGain: 1.5 s of CPU for a 3-minute track,
now 0.4 s). They follow Essentia's algorithms step by step, with its filter coefficients at
44.1 kHz, so the values stay Essentia's: integrated loudness, range and maxima within 0.05 LU of
LoudnessEBUR128's on our synthesised music (tests/test_cpu_parity.py holds them to 0.1 LU),
ReplayGain within 0.01 dB.
- K-weighting: Essentia's two biquads (shelf, then RLB high-pass), per channel; the powers of
  the channels summed.
- Blocks of 400 ms (momentary, and the gating blocks of the integrated loudness) and 3 s (short
  term), every 100 ms, the first centred on the first sample and the last past the end, zeros
  outside the track (Essentia's startAtZero framing); a block's power is its mean.
- Integrated: the blocks above -70 LUFS, then those above their mean power less 10 LU; LRA:
  short-term blocks above -70 LUFS, then above their mean less 20 LU, the 95th less the 10th
  percentile (the nearest rank, as Essentia's).
- ReplayGain: the equal-loudness filter (the ReplayGain proposal's 10th-order Yule-Walk and
  2nd-order Butterworth high-pass), the power of 50 ms blocks, the 95th percentile against
  Essentia's pink-noise reference.
The filters are scipy.signal's, called through catalog/signal_filters.py: importing scipy.signal
cost each worker more CPU (1.7 s) than loudness takes for a 3-minute track.
"""

from __future__ import annotations

from catalog.extractor import Extractor, Output

EXTRACTOR = Extractor(
    name="loudness",
    version=2,  # 2: EBU R128 and ReplayGain in scipy (integrated within 0.05 LU of version 1)
    device="cpu",
    description="EBU R128 loudness, true and sample peak, RMS, dynamics (Essentia), ReplayGain.",
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


RATE = 44100
BLOCK_HOP = 4410  # 100 ms between blocks
# K-weighting at 44.1 kHz as second-order sections [b0 b1 b2 a0 a1 a2]: Essentia's coefficients
# (LoudnessEBUR128Filter), so that our values are its values; the shelf, then the high-pass.
K_WEIGHTING = ((1.535, -2.633, 1.151, 1.0, -1.647, 0.701), (1.0, -2.0, 1.0, 1.0, -1.9891, 0.98913))
# ReplayGain's equal-loudness filter at 44.1 kHz (the ReplayGain proposal, as in Essentia's
# EqualLoudness): a 10th-order Yule-Walk filter, then a 2nd-order Butterworth high-pass.
YULE_B = (0.05418656406430, -0.02911007808948, -0.00848709379851, -0.00851165645469, -0.00834990904936,
          0.02245293253339, -0.02596338512915, 0.01624864962975, -0.00240879051584, 0.00674613682247,
          -0.00187763777362)
YULE_A = (1.0, -3.47845948550071, 6.36317777566148, -8.54751527471874, 9.47693607801280, -8.81498681370155,
          6.85401540936998, -4.39470996079559, 2.19611684890774, -0.75104302451432, 0.13149317958808)
BUTTER_B = (0.98500175787242, -1.97000351574484, 0.98500175787242)
BUTTER_A = (1.0, -1.96977855582618, 0.97022847566350)
REPLAY_GAIN_REFERENCE = -31.492595672607422  # dB: Essentia's level of the ReplayGain pink noise


def _block_powers(cumulative, length: int, size: int):  # type: ignore[no-untyped-def]
    """Mean power of the blocks of `size` samples every BLOCK_HOP, the first centred on sample 0,
    from the cumulative sum of the power (zeros outside the track)."""
    import numpy as np

    start = np.arange(-(-length // BLOCK_HOP) + 1) * BLOCK_HOP - size // 2
    return (cumulative[np.clip(start + size, 0, length)] - cumulative[np.clip(start, 0, length)]) / size


def _power_to_lufs(power):  # type: ignore[no-untyped-def]
    import numpy as np

    return 10 * np.log10(np.maximum(power, 1e-30)) - 0.691


def ebu_r128(stereo):  # type: ignore[no-untyped-def]
    """(momentary, short_term) block loudnesses (LUFS), integrated loudness and range (module doc)."""
    import numpy as np

    from catalog.signal_filters import sosfilt

    filtered = sosfilt(np.array(K_WEIGHTING), stereo, axis=0)
    cumulative = np.concatenate([[0.0], np.cumsum(np.einsum("ij,ij->i", filtered, filtered))])
    del filtered
    momentary = _block_powers(cumulative, len(stereo), int(round(0.4 * RATE)))
    short_term = _block_powers(cumulative, len(stereo), 3 * RATE)
    absolute = 10 ** ((-70 + 0.691) / 10)
    gated = momentary[momentary >= absolute]
    relative = max(gated.mean() / 10, absolute) if len(gated) else absolute  # 10 LU below
    gated = momentary[momentary >= relative]
    integrated = float(_power_to_lufs(gated.mean() if len(gated) else absolute))
    gated = short_term[short_term >= absolute]
    relative = max(gated.mean() / 100, absolute) if len(gated) else absolute  # 20 LU below
    gated = np.sort(short_term[short_term >= relative])
    if len(gated):
        high, low = gated[int(round(0.95 * (len(gated) - 1)))], gated[int(round(0.1 * (len(gated) - 1)))]
        loudness_range = float(_power_to_lufs(high) - _power_to_lufs(low))
    else:
        loudness_range = 0.0
    return _power_to_lufs(momentary), _power_to_lufs(short_term), integrated, loudness_range


def replay_gain(mono) -> float | None:  # type: ignore[no-untyped-def]
    """ReplayGain (dB) as Essentia's; None when shorter than one 50 ms block."""
    import numpy as np

    from catalog.signal_filters import lfilter

    window = int(RATE * 0.05)
    count = len(mono) // window
    if count == 0:
        return None
    equal = lfilter(BUTTER_B, BUTTER_A, lfilter(YULE_B, YULE_A, np.asarray(mono, np.float64)))
    blocks = equal[: count * window].reshape(count, window)
    powers = np.sort(np.einsum("ij,ij->i", blocks, blocks) / window)
    return REPLAY_GAIN_REFERENCE - 10 * float(np.log10(max(powers[int(0.95 * count)], 1e-10)))


def _true_peak(stereo, factor: int) -> float:  # type: ignore[no-untyped-def]
    """Largest absolute value of the signal upsampled `factor` times.

    Windowed-sinc interpolation, 12 taps per phase (as ITU-R BS.1770-4 suggests), computed as a
    matrix product of sliding windows with the polyphase kernel. Only windows that can beat the
    sample peak are computed: no phase of the kernel sums (in absolute value) to more than `gain`,
    so a window whose largest sample is under sample peak / gain cannot exceed it. That is a few
    percent of the windows on music (0.03 s a 3-minute track instead of 0.5 s), the same maximum.
    """
    import numpy as np
    from numpy.lib.stride_tricks import sliding_window_view

    sample_peak = float(np.max(np.abs(stereo))) if stereo.size else 0.0
    if factor <= 1 or len(stereo) < 12 or sample_peak == 0:
        return sample_peak
    taps, run = 12, 64  # windows are looked at in runs of 64 consecutive starts
    offsets = np.arange(taps)[:, None] - taps // 2 + 1 - np.arange(factor)[None, :] / factor
    kernel = (np.sinc(offsets) * np.kaiser(taps, 5.0)[:, None]).astype(np.float32)  # [taps, factor]
    gain = float(np.abs(kernel).sum(axis=0).max()) * 1.001  # the margin: float32 sums
    peak = sample_peak
    for channel in np.asarray(stereo, dtype=np.float32).T:
        padded = np.concatenate([np.zeros(taps, np.float32), channel, np.zeros(taps + 2 * run, np.float32)])
        starts = len(padded) - 2 * run - taps + 1  # windows padded[i : i + taps], as before the runs' padding
        runs = -(-starts // run)
        largest = np.abs(padded[: (runs + 1) * run]).reshape(runs + 1, run).max(axis=1)
        # the windows starting in run j lie within runs j and j + 1 (taps <= run)
        hopeful = np.flatnonzero(np.maximum(largest[:-1], largest[1:]) * gain > peak)
        if len(hopeful) == 0:
            continue
        windows = sliding_window_view(padded, taps)
        for chunk in range(0, len(hopeful), 1024):  # bounded memory on loud masters
            at = (hopeful[chunk : chunk + 1024, None] * run + np.arange(run)).ravel()
            at = at[at < starts]
            peak = max(peak, float(np.max(np.abs(windows[at] @ kernel))))
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
        momentary, short_term, integrated, lra = ebu_r128(stereo)
    sample_peak = float(np.max(np.abs(stereo)))
    channels = min(audio.channels, 2)  # a mono file's second channel is the silent one
    mean_square = sum(float(np.dot(stereo[:, c], stereo[:, c])) for c in range(channels)) / (len(stereo) * channels)
    rms = power_to_db(mean_square)
    dynamic = es.DynamicComplexity(sampleRate=44100)(mono)[0] if not silent else 0.0
    gain = replay_gain(mono) if not silent else None  # None: shorter than one 50 ms block
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
        "replay_gain": gain,
    }
