"""hpcp: 12-bin chroma that sums to 1 (Essentia HPCP), tuned for melodic content.

The original pipeline's tuning: 100-4000 Hz, no band preset, non-linear peak boosting, 4
harmonics, squared-cosine weighting. Essentia only allows the non-linear step with unitMax
normalisation, so each frame is taken unitMax, divided by its sum, the frames averaged, and the
mean normalised to sum 1: a distribution comparable across files, which keeps how harmonic or
noisy a track is (see chroma_entropy). Essentia's bin 0 is A; the output starts at C.
"""

from __future__ import annotations

import functools

from catalog.extractor import Extractor, Output

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

EXTRACTOR = Extractor(
    name="hpcp",
    version=1,  # the spectra in numpy (see mean_chroma) left the chroma as it was (1e-9): no new version
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


@functools.lru_cache(maxsize=4)
def _window(size: int):  # type: ignore[no-untyped-def]
    """Essentia's Blackman-Harris 62 dB window as its Windowing makes it (normalised), unrotated:
    its zero-phase rotation does not change a magnitude spectrum."""
    import essentia.standard as es
    import numpy as np

    return np.roll(es.Windowing(type="blackmanharris62", size=size)(np.ones(size, np.float32)), size // 2)


def mean_chroma(mono, params):  # type: ignore[no-untyped-def]
    """The mean of the frames' unit-sum HPCPs, C first, summing to 1 (flat for silence).

    The frames are Essentia's FrameGenerator's (from 0, the last one past the end zero-padded),
    their magnitude spectra computed all at once with numpy (Essentia's Windowing and Spectrum
    were two calls a frame; the chroma moved by 1e-9, tests/test_cpu_parity.py), the peaks and the
    HPCP by Essentia per frame."""
    import essentia.standard as es
    import numpy as np
    import scipy.fft
    from numpy.lib.stride_tricks import sliding_window_view

    size, hop = params["frame_size"], params["hop_size"]
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
    # FrameGenerator's count: every frame that starts before the last whole frame ends, at least one
    count = max(1, -(-(len(mono) - size) // hop) + 1) if len(mono) else 0
    padded = np.concatenate([np.asarray(mono, np.float32), np.zeros(max(0, (count - 1) * hop + size - len(mono)),
                                                                     np.float32)])
    frames = sliding_window_view(padded, size)[::hop][:count]
    window = _window(size)
    total = np.zeros(12)
    used = 0
    for start in range(0, count, 256):  # bounded memory: 256 spectra at a time
        spectra = np.abs(scipy.fft.rfft(frames[start : start + 256] * window, axis=1))
        for spectrum in spectra:
            frequencies, magnitudes = peaks(spectrum)
            profile = hpcp(frequencies, magnitudes)
            mass = float(profile.sum())
            if mass > 0:
                total += profile / mass
                used += 1
    if used == 0 or total.sum() <= 0:  # silence: no pitch at all; a flat distribution
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
