"""Basic Pitch with its real weights (the ONNX model in its wheel) on synthesised audio with known
notes, scored with mir_eval: a monophonic line (also through an MP3 encoder), a chord
progression, a bass line under drums given as demucs' stems; the MIDI files read back."""

from __future__ import annotations

import json
from pathlib import Path

import mir_eval
import numpy as np
import pretty_midi
import pytest
from audio import chord_progression, write
from conftest import rows, run_muscat
from models import tiny_demucs_repo

import catalog
from catalog import decode, registry
from catalog.artifacts import track_folder
from catalog.extractor import Inputs, Upstream
from extractors import _basic_pitch as bp

SR = 44100
SOFT = ((1, 1.0), (2, 0.3), (3, 0.15))  # a mellow, flute- or organ-like tone
BASS = ((1, 1.0), (2, 0.5), (3, 0.3), (4, 0.2), (5, 0.1))
MELODY = [60, 62, 64, 65, 67, 69, 71, 72, 67, 64, 60, 62, 65, 69, 74, 72]
BASS_LINE = [40, 40, 43, 45, 38, 40, 47, 45, 36, 43, 40, 33, 35, 40]  # E1 (33) to B2 (47)


def tone(midi: int, seconds: float, harmonics, decay: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    f0 = 440 * 2 ** ((midi - 69) / 12)
    envelope = np.minimum(1, t / 0.005) * np.exp(-decay * t) * np.minimum(1, (seconds - t) / 0.01)
    return sum(a * np.sin(2 * np.pi * f0 * k * t) for k, a in harmonics) * envelope


def line(notes: list[int], seconds: float, gap: float, harmonics, amp: float, decay: float):
    """A monophonic line, [frames, 1], and its notes as (start s, end s, MIDI) ground truth."""
    parts, truth, at = [], [], 0
    for note in notes:
        parts.append(np.zeros(int(gap * SR)))
        at += int(gap * SR)
        parts.append(amp * tone(note, seconds, harmonics, decay))
        truth.append((at / SR, (at + int(seconds * SR)) / SR, note))
        at += int(seconds * SR)
    return np.concatenate(parts).astype(np.float32)[:, None], truth


def drum_pattern(frames: int, bpm: float = 120) -> np.ndarray:
    """Kick on 1, snare on 3, hi-hat on every eighth: [frames, 1]."""
    out, t = np.zeros(frames), np.arange(int(0.15 * SR)) / SR
    rng = np.random.default_rng(0)
    kick = 0.8 * np.sin(2 * np.pi * (50 + 100 * np.exp(-t * 30)) * t) * np.exp(-t * 20)
    snare = 0.5 * rng.standard_normal(len(t)) * np.exp(-t * 25)
    hat = np.diff(0.2 * rng.standard_normal(len(t)) * np.exp(-t * 80), prepend=0)
    for i, start in enumerate(np.arange(0, frames / SR - 0.2, 30 / bpm)):
        a = int(start * SR)
        out[a : a + len(t)] += hat + (kick if i % 4 == 0 else 0) + (snare if i % 4 == 2 else 0)
    return out.astype(np.float32)[:, None]


def f_measure(truth: list[tuple[float, float, int]], notes: list[tuple[float, float, int]]) -> float:
    """mir_eval's note F-measure: onsets within 50 ms, pitch within 50 cents, offsets ignored."""
    def split(events):
        intervals = np.array([[a, b] for a, b, _ in events]).reshape(-1, 2)
        return intervals, np.array([440 * 2 ** ((m - 69) / 12) for *_, m in events])

    (ri, rp), (ei, ep) = split(truth), split(notes)
    return mir_eval.transcription.precision_recall_f1_overlap(
        ri, rp, ei, ep, onset_tolerance=0.05, pitch_tolerance=50, offset_ratio=None)[2]


def midi_notes(path: str) -> list[tuple[float, float, int]]:
    midi = pretty_midi.PrettyMIDI(path)
    return sorted((n.start, n.end, n.pitch) for i in midi.instruments for n in i.notes)


@pytest.fixture(scope="module")
def extractors(tmp_path_factory):
    settings = catalog.load_settings(db=tmp_path_factory.mktemp("x") / "x.duckdb")
    return {e.name: e for e in registry.load_extractors(settings)}


def run(extractor, path: Path, artifacts: Path, inputs: Inputs | None = None):
    audio = decode.decode(str(path))
    inputs = inputs or Inputs(artifacts_dir=str(artifacts))
    return audio, extractor.run(audio, inputs)


@pytest.mark.parametrize("ext", ["flac", "mp3"])
def test_monophonic_line_scores_at_least_0_8_and_its_midi_reads_back(tmp_path, extractors, ext):
    samples, truth = line(MELODY, 0.4, 0.1, SOFT, 0.3, 1.5)
    source = write(tmp_path / f"melody.{ext}", samples)  # mp3: through LAME
    audio, made = run(extractors["notes"], source, tmp_path / "art")
    [artifact] = made.artifacts
    assert (artifact.kind, artifact.format) == ("midi", "mid")
    assert Path(artifact.path) == track_folder(str(tmp_path / "art"), "notes", str(source), audio.audio_id) / "notes.mid"
    read = midi_notes(artifact.path)
    assert f_measure(truth, read) >= 0.8
    # The file holds the notes the summary counts, the ones Basic Pitch made (to MIDI's tick).
    made_notes = bp.transcribe(bp.to_model_rate(audio.mono()), extractors["notes"].params)
    assert len(read) == len(made_notes) == made.values["note_count"]
    for (start, end, pitch), note in zip(read, sorted(made_notes, key=lambda n: (n.start, n.pitch))):
        assert (start, end, pitch) == (pytest.approx(note.start, abs=0.003), pytest.approx(note.end, abs=0.003),
                                       note.pitch)
    values = made.values
    assert values["note_pitch_min"] == 60 and values["note_pitch_median"] == pytest.approx(np.median(MELODY), abs=1)
    if ext == "flac":
        assert values["note_pitch_max"] == 74 and values["polyphony_mean"] == pytest.approx(1, abs=0.05)
    else:  # LAME's artefacts: Basic Pitch reads an odd note high above one of the tones
        assert values["note_pitch_max"] >= 74 and values["polyphony_mean"] == pytest.approx(1, abs=0.15)
    assert values["note_duration_median"] == pytest.approx(0.4, abs=0.06)
    assert values["note_rate"] == pytest.approx(len(MELODY) / audio.duration, rel=0.15)
    assert values["notes_source"] == "mix"


def test_chord_progression_pitch_class_profile_top_three_are_c_e_g(tmp_path, extractors):
    source = write(tmp_path / "chords.flac", chord_progression())  # C F C G C, octave 4
    _, made = run(extractors["notes"], source, tmp_path / "art")
    profile = np.array(made.values["pitch_class_profile"])
    assert profile.sum() == pytest.approx(1) and (profile >= 0).all()
    assert {int(i) for i in np.argsort(-profile)[:3]} == {0, 4, 7}  # C, E, G
    assert made.values["polyphony_mean"] >= 2.5  # chords: several notes at once
    read = midi_notes(made.artifacts[0].path)
    weights = np.zeros(12)
    for start, end, pitch in read:
        weights[pitch % 12] += end - start
    assert weights / weights.sum() == pytest.approx(profile, abs=0.01)


def test_the_notes_are_basic_pitch_own_predict_notes(tmp_path, extractors):
    """basic_pitch.inference.predict (one window at a time, librosa) on the same file and the
    same ONNX model: the same notes; the last note's end may differ by a frame (11.6 ms)."""
    from basic_pitch import inference

    samples, _ = line(MELODY[:8], 0.4, 0.1, SOFT, 0.3, 1.5)
    source = write(tmp_path / "melody.wav", samples)
    _, made = run(extractors["notes"], source, tmp_path / "art")
    _, _, events = inference.predict(str(source), bp.model_path())
    theirs = sorted((float(a), float(b), int(p)) for a, b, p, _, _ in events)
    ours = midi_notes(made.artifacts[0].path)
    assert len(ours) == len(theirs)
    for (a, b, p), (c, d, q) in zip(ours, theirs):
        assert (a, p) == (pytest.approx(c, abs=0.003), q) and b == pytest.approx(d, abs=0.015)


def test_the_faster_graph_gives_the_stock_graphs_activations_bit_for_bit(monkeypatch):
    """faster_graph rewrites three spots of nmp.onnx that onnxruntime runs slowly; on music
    (chords, then a bass line over drums: 22 s, 14 windows, so batches of 4 and a last one of 2)
    every note, onset and contour activation is the stock graph's, bit for bit."""
    bass, _ = line(BASS_LINE, 0.45, 0.05, BASS, 0.4, 1.0)
    music = np.concatenate([chord_progression(), 0.7 * (bass + drum_pattern(len(bass)))])[:, 0]
    signal = bp.to_model_rate(music)
    stock = bp.model_path().read_bytes()
    faster = bp.faster_graph(stock)
    graph = bp._onnx_proto().ModelProto.FromString(faster).graph  # basic-pitch 0.4.0 has all three:
    assert sorted(tuple(t.dims) for t in graph.initializer if t.name in {i for n in graph.node if n.name.startswith(
        ("model_1/batch_normalization/FusedBatchNormV3;", "model_1/cq_t2010v2_1/mul_1;")) for i in n.input}) == \
        [(1, 1, 1, 1), (1, 1, 1, 1), (309, 1, 2)]
    assert sum(n.name.startswith("muscat/harmonic_plane_") for n in graph.node) == 8
    assert bp.faster_graph(faster) == faster  # a graph without them is left as it is
    ours = bp.activations(signal)
    monkeypatch.setattr(bp, "STOCK_GRAPH", True)
    theirs = bp.activations(signal)
    assert len(ours["note"]) == int(len(signal) * bp.FPS / bp.MODEL_RATE)
    for key in ("note", "onset", "contour"):
        assert ours[key].dtype == theirs[key].dtype and np.array_equal(ours[key], theirs[key]), key


def place_stems(artifacts: Path, source: Path, audio_id: str, stems: dict[str, np.ndarray]) -> Upstream:
    """Stems laid out and handed over as a finished demucs run's are."""
    folder = track_folder(str(artifacts), "tiny", str(source), audio_id)
    paths = {f"stem:{name}": str(write(folder / f"{name}.flac", np.repeat(data, 2, axis=1)))
             for name, data in stems.items()}
    return Upstream(identity="demucs:1:0123456789abcdef", artifacts=paths)


def test_bass_line_under_drums_on_the_bass_stem(tmp_path, extractors):
    bass, truth = line(BASS_LINE, 0.45, 0.05, BASS, 0.4, 1.0)
    drums = drum_pattern(len(bass))
    source = write(tmp_path / "groove.flac", 0.7 * (bass + drums))
    audio = decode.decode(str(source))
    silent = np.zeros_like(bass)
    upstream = place_stems(tmp_path / "art", source, audio.audio_id,
                           {"bass": 0.7 * bass, "drums": 0.7 * drums, "other": silent, "vocals": silent})
    made = extractors["bass_notes"].run(audio, Inputs({"demucs": upstream}, str(tmp_path / "art")))
    values = made.values
    assert values["bass_notes_source"] == "stems"
    read = midi_notes(made.artifacts[0].path)
    assert f_measure(truth, read) >= 0.8
    assert all(end <= following + 1e-3 for (_, end, _), (following, _, _) in zip(read, read[1:]))  # one at a time
    assert pretty_midi.PrettyMIDI(made.artifacts[0].path).instruments[0].program == 33
    assert (values["bass_pitch_min"], values["bass_pitch_max"]) == (33, 47)
    assert values["bass_note_count"] == len(read)
    assert values["bass_note_duration_median"] == pytest.approx(0.45, abs=0.06)
    # Without stems the mix is read (kick and bass share the register), and said so.
    on_mix = extractors["bass_notes"].run(audio, Inputs(artifacts_dir=str(tmp_path / "mix"))).values
    assert on_mix["bass_notes_source"] == "mix"
    assert on_mix["bass_pitch_min"] >= 23 and on_mix["bass_pitch_max"] <= 67


def test_notes_read_the_harmonic_stems_not_the_drums(tmp_path, extractors):
    chords = chord_progression(seconds_each=1.0)
    drums = drum_pattern(len(chords))
    source = write(tmp_path / "song.flac", 0.5 * (chords + drums))
    audio = decode.decode(str(source))
    silent = np.zeros_like(chords)
    upstream = place_stems(tmp_path / "art", source, audio.audio_id,
                           {"bass": silent, "drums": 0.5 * drums, "other": 0.5 * chords, "vocals": silent})
    inputs = Inputs({"demucs": upstream}, str(tmp_path / "art"))
    on_stems = extractors["notes"].run(audio, inputs).values
    alone = extractors["notes"].run(decode.decode(str(write(tmp_path / "c.flac", 0.5 * chords))),
                                    Inputs(artifacts_dir=str(tmp_path / "alone"))).values
    assert on_stems["notes_source"] == "stems"
    assert on_stems["note_count"] == alone["note_count"]  # the drums stem was left out
    assert on_stems["pitch_class_profile"] == pytest.approx(alone["pitch_class_profile"], abs=0.02)
    mix_only = extractors["notes"]
    module, params = mix_only.module, {**mix_only.params, "use_stems": False}
    assert module.uses(params) == []
    assert module.extract(audio, params, inputs).values["notes_source"] == "mix"


def test_silence_has_no_notes_and_an_empty_midi(tmp_path, extractors):
    source = write(tmp_path / "silence.wav", np.zeros((SR * 3, 1), np.float32))
    _, made = run(extractors["notes"], source, tmp_path / "art")
    values = made.values
    assert values["note_count"] == 0 and values["note_rate"] == 0
    assert values["note_pitch_median"] is None and values["polyphony_mean"] is None
    assert values["pitch_class_profile"] == pytest.approx([1 / 12] * 12)
    assert midi_notes(made.artifacts[0].path) == []
    _, bass = run(extractors["bass_notes"], source, tmp_path / "art")
    assert bass.values["bass_note_count"] == 0 and bass.values["bass_pitch_min"] is None


def test_monophonic_keeps_the_strongest_of_notes_together_and_cuts_overlaps():
    notes = [bp.Note(0.0, 1.0, 40, 0.8), bp.Note(0.01, 0.9, 52, 0.3),  # an octave read beside it
             bp.Note(0.2, 0.6, 52, 0.4),  # weaker, inside the first: an overtone, dropped
             bp.Note(0.5, 1.5, 43, 0.6),  # starts while the first sounds, outlasts it: the first is cut
             bp.Note(0.58, 1.6, 45, 0.9)]  # cuts 43 to an 80 ms stub, which goes
    kept = bp.monophonic(notes, min_seconds=0.1)
    assert [(n.start, n.end, n.pitch) for n in kept] == [(0.0, 0.5, 40), (0.58, 1.6, 45)]


def test_bad_parameters_say_which_and_why(tmp_path):
    db = tmp_path / "c.duckdb"
    for toml, reason in [("[extractors.notes]\nonset_threshold = 'high'\n", "onset_threshold must be float"),
                         ("[extractors.notes]\nminimum_frequency = 500.0\nmaximum_frequency = 100.0\n",
                          "minimum_frequency (500.0 Hz) must be below maximum_frequency (100.0 Hz)"),
                         ("[extractors.bass_notes]\nframe_threshold = 1.5\n", "frame_threshold must be")]:
        (tmp_path / "muscat.toml").write_text(toml)
        result = run_muscat("extractors", "--json", db=db)
        if result.returncode == 2:
            assert reason in result.stderr
        else:
            entries = {e["name"]: e for e in json.loads(result.stdout)}
            name = "bass_notes" if "bass_notes" in toml else "notes"
            assert entries[name]["available"] is False and reason in entries[name]["reason"]


def test_stats_and_features_show_note_rates_with_units_and_stems_make_notes_stale(tmp_path):
    root = tmp_path / "Music"
    bass, _ = line(BASS_LINE[:6], 0.45, 0.05, BASS, 0.4, 1.0)
    write(root / "groove.flac", 0.7 * (bass + drum_pattern(len(bass))))
    db = tmp_path / "c.duckdb"
    assert run_muscat("scan", str(root), db=db).returncode == 0
    assert run_muscat("extract", "--only", "notes", db=db).stderr.strip().endswith(
        "notes is off by default: `enabled = true` under [extractors.notes] in muscat.toml switches it on")
    (tmp_path / "muscat.toml").write_text("[extractors.notes]\nenabled = true\n")
    first = run_muscat("extract", "--only", "notes", "--json", db=db)  # no demucs yet: on the mix
    assert first.returncode == 0, first.stderr
    database = catalog.Database(db)
    assert rows(database, "SELECT text FROM features WHERE feature = 'notes_source'") == [("mix",)]
    repo = tiny_demucs_repo(tmp_path / "models")
    (tmp_path / "muscat.toml").write_text(f'[extractors.demucs]\nrepo = "{repo}"\nmodel = "tiny"\nshifts = 0\n'
                                          "[extractors.notes]\nenabled = true\n[extractors.bass_notes]\nenabled = true\n")
    result = run_muscat("extract", "--only", "demucs,bass_notes", "--json", db=db)
    assert result.returncode == 0, result.stderr
    assert rows(database, "SELECT extractor, reason FROM stale") == [("notes", "input")]
    assert run_muscat("reindex", db=db).returncode == 0
    assert rows(database, "SELECT DISTINCT text FROM features WHERE feature IN ('notes_source', 'bass_notes_source')") \
        == [("stems",)]
    stats = run_muscat("stats", "note_rate", "bass_note_rate", db=db)
    assert stats.returncode == 0, stats.stderr
    lines = {line.split()[0]: line for line in stats.stdout.splitlines() if line.strip()}
    assert "notes/s" in lines["note_rate"] and "notes/s" in lines["bass_note_rate"]
    listed = json.loads(run_muscat("stats", "note_rate", "bass_note_rate", "--json", db=db).stdout)
    assert {(s["feature"], s["unit"], s["count"]) for s in listed} == {("note_rate", "notes/s", 1),
                                                                       ("bass_note_rate", "notes/s", 1)}
    units = rows(database, "SELECT feature, unit FROM features WHERE feature IN ('bass_pitch_min', 'note_pitch_max', "
                           "'note_duration_median') ORDER BY feature")
    assert units == [("bass_pitch_min", "MIDI note"), ("note_duration_median", "s"), ("note_pitch_max", "MIDI note")]
    midis = rows(database, "SELECT extractor, format FROM artifacts WHERE kind = 'midi' ORDER BY extractor")
    assert midis == [("bass_notes", "mid"), ("notes", "mid")]
    for (path,) in rows(database, "SELECT artifact FROM artifacts WHERE kind = 'midi'"):
        assert Path(path).is_relative_to(tmp_path / "muscat-artifacts")
