"""rhythm: tempo, beats, onsets and danceability (Essentia), with an octave decision.

The beat tracker is Essentia's `degara`, as in its MusicExtractor: as accurate as `multifeature`
on our test signals and 3.7 times faster. `multifeature` (set `method` in [extractors.rhythm])
runs five trackers and gives as its confidence how much they agree (the information gain of
their beats against each other, Davies et al. 2009; 0-5.32 bits). With `degara` the confidence
is made the same way from two trackers: degara on Essentia's complex-domain onsets, and
Essentia's TempoTapDegara on muscat's own onset envelope (below), which the octave decision
computes anyway; their agreement costs a few milliseconds.

Both trackers find the right pulse but often at the wrong octave: they halve fast tempi
(150-200 BPM) and double slow ones (60-75 BPM); that is most of what users complain about. So
the tracker's tempo is checked against an onset envelope in which kick, snare and bass weigh more
than cymbals (log band flux, bands above 500 Hz down-weighted as 1/f), and its beats:
- doubled when the envelope is about as periodic at half the beat period as at the beat period
  (a comb over its autocorrelation) and the points halfway between beats are about as strong as
  the beats: a backbeat between them, the tracker took every other beat;
- halved when it is clearly more periodic at twice the period and odd and even beats differ:
  the tracker took the eighths, hi-hats between kick and snare. Never below 50 BPM.
The thresholds were set on tests/music.py's synthesised sets (the README has the scores, also
on a set not used to set them). `octave = false` gives Essentia's tempo unchanged.

Version 3 computes in numpy what Essentia computed frame by frame, with the same results on
tests/test_cpu_parity.py's pieces (rhythm: 1.8 s of CPU for a 3-minute track, now 0.6 s):
- the onset rate is Essentia's OnsetRate (high-frequency content and complex-domain functions,
  its Onsets peak picking), from the same FFT pass as the envelope;
- with `degara`, the beats are Essentia's BeatTrackerDegara: its complex-domain onset function
  here, into Essentia's TempoTapDegara; the BPM from them as RhythmExtractor2013 makes it. Where
  the track has digital silence, ticks the tracker places in it can move by a frame or two
  (Essentia's framing puts noise in silent frames).
"""

from __future__ import annotations

from catalog.extractor import Extractor, Output

EXTRACTOR = Extractor(
    name="rhythm",
    version=3,  # 2: the octave decision; 3: beat_confidence with degara too, onset functions in numpy
    device="cpu",
    description="Tempo and beats (RhythmExtractor2013 with an octave decision), onset rate, danceability.",
    params={"method": "degara", "min_tempo": 40, "max_tempo": 208, "octave": True},
    outputs=[
        Output("bpm", "BPM", (40, 208), "scalar", "Tempo; 0 when no beat was found (silence)"),
        Output("beat_confidence", "bits", (0, 5.32), "scalar",
               "How much independent beat trackers agree (information gain; two with degara, five with "
               "multifeature): above 3.5 excellent, below 1 poor"),
        Output("beat_count", "beats", (0, 2000), "scalar", "Number of beats found"),
        Output("beat_interval_mean", "s", (0.28, 1.5), "scalar", "Mean time between beats"),
        Output("beat_interval_std", "s", (0, 0.2), "scalar", "Spread of the time between beats"),
        Output("bpm_first_peak_weight", "", (0, 1), "scalar",
               "Weight of the main peak of the BPM histogram: how clear the tempo is"),
        Output("bpm_second_peak", "BPM", (40, 208), "scalar", "Second peak of the BPM histogram"),
        Output("bpm_second_peak_weight", "", (0, 1), "scalar", "Weight of the second peak of the BPM histogram"),
        Output("onset_rate", "onsets/s", (0, 10), "scalar", "Note onsets per second"),
        Output("danceability", "", (0, 3), "scalar", "Detrended fluctuation analysis danceability (Essentia)"),
        Output("beats", "s", None, "vector", "Beat positions from the start", size=None),
    ],
)


HOP = 512  # onset envelope frames: 11.6 ms
RATE = 44100
# The decision's thresholds (see the module doc), set on tests/music.py's sets.
DOUBLE_PERIODICITY = 0.8  # periodicity at half the beat period, against that at the beat period
DOUBLE_HALFWAY = 0.6  # onsets halfway between beats, against those on them
HALVE_PERIODICITY = 1.13  # periodicity at twice the beat period, against that at the beat period
HALVE_PARITY = 0.9  # the weaker of odd and even beats against the stronger, at most
HALVE_FLOOR = 50.0  # never halve below this: a 45 BPM reading is nearly always a 90 BPM piece


def onset_functions(mono, rate: int = RATE):  # type: ignore[no-untyped-def]
    """One FFT pass over frames of 1024 samples every HOP (a symmetric Hann window) for both onset
    functions rhythm needs: the octave decision's envelope (log band flux, low bands weighing
    more; see the module doc) and Essentia's OnsetRate detection functions, its high-frequency
    content and complex-domain difference (Bello et al. 2004). Returns (envelope, hfc, complex).

    OnsetRate's frames start at 0 and run past the end (zeros); the envelope's are the whole
    frames among them, as before."""
    import numpy as np
    import scipy.fft
    from numpy.lib.stride_tricks import sliding_window_view

    size, bands = 1024, 36
    count = -(-len(mono) // HOP)  # OnsetRate's frames: every frame that starts in the track
    whole = max(0, (len(mono) - size) // HOP + 1)  # the envelope's
    padded = np.concatenate([np.asarray(mono, np.float32), np.zeros(count * HOP + size - len(mono), np.float32)])
    frames = sliding_window_view(padded, size)[::HOP][:count]
    window = np.hanning(size).astype(np.float32)
    edges = np.geomspace(30, 16000, bands + 1)
    first = np.searchsorted(np.fft.rfftfreq(size, 1 / rate), edges[:-1])
    first = np.maximum.accumulate(np.maximum(first, np.arange(bands) + 1))  # a bin at least per band
    band_counts = np.diff(np.append(first, size // 2 + 1))
    energy = np.empty((whole, bands), np.float32)
    hfc = np.empty(count, np.float32)
    complex_domain = np.empty(count, np.float32)
    ramp = np.arange(size // 2 + 1, dtype=np.float32)  # HFC's weights (a scale: it is normalised)
    state = None
    for start in range(0, count, 2048):  # in blocks: a long track's spectra would not fit
        # scipy's FFT stays in float32 (numpy's works in float64): 6 times faster here
        spectra = scipy.fft.rfft(frames[start : start + 2048] * window, axis=1)
        magnitudes = np.abs(spectra)
        stop = min(start + len(spectra), whole)
        if stop > start:
            energy[start:stop] = np.add.reduceat(magnitudes[: stop - start], first, axis=1) / band_counts
        hfc[start : start + len(spectra)] = magnitudes @ ramp
        complex_domain[start : start + len(spectra)], state = _complex_difference(spectra, magnitudes, state)
    envelope = np.zeros(0)
    if whole:
        peak = float(energy.max())
        if peak <= 0:
            envelope = np.zeros(whole)
        else:
            weights = np.minimum(1.0, 500.0 / np.sqrt(edges[:-1] * edges[1:]))
            flux = np.concatenate([[0.0], np.maximum(0, np.diff(np.log1p(1000 * energy / peak), axis=0)) @ weights])
            width = int(rate / HOP * 0.5) | 1  # minus the local mean: attacks, not swells
            envelope = np.maximum(0, flux - np.convolve(flux, np.ones(width) / width, mode="same"))
    return envelope, hfc, complex_domain


def _complex_difference(spectra, magnitudes, state):  # type: ignore[no-untyped-def]
    """Essentia's complex-domain onset function (OnsetDetection 'complex', Bello et al. 2004) of
    consecutive frames' spectra: the sum over bins of |X'[t-1] - X[t]|, the previous frame's
    magnitude with the phase predicted from the two frames before (2 p1 - p2). `state` carries
    the last frames over to the next block (None at the start: zeros before it, as Essentia's).
    Returns (values, state)."""
    import numpy as np

    bins = spectra.shape[1]
    last_magnitude, last_phasors = state if state is not None else (
        np.zeros(bins, np.float32), np.ones((2, bins), np.complex64))
    phasors = spectra / np.maximum(magnitudes, np.float32(1e-30))
    phasors[magnitudes == 0] = 1  # a zero bin has phase 0, as atan2(0, 0)
    before = np.concatenate([last_phasors, phasors])  # [frame - 2, frame - 1, ...]
    previous = np.concatenate([last_magnitude[None], magnitudes[:-1]])
    # the cosine of (p - 2 p1 + p2) is the real part of u * conj(u1)^2 * u2
    lagged = np.conj(before[1:-1])
    cosine = (phasors * lagged * lagged * before[:-2]).real
    values = np.sqrt(np.maximum(previous * previous + magnitudes * magnitudes - 2 * previous * magnitudes * cosine,
                                0)).sum(axis=1)
    return values, (magnitudes[-1], before[-2:])


def degara_beats(mono, params):  # type: ignore[no-untyped-def]
    """Essentia's BeatTrackerDegara with its onset function computed here: the complex-domain
    function of 2048-sample frames (symmetric Hann) every 1024 from the start, into Essentia's
    TempoTapDegara (the function's rate, resampled x2, the tempo range). The same ticks as
    BeatTrackerDegara on our tests, in half its time: its onset function is per frame."""
    import essentia.standard as es
    import numpy as np
    import scipy.fft
    from numpy.lib.stride_tricks import sliding_window_view

    size, hop = 2048, 1024
    count = -(-len(mono) // hop)
    padded = np.concatenate([np.asarray(mono, np.float32), np.zeros(count * hop + size - len(mono), np.float32)])
    frames = sliding_window_view(padded, size)[::hop][:count]
    window = np.hanning(size).astype(np.float32)
    odf = np.empty(count, np.float32)
    state = None
    for start in range(0, count, 1024):
        spectra = scipy.fft.rfft(frames[start : start + 1024] * window, axis=1)
        odf[start : start + len(spectra)], state = _complex_difference(spectra, np.abs(spectra), state)
    return np.asarray(es.TempoTapDegara(sampleRateODF=RATE / hop, resample="x2", minTempo=params["min_tempo"],
                                        maxTempo=params["max_tempo"])(odf), dtype=np.float32)


def tempo_of(beats) -> float:  # type: ignore[no-untyped-def]
    """RhythmExtractor2013's BPM from its ticks: the most frequent of the beat-to-beat tempi
    rounded to even BPM, then the mean of the tempi within 5 BPM of it (0 without two beats)."""
    import numpy as np

    if len(beats) < 2:
        return 0.0
    tempi = 60.0 / np.diff(np.asarray(beats, np.float64))
    halves = tempi / 2
    counts = np.bincount(np.round(halves[halves >= 0]).astype(int)) if np.any(halves >= 0) else np.zeros(1)
    closest = float(np.argmax(counts) * 2)
    near = tempi[np.abs(closest - tempi) < 5.0]
    return float(near.mean()) if len(near) else closest


def onset_times(hfc, complex_domain, rate: int = RATE):  # type: ignore[no-untyped-def]
    """Essentia's Onsets on OnsetRate's two functions (weights 1, alpha 0.1, delay 5, silence
    0.02): each normalised to its maximum and summed, a causal 5-frame moving average, zero under
    the silence threshold, above the median plus 0.1 times the mean of the last 5 frames (frame 0
    counted as 0); the first frame of each run of at least two. Onset times in s."""
    import numpy as np
    from numpy.lib.stride_tricks import sliding_window_view

    if len(hfc) == 0:
        return np.zeros(0)
    summed = sum(f / f.max() if f.max() > 0 else f for f in (hfc.astype(np.float64), complex_domain.astype(np.float64)))
    smooth = np.convolve(summed, np.ones(5) / 5)[: len(summed)]
    smooth[smooth < 0.02 * 2] = 0
    recent = np.concatenate([np.zeros(4), [0.0], smooth[1:]])
    last5 = sliding_window_view(recent, 5)
    above = smooth > np.median(last5, axis=1) + 0.1 * last5.mean(axis=1)
    above[0] = False
    before = np.concatenate([[False], above[:-1]])
    after = np.concatenate([above[1:], [True]])
    return np.flatnonzero(above & ~before & after) / (rate / HOP)


def _strength(envelope, times, rate: int = RATE):  # type: ignore[no-untyped-def]
    """The envelope's peak within +-2 frames (+-23 ms) of each time: beats are never exactly on a frame."""
    import numpy as np

    at = np.round(np.asarray(times) * rate / HOP).astype(int)
    at = at[(at >= 2) & (at < len(envelope) - 2)]
    if len(at) == 0:
        return np.zeros(0)
    return np.max(np.stack([envelope[at + d] for d in range(-2, 3)]), axis=0)


def _periodicity(envelope):  # type: ignore[no-untyped-def]
    """A function of the beat period (in frames): the envelope's autocorrelation summed over the
    period's first four multiples (a comb), each read at its peak within 3% (tempo drifts)."""
    import math

    import numpy as np

    centred = envelope - envelope.mean()
    n = len(centred)
    acf = np.fft.irfft(np.abs(np.fft.rfft(centred, 2 * n)) ** 2)[:n]
    acf /= acf[0] if acf[0] > 0 else 1.0

    def comb(period: float) -> float:
        reads = [float(acf[int(m * period * 0.97): int(math.ceil(m * period * 1.03)) + 1].max())
                 for m in (1, 2, 3, 4) if math.ceil(m * period * 1.03) + 1 < n]
        return float(np.mean(reads)) if reads else 0.0

    return comb


def octave_decision(envelope, beats, bpm: float, params):  # type: ignore[no-untyped-def]
    """The beats at the right octave and the factor applied to the tempo: the tracker's (1),
    with the halfway points (2) or every other one (0.5); see the module doc. `envelope`:
    onset_functions' first."""
    import numpy as np

    beats = np.asarray(beats, dtype=np.float64)
    on = _strength(envelope, beats)
    if len(beats) < 4 or len(on) < 4 or on.mean() <= 0 or bpm <= 0:
        return beats, 1.0
    comb = _periodicity(envelope)
    period = 60.0 * RATE / HOP / bpm
    here = comb(period)
    if here <= 0:
        return beats, 1.0
    halfway = (beats[:-1] + beats[1:]) / 2
    doubled = comb(period / 2) / here >= DOUBLE_PERIODICITY and \
        _strength(envelope, halfway).mean() / on.mean() >= DOUBLE_HALFWAY
    if doubled:  # past max_tempo it stays: never halve what looks like too slow a reading
        return (np.sort(np.concatenate([beats, halfway])), 2.0) if 2 * bpm <= params["max_tempo"] else (beats, 1.0)
    even, odd = on[0::2].mean(), on[1::2].mean()
    if bpm / 2 >= max(HALVE_FLOOR, params["min_tempo"]) and comb(2 * period) / here >= HALVE_PERIODICITY \
            and min(even, odd) / max(even, odd) <= HALVE_PARITY:
        return (beats[0::2] if even >= odd else beats[1::2]), 0.5
    return beats, 1.0


def agreement(envelope, beats) -> float:  # type: ignore[no-untyped-def]
    """degara's beats against TempoTapDegara's on `envelope` (at 44100/512 frames/s, the rate it
    expects): Essentia's TempoTapMaxAgreement, the measure multifeature reports over its five."""
    import essentia.standard as es
    import numpy as np

    other = es.TempoTapDegara()(np.asarray(envelope, dtype=np.float32))
    if len(beats) < 2 or len(other) < 2:
        return 0.0
    _, confidence = es.TempoTapMaxAgreement()([np.asarray(beats, np.float32), np.asarray(other, np.float32)])
    return float(confidence)


def extract(audio, params):  # type: ignore[no-untyped-def]
    import essentia.standard as es
    import numpy as np

    mono = audio.mono()
    if len(mono) < 44100 * 2 or not np.any(mono):  # too short or silent: no rhythm to find
        return {
            "bpm": 0.0, "beat_confidence": 0.0, "beat_count": 0, "beat_interval_mean": None,
            "beat_interval_std": None, "bpm_first_peak_weight": 0.0, "bpm_second_peak": None,
            "bpm_second_peak_weight": 0.0, "onset_rate": 0.0, "danceability": 0.0, "beats": [],
        }
    if params["method"] == "degara":  # RhythmExtractor2013's result, its onset function in numpy
        beats = degara_beats(mono, params)
        bpm, intervals = tempo_of(beats), np.diff(beats)
    else:
        bpm, beats, confidence, _, intervals = es.RhythmExtractor2013(
            method=params["method"], minTempo=params["min_tempo"], maxTempo=params["max_tempo"]
        )(mono)
    envelope, hfc, complex_domain = onset_functions(mono)
    if params["method"] != "multifeature":  # before the octave decision: how sure the pulse is
        confidence = agreement(envelope, beats)
    if params["octave"] and len(beats) > 3:
        moved, factor = octave_decision(envelope, beats, float(bpm), params)
        if factor != 1.0:  # the BPM histogram too is of the beats we keep
            beats, bpm = moved.astype(np.float32), bpm * factor
            intervals = np.diff(beats)
    if len(intervals) > 0:
        histogram = es.BpmHistogramDescriptors()(intervals)
        first_weight, second_bpm, second_weight = float(histogram[1]), float(histogram[3]), float(histogram[4])
    else:
        first_weight, second_bpm, second_weight = 0.0, None, 0.0
    onset_rate = len(onset_times(hfc, complex_domain)) / (len(mono) / RATE)  # as Essentia's OnsetRate
    danceability, _ = es.Danceability()(mono)
    gaps = np.diff(beats)
    return {
        "bpm": float(bpm) if len(beats) > 1 else 0.0,
        "beat_confidence": float(confidence),
        "beat_count": len(beats),
        "beat_interval_mean": float(np.mean(gaps)) if len(gaps) else None,
        "beat_interval_std": float(np.std(gaps)) if len(gaps) else None,
        "bpm_first_peak_weight": first_weight,
        "bpm_second_peak": second_bpm or None,
        "bpm_second_peak_weight": second_weight,
        "onset_rate": float(onset_rate),
        "danceability": float(danceability),
        "beats": [float(b) for b in beats],
    }
