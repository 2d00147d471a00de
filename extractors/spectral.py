"""spectral: timbre statistics over short frames (Essentia), as mean and spread over the track.

Frames of 2048 samples (46 ms at 44.1 kHz), hop 1024, Hann window, magnitude spectrum.
Silent frames are skipped; a silent file gives NULL statistics.
"""

from __future__ import annotations

import numpy as np

from catalog.extractor import Extractor, Output

# (name, unit, normal range of the frame value, description); each gives <name>_mean and _std.
FRAME_FEATURES = [
    ("spectral_centroid", "Hz", (200, 6000), "Centre of mass of the spectrum (brightness)"),
    ("spectral_rolloff", "Hz", (500, 12000), "Frequency below which 85% of the spectral energy lies"),
    ("spectral_flux", "", (0, 0.3), "Change of the normalised spectrum from frame to frame"),
    ("spectral_flatness", "", (0, 1), "Geometric over arithmetic mean of the spectrum: 0 tonal, 1 noise"),
    ("spectral_entropy", "bits", (0, 11), "Shannon entropy of the spectrum as a distribution"),
    ("spectral_spread", "Hz", (500, 5000), "Standard deviation of the spectrum around its centroid"),
    ("spectral_skewness", "", (-1, 10), "Asymmetry of the spectrum's distribution"),
    ("spectral_kurtosis", "", (-2, 100), "Peakedness of the spectrum's distribution"),
    ("spectral_complexity", "peaks", (0, 40), "Number of spectral peaks"),
    ("zero_crossing_rate", "", (0, 0.3), "Sign changes per sample"),
    ("dissonance", "", (0, 0.5), "Sensory dissonance of the spectral peaks"),
    ("pitch_salience", "", (0, 1), "How clearly pitched the sound is (high on noise too)"),
    ("hfc", "", (0, 100), "High-frequency content"),
]
BANDS = [("low", 20, 150), ("low_mid", 150, 800), ("high_mid", 800, 4000), ("high", 4000, 20000)]
MFCC_COEFFICIENTS = 13

EXTRACTOR = Extractor(
    name="spectral",
    version=1,
    device="cpu",
    description="Spectral shape, noisiness, band energies and MFCCs over 46 ms frames.",
    params={"frame_size": 2048, "hop_size": 1024, "rolloff": 0.85},
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
        Output("mfcc_mean", "", None, "vector", "Mean of 13 mel-frequency cepstral coefficients", size=MFCC_COEFFICIENTS),
        Output("mfcc_std", "", None, "vector", "Standard deviation of the 13 MFCCs", size=MFCC_COEFFICIENTS),
    ],
)


def extract(audio, params):  # type: ignore[no-untyped-def]
    import essentia.standard as es

    rate = 44100
    size, hop = params["frame_size"], params["hop_size"]
    bins = size // 2 + 1
    window = es.Windowing(type="hann")
    spectrum = es.Spectrum(size=size)
    centroid = es.Centroid(range=rate / 2)
    moments = es.CentralMoments(range=rate / 2)
    shape = es.DistributionShape()
    rolloff = es.RollOff(cutoff=params["rolloff"], sampleRate=rate)
    flux = es.Flux()
    flatness = es.Flatness()
    entropy = es.Entropy()
    complexity = es.SpectralComplexity(sampleRate=rate)
    zcr = es.ZeroCrossingRate()
    peaks = es.SpectralPeaks(orderBy="frequency", sampleRate=rate, maxPeaks=100, minFrequency=20)
    dissonance = es.Dissonance()
    salience = es.PitchSalience(sampleRate=rate)
    hfc = es.HFC(sampleRate=rate)
    mfcc = es.MFCC(inputSize=bins, sampleRate=rate, numberCoefficients=MFCC_COEFFICIENTS)
    band_edges = [(int(lo * size / rate), int(min(hi, rate / 2) * size / rate)) for _, lo, hi in BANDS]

    values: dict[str, list[float]] = {name: [] for name, *_ in FRAME_FEATURES}
    band_energy = np.zeros(len(BANDS))
    coefficients = []
    for frame in es.FrameGenerator(audio.mono(), frameSize=size, hopSize=hop, startFromZero=True):
        if not np.any(frame):
            continue
        spec = spectrum(window(frame))
        power = spec.astype(np.float64) ** 2
        if power.sum() <= 0:
            continue
        variance, skewness, kurtosis = shape(moments(spec))
        frequencies, magnitudes = peaks(spec)
        values["spectral_centroid"].append(centroid(spec))
        values["spectral_rolloff"].append(rolloff(spec))
        values["spectral_flux"].append(flux(spec))
        values["spectral_flatness"].append(flatness(spec))
        values["spectral_entropy"].append(entropy(spec / spec.sum()))
        values["spectral_spread"].append(float(np.sqrt(max(variance, 0.0))))
        values["spectral_skewness"].append(skewness)
        values["spectral_kurtosis"].append(kurtosis)
        values["spectral_complexity"].append(complexity(spec))
        values["zero_crossing_rate"].append(zcr(frame))
        values["dissonance"].append(dissonance(frequencies, magnitudes) if len(frequencies) > 1 else 0.0)
        values["pitch_salience"].append(salience(spec))
        values["hfc"].append(hfc(spec))
        band_energy += [power[lo:hi].sum() for lo, hi in band_edges]
        coefficients.append(mfcc(spec)[1])

    result: dict[str, object] = {}
    for name, *_ in FRAME_FEATURES:
        series = np.asarray(values[name], dtype=np.float64)
        result[f"{name}_mean"] = float(series.mean()) if len(series) else None
        result[f"{name}_std"] = float(series.std()) if len(series) else None
    shares = band_energy / band_energy.sum() if band_energy.sum() > 0 else [None] * len(BANDS)
    for (band, _, _), share in zip(BANDS, shares):
        result[f"energy_{band}"] = None if share is None else float(share)
    matrix = np.asarray(coefficients) if coefficients else np.zeros((1, MFCC_COEFFICIENTS))
    result["mfcc_mean"] = matrix.mean(axis=0).tolist()
    result["mfcc_std"] = matrix.std(axis=0).tolist()
    return result
