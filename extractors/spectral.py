"""spectral: timbre statistics over short frames, as mean and spread over the track.

Frames of 2048 samples (46 ms at 44.1 kHz), hop 1024, Hann window, magnitude spectrum. The
spectral-shape statistics, MFCCs and pitch salience are computed for all frames at once with
numpy; peak-based features (dissonance, complexity) use Essentia per frame. Silent frames are
skipped; a silent file gives NULL statistics.

MFCCs and pitch salience are Essentia's (version 2; version 1 called MFCC and PitchSalience per
frame, 30 to 40 us each plus Python's call): the mel filterbank and the DCT are Essentia's own,
read once by passing it unit vectors (its MFCC: 40 bands to 11 kHz, HTK mel, unit-sum, on power;
20 log10 of the bands floored at 1e-10; DCT-II), and the salience is the spectrum's
autocorrelation, its largest value between lags of 100 Hz and 5 kHz over that at lag 0, by
FFT. The values agree with Essentia's to 1e-3 (tests/test_cpu_parity.py).
"""

from __future__ import annotations

import functools

from catalog.extractor import Extractor, Output

# (name, unit, normal range of the frame value, description); each gives <name>_mean and _std.
FRAME_FEATURES = [
    ("spectral_centroid", "Hz", (200, 6000), "Centre of mass of the magnitude spectrum (brightness)"),
    ("spectral_spread", "Hz", (500, 5000), "Standard deviation of the magnitude spectrum around its centroid"),
    ("spectral_skewness", "", (-1, 10), "Asymmetry of the magnitude spectrum's distribution"),
    ("spectral_kurtosis", "", (-2, 100), "Excess kurtosis (peakedness) of the spectrum's distribution"),
    ("spectral_rolloff", "Hz", (500, 12000), "Frequency below which 85% of the spectral energy lies"),
    ("spectral_flux", "", (0, 0.3), "L2 distance between consecutive unit-sum spectra"),
    ("spectral_flatness", "", (0, 1), "Geometric over arithmetic mean of the magnitude spectrum: 0 tonal, ~0.9 noise"),
    ("spectral_entropy", "bits", (0, 10), "Shannon entropy of the power spectrum as a distribution"),
    ("spectral_complexity", "peaks", (0, 40), "Number of spectral peaks above -46 dB"),
    ("zero_crossing_rate", "", (0, 0.3), "Sign changes per sample"),
    ("dissonance", "", (0, 0.5), "Sensory dissonance of the spectral peaks (Essentia)"),
    ("pitch_salience", "", (0, 1), "How clearly pitched the sound is (Essentia; high on noise too)"),
]
BANDS = [("low", 20, 150), ("low_mid", 150, 800), ("high_mid", 800, 4000), ("high", 4000, 20000)]
MFCC_COEFFICIENTS = 13

EXTRACTOR = Extractor(
    name="spectral",
    version=2,  # 2: MFCC and pitch salience in numpy (Essentia's to 1e-3)
    device="cpu",
    description="Spectral shape, noisiness, band energies and MFCCs over 46 ms frames.",
    # peak_stride: dissonance, complexity and pitch salience on every n-th frame (they cost
    # ~50 us a frame in Essentia; their track statistics barely move).
    params={"frame_size": 2048, "hop_size": 1024, "rolloff": 0.85, "peak_stride": 2},
    outputs=[
        out
        for name, unit, normal, description in FRAME_FEATURES
        for out in (
            Output(f"{name}_mean", unit, normal, "scalar", f"{description}: mean over frames"),
            Output(f"{name}_std", unit, None, "scalar", f"{description}: standard deviation over frames"),
        )
    ]
    + [
        Output(f"energy_{band}", "", (0, 1), "scalar", f"Share of the spectral energy between {lo} and {hi} Hz")
        for band, lo, hi in BANDS
    ]
    + [
        Output("mfcc_mean", "", None, "vector", "Mean of 13 mel-frequency cepstral coefficients (Essentia)",
               size=MFCC_COEFFICIENTS),
        Output("mfcc_std", "", None, "vector", "Standard deviation of the 13 MFCCs", size=MFCC_COEFFICIENTS),
    ],
)

RATE = 44100
FRAMES_PER_CHUNK = 512  # bounds memory on long files: 512 x 2048 floats at a time
SALIENCE_RANGE = (100.0, 5000.0)  # Hz: Essentia's PitchSalience defaults


@functools.lru_cache(maxsize=4)
def mfcc_matrices(bins: int):  # type: ignore[no-untyped-def]
    """Essentia's MFCC as two matrices: its mel filterbank [bins, 40] (on the power spectrum) and
    its DCT [40, 13], read by passing unit vectors through its MelBands and DCT configured as
    its MFCC configures them (checked against MFCC itself in tests/test_cpu_parity.py)."""
    import essentia.standard as es
    import numpy as np

    mel = es.MelBands(inputSize=bins, sampleRate=RATE, numberBands=40, lowFrequencyBound=0,
                      highFrequencyBound=11000, type="power", warpingFormula="htkMel", weighting="warping",
                      normalize="unit_sum")
    dct = es.DCT(inputSize=40, outputSize=MFCC_COEFFICIENTS, dctType=2, liftering=0)
    filterbank = np.array([mel(unit) for unit in np.eye(bins, dtype=np.float32)], dtype=np.float32)
    return filterbank, np.array([dct(unit) for unit in np.eye(40, dtype=np.float32)], dtype=np.float64)


def mfccs(spectra):  # type: ignore[no-untyped-def]
    """Essentia's MFCC of each magnitude spectrum (rows), [frames, 13]."""
    import numpy as np

    filterbank, dct = mfcc_matrices(spectra.shape[1])
    bands = (spectra * spectra) @ filterbank
    return (20 * np.log10(np.maximum(bands.astype(np.float64), 1e-10))) @ dct


def pitch_salience(spectra):  # type: ignore[no-untyped-def]
    """Essentia's PitchSalience of each magnitude spectrum (rows): the autocorrelation's largest
    value between the lags of 100 Hz and 5 kHz, over its value at lag 0 (0 for silence)."""
    import numpy as np
    import scipy.fft

    bins = spectra.shape[1]
    low, high = (int(f * bins / (RATE / 2)) for f in SALIENCE_RANGE)
    # linear, not circular, for the lags we read: n >= bins + high leaves them unaliased
    n = scipy.fft.next_fast_len(bins + high, real=True)
    transform = scipy.fft.rfft(spectra, n=n, axis=1)
    acf = scipy.fft.irfft((transform * transform.conj()).real, n=n, axis=1)[:, :high]
    zero = acf[:, 0]
    return np.where(zero > 0, acf[:, low:high].max(axis=1) / np.where(zero > 0, zero, 1), 0.0)


def _shape_statistics(spectra, frames, params):  # type: ignore[no-untyped-def]
    """Per-frame values of the numpy-computed features for one chunk of frames."""
    import numpy as np

    bins = spectra.shape[1]
    freqs = np.linspace(0, RATE / 2, bins)
    dist = spectra / spectra.sum(axis=1, keepdims=True)
    # Raw moments E[f^k] of each frame's spectrum, k = 1..4, in one matrix product.
    e1, e2, e3, e4 = (dist.astype(np.float64) @ np.stack([freqs, freqs**2, freqs**3, freqs**4], axis=1)).T
    variance = np.maximum(e2 - e1**2, 0)
    spread = np.sqrt(variance)
    safe = np.where(spread > 0, spread, 1.0)
    skewness = (e3 - 3 * e1 * e2 + 2 * e1**3) / safe**3
    kurtosis = (e4 - 4 * e1 * e3 + 6 * e1**2 * e2 - 3 * e1**4) / safe**4 - 3
    power = spectra * spectra
    power_sum = power.sum(axis=1, keepdims=True)
    p = power / power_sum
    rolloff = freqs[np.argmax(np.cumsum(p, axis=1) >= params["rolloff"], axis=1)]
    # On magnitudes, as Essentia's Flatness: white noise reads about 0.88 (0.56 on power).
    flatness = np.exp2(np.log2(spectra + 1e-30).mean(axis=1)) / spectra.mean(axis=1)
    entropy = -np.einsum("fb,fb->f", p, np.log2(p + 1e-30))
    zcr = np.count_nonzero(np.diff(np.signbit(frames), axis=1), axis=1) / frames.shape[1]
    return {
        "spectral_centroid": e1, "spectral_spread": spread, "spectral_skewness": skewness,
        "spectral_kurtosis": kurtosis, "spectral_rolloff": rolloff, "spectral_flatness": np.minimum(flatness, 1.0),
        "spectral_entropy": entropy, "zero_crossing_rate": zcr,
    }, power, dist


def extract(audio, params):  # type: ignore[no-untyped-def]
    import essentia.standard as es
    import numpy as np
    import scipy.fft
    from numpy.lib.stride_tricks import sliding_window_view

    size, hop = params["frame_size"], params["hop_size"]
    bins = size // 2 + 1
    mono = audio.mono()
    window = np.hanning(size + 1)[:-1].astype(np.float32) * 2  # Essentia's Hann, normalised
    peaks = es.SpectralPeaks(orderBy="frequency", sampleRate=RATE, maxPeaks=100, minFrequency=20)
    dissonance = es.Dissonance()
    band_edges = [(int(lo * size / RATE), int(min(hi, RATE / 2) * size / RATE)) for _, lo, hi in BANDS]

    values: dict[str, list] = {name: [] for name, *_ in FRAME_FEATURES}
    band_energy = np.zeros(len(BANDS))
    coefficients = []
    previous = None
    all_frames = sliding_window_view(mono, size)[::hop] if len(mono) >= size else np.zeros((0, size), np.float32)
    for start in range(0, len(all_frames), FRAMES_PER_CHUNK):
        frames = all_frames[start : start + FRAMES_PER_CHUNK]
        frames = frames[np.any(frames != 0, axis=1)]  # silent frames say nothing about timbre
        if len(frames) == 0:
            continue
        # float32 throughout (numpy's FFT works in float64, 6 times slower; the spectra were float32 anyway)
        spectra = (np.abs(scipy.fft.rfft(frames * window, axis=1)) / size).astype(np.float32, copy=False)
        keep = spectra.sum(axis=1) > 0
        frames, spectra = frames[keep], spectra[keep]
        shape, power, dist = _shape_statistics(spectra, frames, params)
        for name, series in shape.items():
            values[name].extend(series.tolist())
        chained = dist if previous is None else np.vstack([previous, dist])
        values["spectral_flux"].extend(np.linalg.norm(np.diff(chained, axis=0), axis=1).tolist())
        previous = dist[-1:]
        band_energy += [power[:, lo:hi].sum() for lo, hi in band_edges]
        coefficients.append(mfccs(spectra))
        # every peak_stride-th frame, counted as version 1 counted them (the chunk's start plus the
        # frame's index among the chunk's sounding frames)
        strided = spectra[(start + np.arange(len(spectra))) % params["peak_stride"] == 0]
        values["pitch_salience"].extend(pitch_salience(strided).tolist())
        for spectrum in strided:
            frequencies, magnitudes = peaks(spectrum)
            values["dissonance"].append(dissonance(frequencies, magnitudes) if len(frequencies) > 1 else 0.0)
            values["spectral_complexity"].append(float(np.sum(magnitudes > 0.005)))

    result: dict[str, object] = {}
    for name, *_ in FRAME_FEATURES:
        series = np.asarray(values[name], dtype=np.float64)
        result[f"{name}_mean"] = float(series.mean()) if len(series) else None
        result[f"{name}_std"] = float(series.std()) if len(series) else None
    shares = band_energy / band_energy.sum() if band_energy.sum() > 0 else [None] * len(BANDS)
    for (band, _, _), share in zip(BANDS, shares):
        result[f"energy_{band}"] = None if share is None else float(share)
    matrix = np.concatenate(coefficients) if coefficients else np.zeros((1, MFCC_COEFFICIENTS))
    result["mfcc_mean"] = matrix.mean(axis=0).tolist()
    result["mfcc_std"] = matrix.std(axis=0).tolist()
    return result
