"""Tempo and key evaluations on synthesised music with known answers (tests/music.py), through
the real encoder (FLAC) and decoder, each beside Essentia's own estimator on the same audio.

They print their tables and scores (pytest -s shows them; the README quotes them)."""

from __future__ import annotations

import numpy as np
import pytest
from audio import sine_at_rms, white_noise, write
from music import KEY_SET, TEMPO_SET, accuracy, key_piece, mirex_key_score, tempo_piece

import catalog
from catalog import decode, registry


@pytest.fixture(scope="module")
def extractors(tmp_path_factory):
    import essentia

    essentia.log.warningActive = False
    settings = catalog.load_settings(db=tmp_path_factory.mktemp("x") / "x.duckdb")
    return {e.name: e for e in registry.load_extractors(settings)}


def test_tempo_accuracy_on_the_synthesised_set(tmp_path, extractors):
    import essentia.standard as es

    rows, ours, theirs, confidences = [], [], [], []
    for piece in TEMPO_SET:
        audio = decode.decode(str(write(tmp_path / f"{piece.name}.flac", tempo_piece(piece)[:, None])))
        values = extractors["rhythm"].run(audio).values
        bpm = values["bpm"]
        reference, _, reference_confidence, _, _ = es.RhythmExtractor2013(method="multifeature")(audio.mono())
        ours.append(accuracy(bpm, piece.bpm))
        theirs.append(accuracy(float(reference), piece.bpm))
        confidences.append(values["beat_confidence"])
        rows.append(f"{piece.name:24} {piece.bpm:6.1f} {bpm:8.1f} {'ok' if ours[-1][0] else '--':>3} "
                    f"{values['beat_confidence']:5.2f} {reference:10.1f} {'ok' if theirs[-1][0] else '--':>3} "
                    f"{reference_confidence:5.2f}")
    score = {name: (np.mean([a for a, _ in s]), np.mean([b for _, b in s])) for name, s in
             (("muscat", ours), ("essentia", theirs))}
    print(f"\n{'piece':24} {'truth':>6} {'muscat':>8} {'':>3} {'conf.':>5} {'multifeat.':>10} {'':>3} {'conf.':>5}",
          *rows, sep="\n")
    print(f"beat_confidence (degara + TempoTapDegara): median {np.median(confidences):.2f}")
    assert np.median(confidences) >= 3.0  # drums with a steady pulse: the trackers agree
    for name, (a1, a2) in score.items():
        print(f"{name:10} accuracy1 {a1:.1%}  accuracy2 {a2:.1%}  ({len(TEMPO_SET)} pieces)")
    assert score["muscat"][0] >= 0.9
    assert score["muscat"][0] >= score["essentia"][0] and score["muscat"][1] >= score["essentia"][1]


def test_mirex_key_score_on_the_24_keys(tmp_path, extractors):
    import essentia.standard as es

    ours, theirs, rows = [], [], []
    for piece in KEY_SET:
        audio = decode.decode(str(write(tmp_path / f"{piece.name}.flac", key_piece(piece)[:, None])))
        values = extractors["key"].run(audio).values
        reference = es.KeyExtractor()(audio.mono())[:2]
        ours.append(mirex_key_score((values["key"], values["scale"]), (piece.tonic, piece.scale)))
        theirs.append(mirex_key_score(reference, (piece.tonic, piece.scale)))
        rows.append(f"{piece.name:22} {values['key']} {values['scale']:6} {ours[-1]:.1f}   "
                    f"{reference[0]} {reference[1]:6} {theirs[-1]:.1f}")
    print("\n" + "\n".join(rows))
    print(f"MIREX weighted key score: muscat {np.mean(ours):.3f}, Essentia KeyExtractor {np.mean(theirs):.3f} "
          f"({len(KEY_SET)} pieces: 12 tonics x major/minor, 4 timbres, inversions)")
    assert len({(p.tonic, p.scale) for p in KEY_SET}) == 24
    assert np.mean(ours) >= 0.9 and np.mean(ours) >= np.mean(theirs)


def test_beat_confidence_is_low_without_a_pulse(tmp_path, extractors):
    rng = np.random.default_rng(5)
    clicks = np.zeros((44100 * 20, 1), np.float32)
    for at in rng.uniform(0, 19.9, 80):  # 80 clicks at random times: onsets, but no pulse
        a = int(at * 44100)
        clicks[a : a + 200, 0] += 0.5 * rng.standard_normal(200) * np.exp(-np.arange(200) / 40)
    for name, samples in [("white_noise.flac", white_noise(20)), ("random_clicks.flac", clicks)]:
        values = extractors["rhythm"].run(decode.decode(str(write(tmp_path / name, samples)))).values
        print(f"{name}: beat_confidence {values['beat_confidence']:.2f}")
        assert 0 <= values["beat_confidence"] < 1.0, name


@pytest.mark.parametrize("name,samples,reason", [
    ("tone_-91dBFS.wav", sine_at_rms(-91, 440, 10), "below -70 dBFS RMS"),
    ("silence.flac", np.zeros((44100 * 5, 1), np.float32), "silence"),
    ("white_noise.flac", white_noise(15), "noise (chroma entropy"),
])
def test_no_key_is_null_with_a_reason(tmp_path, extractors, name, samples, reason):
    values = extractors["key"].run(decode.decode(str(write(tmp_path / name, samples)))).values
    assert values["key"] is None and values["scale"] is None and values["key_second"] is None
    assert values["no_key_reason"].startswith(reason)


def test_a_quiet_but_audible_piece_keeps_its_key(tmp_path, extractors):
    piece = next(p for p in KEY_SET if (p.tonic, p.scale) == ("D", "minor"))
    samples = key_piece(piece)
    quiet = samples * (10 ** (-50 / 20) / np.sqrt(np.mean(samples.astype(np.float64) ** 2)))  # -50 dBFS RMS
    values = extractors["key"].run(decode.decode(str(write(tmp_path / "quiet.flac", quiet[:, None])))).values
    assert (values["key"], values["scale"], values["no_key_reason"]) == ("D", "minor", None)
