"""The CPU set's faster implementations against what they replaced, on synthesised music.

Each lever of issue 16's speed work replaced an Essentia call (or a slower computation) with one
over whole arrays; these tests run the old computation beside the new one on the same pieces and
hold the new one to a tolerance: the values users had must not move beyond it.
"""

from __future__ import annotations

import numpy as np
import pytest
from music import TEMPO_SET, tempo_piece

from extractors import loudness


@pytest.fixture(scope="module")
def pieces():
    """Stereo pieces (left the mix, right delayed and quieter, so the channels differ): drums
    with bass, with chords, without either; and one master pushed into clipping."""
    import essentia

    essentia.log.warningActive = False
    chosen = [p for p in TEMPO_SET if p.name in ("ballad_60", "house_124", "rock_108", "punk_180")]
    out = {}
    for piece in chosen:
        mono = tempo_piece(piece)
        out[piece.name] = np.ascontiguousarray(np.stack([mono, 0.7 * np.roll(mono, 300)], axis=1))
    loud = np.clip(out["punk_180"] * 4, -1, 1)  # a loud master: many samples near full scale
    out["clipped"] = np.ascontiguousarray(loud, dtype=np.float32)
    return out


def _brute_true_peak(stereo, factor: int) -> float:
    """loudness version 1's true peak: every window of every channel through the kernel."""
    from numpy.lib.stride_tricks import sliding_window_view

    taps = 12
    offsets = np.arange(taps)[:, None] - taps // 2 + 1 - np.arange(factor)[None, :] / factor
    kernel = (np.sinc(offsets) * np.kaiser(taps, 5.0)[:, None]).astype(np.float32)
    peak = float(np.max(np.abs(stereo)))
    for channel in stereo.T:
        padded = np.concatenate([np.zeros(taps, np.float32), channel, np.zeros(taps, np.float32)])
        peak = max(peak, float(np.max(np.abs(sliding_window_view(padded, taps) @ kernel))))
    return peak


def test_ebu_r128_matches_essentia(pieces):
    import essentia.standard as es

    for name, stereo in pieces.items():
        momentary, short_term, integrated, lra = es.LoudnessEBUR128(sampleRate=44100, startAtZero=True)(stereo)
        ours = loudness.ebu_r128(stereo)
        assert len(ours[0]) == len(momentary) and len(ours[1]) == len(short_term), name
        assert ours[2] == pytest.approx(float(integrated), abs=0.1), name
        assert ours[3] == pytest.approx(float(lra), abs=0.1), name
        assert float(ours[0].max()) == pytest.approx(float(momentary.max()), abs=0.15), name
        assert float(ours[1].max()) == pytest.approx(float(short_term.max()), abs=0.15), name
        # block by block too, where the blocks are loud enough to count
        loud = momentary > -70
        assert np.median(np.abs(ours[0][loud] - momentary[loud])) < 0.1, name


def test_mono_as_one_loudspeaker_matches_essentia(pieces):
    import essentia.standard as es

    left = pieces["house_124"][:, 0]
    stereo = np.ascontiguousarray(np.stack([left, np.zeros_like(left)], axis=1))
    assert loudness.ebu_r128(stereo)[2] == pytest.approx(
        float(es.LoudnessEBUR128(sampleRate=44100, startAtZero=True)(stereo)[2]), abs=0.1)


def test_replay_gain_matches_essentia(pieces):
    import essentia.standard as es

    for name, stereo in pieces.items():
        mono = np.ascontiguousarray(stereo.mean(axis=1), dtype=np.float32)
        assert loudness.replay_gain(mono) == pytest.approx(float(es.ReplayGain(sampleRate=44100)(mono)), abs=0.05), name
    assert loudness.replay_gain(np.ones(100, np.float32)) is None  # shorter than one 50 ms block


def test_true_peak_only_where_it_can_be_is_the_same_maximum(pieces):
    for name, stereo in pieces.items():
        for factor in (2, 4):
            assert loudness._true_peak(stereo, factor) == pytest.approx(_brute_true_peak(stereo, factor), rel=1e-6), name
    assert loudness._true_peak(pieces["clipped"], 4) > 1.0  # inter-sample overs of a clipped master


def test_onset_rate_is_essentias(pieces):
    """rhythm 3 computes OnsetRate's functions and peak picking in numpy, from the FFT pass it
    makes for the octave decision anyway: the same onsets as Essentia's OnsetRate."""
    import essentia.standard as es

    from extractors import rhythm

    for name, stereo in pieces.items():
        mono = np.ascontiguousarray(stereo.mean(axis=1), dtype=np.float32)
        expected, _ = es.OnsetRate()(mono)
        _, hfc, complex_domain = rhythm.onset_functions(mono)
        ours = rhythm.onset_times(hfc, complex_domain)
        assert len(ours) == pytest.approx(len(expected), abs=1), name
        near = np.abs(ours[:, None] - expected[None, :]).min(axis=1) <= 1.5 * rhythm.HOP / rhythm.RATE
        assert near.mean() >= 0.97, name  # the same frames, give or take one


def _spectra(mono, count: int = 400):
    """spectral's magnitude spectra of the first `count` sounding frames."""
    import scipy.fft
    from numpy.lib.stride_tricks import sliding_window_view

    frames = sliding_window_view(mono, 2048)[::1024]
    frames = frames[np.any(frames != 0, axis=1)][:count]
    window = np.hanning(2049)[:-1].astype(np.float32) * 2
    return (np.abs(scipy.fft.rfft(frames * window, axis=1)) / 2048).astype(np.float32)


def test_mfcc_and_pitch_salience_are_essentias_frame_by_frame(pieces):
    import essentia.standard as es

    from extractors import spectral

    mfcc = es.MFCC(inputSize=1025, sampleRate=44100, numberCoefficients=13)
    salience = es.PitchSalience(sampleRate=44100)
    for name, stereo in pieces.items():
        spectra = _spectra(np.ascontiguousarray(stereo.mean(axis=1), dtype=np.float32))
        expected = np.array([mfcc(s)[1] for s in spectra])
        assert np.abs(spectral.mfccs(spectra) - expected).max() < 1e-2, name  # coefficients of -900 to 100
        assert np.abs(spectral.mfccs(spectra).mean(axis=0) - expected.mean(axis=0)).max() < 1e-3, name
        ours = spectral.pitch_salience(spectra)
        assert np.abs(ours - np.array([salience(s) for s in spectra])).max() < 1e-4, name
    assert spectral.pitch_salience(np.zeros((2, 1025), np.float32)).tolist() == [0.0, 0.0]


def test_degara_beats_and_tempo_are_rhythm_extractor_2013s(pieces):
    """rhythm 3 computes BeatTrackerDegara's onset function in numpy and gives it to Essentia's
    TempoTapDegara; the BPM from the ticks as RhythmExtractor2013 makes it. Also with digital
    silence before and after (Essentia's frame cutter puts noise in silent frames)."""
    import essentia.standard as es

    from extractors import rhythm

    params = {"min_tempo": 40, "max_tempo": 208}
    padded = np.concatenate([np.zeros((44100 * 3, 2), np.float32), pieces["rock_108"], np.zeros((44100 * 4, 2), np.float32)])
    for name, stereo in {**pieces, "padded with silence": padded}.items():
        mono = np.ascontiguousarray(stereo.mean(axis=1), dtype=np.float32)
        bpm, ticks, _, _, _ = es.RhythmExtractor2013(method="degara", minTempo=40, maxTempo=208)(mono)
        ours = rhythm.degara_beats(mono, params)
        assert len(ours) == len(ticks), name
        # within a frame of the x2-resampled function; two where the tracker runs on into the
        # silence (Essentia's frames there hold its noise, ours zeros)
        assert np.abs(ours - ticks).max() < (0.012 if name in pieces else 0.024), name
        assert rhythm.tempo_of(ours) == pytest.approx(float(bpm), abs=0.05 if name in pieces else 0.2), name
    assert rhythm.tempo_of([]) == 0.0 and rhythm.tempo_of([1.0]) == 0.0


def _frame_by_frame_chroma(mono, params):
    """hpcp version 1's mean chroma: Essentia's FrameGenerator, Windowing and Spectrum a frame at a time."""
    import essentia.standard as es

    window, spectrum = es.Windowing(type="blackmanharris62"), es.Spectrum()
    peaks = es.SpectralPeaks(orderBy="magnitude", magnitudeThreshold=1e-5, minFrequency=params["min_frequency"],
                             maxFrequency=params["max_frequency"], maxPeaks=100, sampleRate=44100)
    hpcp = es.HPCP(size=12, referenceFrequency=440, harmonics=params["harmonics"], bandPreset=params["band_preset"],
                   minFrequency=params["min_frequency"], maxFrequency=params["max_frequency"],
                   weightType=params["weight_type"], nonLinear=params["non_linear"], normalized="unitMax",
                   sampleRate=44100)
    total, frames = np.zeros(12), 0
    for frame in es.FrameGenerator(mono, frameSize=params["frame_size"], hopSize=params["hop_size"], startFromZero=True):
        profile = hpcp(*peaks(spectrum(window(frame))))
        if profile.sum() > 0:
            total, frames = total + profile / profile.sum(), frames + 1
    return np.roll(total / total.sum(), -3) if frames else np.full(12, 1 / 12)


def test_chroma_from_numpy_spectra_is_the_frame_by_frame_chroma(pieces):
    from extractors import hpcp

    params = hpcp.EXTRACTOR.params
    mono = np.ascontiguousarray(pieces["ballad_60"].mean(axis=1), dtype=np.float32)
    # whole pieces, and lengths around the frames' edges: shorter than a frame, a frame and a bit
    for signal in (mono, mono[:3000], mono[:4096], mono[:4096 + 2047], mono[:4096 + 2049],
                   np.ascontiguousarray(pieces["house_124"].mean(axis=1), dtype=np.float32)):
        for p in (params, {**params, "hop_size": 4 * params["hop_size"]}):  # key's noise check reads one in 4
            assert np.abs(hpcp.mean_chroma(signal, p) - _frame_by_frame_chroma(signal, p)).max() < 1e-4, len(signal)
    assert hpcp.mean_chroma(np.zeros(44100, np.float32), params).tolist() == pytest.approx([1 / 12] * 12)
