"""hpcp: 12-bin chroma that sums to 1 (Essentia HPCP), tuned for melodic content.

The original pipeline's tuning: 100-4000 Hz, no band preset, non-linear peak boosting, 4
harmonics, squared-cosine weighting. Essentia only allows the non-linear step with unitMax
normalisation, so each frame is taken unitMax, divided by its sum, the frames averaged, and the
mean normalised to sum 1: a distribution comparable across files, which keeps how harmonic or
noisy a track is (see chroma_entropy). Essentia's bin 0 is A; the output starts at C.
"""

from __future__ import annotations

from catalog.extractor import Extractor, Output

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

EXTRACTOR = Extractor(
    name="hpcp",
    version=1,
    device="cpu",
    description="Harmonic pitch class profile (chroma) summing to 1, and its entropy.",
    uses=("demucs",),  # the harmonic stems, when separated (and use_stems is on)
    params={
        "harmonics": 4,
        "min_frequency": 100.0,
        "max_frequency": 4000.0,
        "band_preset": False,
        "non_linear": True,
        "weight_type": "squaredCosine",
        "frame_size": 4096,
        "hop_size": 2048,
        "use_stems": True,
    },
    outputs=[
        Output("chroma", "", (0, 1), "vector", "Share of each pitch class, C first; sums to 1", size=12,
               labels=PITCH_CLASSES),
        Output("chroma_entropy", "bits", (0, 3.585), "scalar",
               "Entropy of the chroma: low for tonal music, near 3.58 (log2 12) for noise"),
        Output("chroma_peak", "", (1 / 12, 1), "scalar", "Share of the strongest pitch class"),
        Output("chroma_source", "", None, "categorical", "What it was computed on: mix or stems"),
    ],
)


def mean_chroma(mono, params):  # type: ignore[no-untyped-def]
    """The mean of the frames' unit-sum HPCPs, C first, summing to 1 (flat for silence)."""
    import essentia.standard as es
    import numpy as np

    window = es.Windowing(type="blackmanharris62")
    spectrum = es.Spectrum()
    peaks = es.SpectralPeaks(
        orderBy="magnitude", magnitudeThreshold=1e-5, minFrequency=params["min_frequency"],
        maxFrequency=params["max_frequency"], maxPeaks=100, sampleRate=44100,
    )
    hpcp = es.HPCP(
        size=12, referenceFrequency=440, harmonics=params["harmonics"], bandPreset=params["band_preset"],
        minFrequency=params["min_frequency"], maxFrequency=params["max_frequency"],
        weightType=params["weight_type"], nonLinear=params["non_linear"], normalized="unitMax",
        sampleRate=44100,
    )
    total = np.zeros(12)
    frames = 0
    for frame in es.FrameGenerator(mono, frameSize=params["frame_size"], hopSize=params["hop_size"],
                                   startFromZero=True):
        frequencies, magnitudes = peaks(spectrum(window(frame)))
        profile = hpcp(frequencies, magnitudes)
        mass = float(profile.sum())
        if mass > 0:
            total += profile / mass
            frames += 1
    if frames == 0 or total.sum() <= 0:  # silence: no pitch at all; a flat distribution
        return np.full(12, 1 / 12)
    return np.roll(total / total.sum(), -3)


def entropy_bits(distribution) -> float:  # type: ignore[no-untyped-def]
    import numpy as np

    nonzero = np.asarray(distribution)[np.asarray(distribution) > 0]
    return float(-(nonzero * np.log2(nonzero)).sum())


def uses(params):  # type: ignore[no-untyped-def]
    return ["demucs"] if params["use_stems"] else []


def extract(audio, params, inputs):  # type: ignore[no-untyped-def]
    # The harmonic stems (no drums) when demucs separated this audio, else the mix.
    stems = inputs.stems_mono("demucs", ("bass", "other", "vocals")) if params["use_stems"] else None
    mono = stems if stems is not None else audio.mono()
    chroma = mean_chroma(mono, params)
    return {
        "chroma": chroma.tolist(),
        "chroma_entropy": entropy_bits(chroma),
        "chroma_peak": float(chroma.max()),
        "chroma_source": "stems" if stems is not None else "mix",
    }
