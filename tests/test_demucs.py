"""Demucs stems from a local model folder: availability, formats, layout, atomic writes, and
hpcp on the harmonic stems. A tiny random-weight HTDemucs is loaded through the real path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from audio import chord_progression, sine, write
from conftest import rows, run_muscat
from models import tiny_demucs_repo

import catalog
from catalog import decode
from catalog.artifacts import track_folder
from catalog.extractor import Inputs
from catalog.model_stage import run_here
from extractors import demucs

STEMS = ["bass", "drums", "other", "vocals"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return tiny_demucs_repo(tmp_path_factory.mktemp("models"))


def params(repo: Path, **overrides) -> dict:
    return {**demucs.EXTRACTOR.params, "repo": str(repo), "model": "tiny", "shifts": 0, **overrides}


def separate(repo: Path, source: Path, artifacts: Path, **overrides):
    """(audio, what demucs made of it), run in this process."""
    audio = decode.decode(str(source))
    made = run_here(demucs, audio, params(repo, **overrides), Inputs(artifacts_dir=str(artifacts)))
    return audio, made


def test_unavailable_without_a_model_folder_and_nothing_fails(tmp_path, repo):
    db = tmp_path / "c.duckdb"
    listing = {e["name"]: e for e in json.loads(run_muscat("extractors", "--json", db=db).stdout)}
    assert listing["demucs"]["available"] is False and "is not installed" in listing["demucs"]["reason"]
    for toml, reason in [(f'repo = "{tmp_path}/nowhere"', "does not exist"),
                         (f'repo = "{repo}"\nmodel = "htdemucs_ft"', "is not in")]:
        (tmp_path / "muscat.toml").write_text(f"[extractors.demucs]\n{toml}\n")
        entry = {e["name"]: e for e in json.loads(run_muscat("extractors", "--json", db=db).stdout)}["demucs"]
        assert entry["available"] is False and reason in entry["reason"]
    write(tmp_path / "Music" / "a.wav", sine(440, 1.0))
    run_muscat("scan", str(tmp_path / "Music"), db=db)
    named = run_muscat("extract", "--only", "demucs", db=db)  # asked for by name: exit 2, the reason
    assert named.returncode == 2 and "demucs cannot run" in named.stderr and "is not in" in named.stderr
    result = run_muscat("extract", "--only", "loudness", "--json", db=db)
    assert result.returncode == 0 and json.loads(result.stdout)["failed"] == 0
    assert rows(catalog.Database(db), "SELECT count(*) FROM pending WHERE extractor = 'demucs'") == [(0,)]


@pytest.mark.parametrize("fmt,extra,subtype", [
    ("flac", {}, "PCM_16"), ("flac", {"bits": 24}, "PCM_24"),
    ("wav", {}, "PCM_16"), ("wav", {"bits": 24}, "PCM_24"), ("wav", {"bits": 32}, "FLOAT"),
    ("mp3", {"mp3_mode": "vbr"}, "MPEG_LAYER_III"), ("mp3", {"mp3_mode": "cbr", "mp3_bitrate": 128}, "MPEG_LAYER_III"),
    ("ogg", {}, "VORBIS"),
])
def test_four_stems_in_every_format(tmp_path, repo, fmt, extra, subtype):
    source = write(tmp_path / "Song.wav", sine(220, 1.5, channels=2))
    audio, made = separate(repo, source, tmp_path / "artifacts", format=fmt, **extra)
    folder = tmp_path / "artifacts" / "tiny" / f"Song-{audio.audio_id[:12]}"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{s}.{fmt}" for s in STEMS)
    for stem in STEMS:
        info = sf.info(folder / f"{stem}.{fmt}")
        assert (info.samplerate, info.channels, info.subtype) == (44100, 2, subtype)
        assert abs(info.frames - audio.frames) <= (3000 if fmt == "mp3" else 0)
    assert sorted(a.kind for a in made.artifacts) == sorted(f"stem:{s}" for s in STEMS)
    shares = [made.values[f"{s}_share"] for s in STEMS]
    assert sum(shares) == pytest.approx(1.0) and all(0 <= s <= 1 for s in shares)


def reference_stems(repo: Path, model: str, audio, shifts: int, offset: int = 0) -> np.ndarray:
    """What Demucs' own API makes of the audio: [sources, channels, samples]."""
    import torch
    from demucs import apply
    from demucs.api import Separator

    apply.random.randint = lambda low, high: offset  # the shift muscat drew for this audio
    separator = Separator(model, repo=repo, device="cpu", shifts=shifts, overlap=0.25, progress=False)
    _, stems = separator.separate_tensor(torch.from_numpy(np.ascontiguousarray(audio.samples.T)), 44100)
    return np.stack([stems[s].numpy() for s in ["drums", "bass", "other", "vocals"]])


@pytest.mark.parametrize("model,shifts", [("tiny", 0), ("tiny", 1), ("pair", 0)])
def test_windows_batched_as_the_gpu_worker_does_equal_demucs_own_separation(tmp_path, repo, model, shifts, monkeypatch):
    # A bag of two members weighted per source, and a track of 3.3 segments (a short last window).
    tiny_demucs_repo(repo, name="tiny2", seed=1)
    (repo / "pair.yaml").write_text("models: ['tiny', 'tiny2']\nweights: [[1, 0, 1, 0.5], [0, 1, 1, 0.5]]\n")
    mono = chord_progression(seconds_each=0.66)
    source = write(tmp_path / "mix.wav", np.hstack([mono, 0.5 * np.roll(mono, 300)]))
    audio = decode.decode(str(source))
    inputs = Inputs(artifacts_dir=str(tmp_path / "artifacts"))
    separation = demucs.load_model(params(repo, model=model), "cpu")
    info = demucs.model_info(separation)
    items, state = demucs.prepare(audio, params(repo, model=model, shifts=shifts), info, inputs)
    assert items.shape[1:] == (2, info["window_length"]) and len(items) > 4
    import torch

    with torch.inference_mode():  # windows of one file split over batches of 3, as from several files
        outputs = [demucs.forward(separation, torch.from_numpy(items[i : i + 3])).numpy() for i in range(0, len(items), 3)]
    made = demucs.finish(audio, params(repo, model=model), info, state, outputs, inputs)
    ours = np.stack([made.leaves["stems"][s].T for s in ["drums", "bass", "other", "vocals"]])
    offset = state["plan"][0][1] + int(0.5 * 44100) if shifts else 0
    monkeypatch.setattr("demucs.apply.random.randint", lambda low, high: offset)
    expected = reference_stems(repo, model, audio, shifts, offset)
    assert ours.shape == expected.shape == (4, 2, audio.frames)
    np.testing.assert_allclose(ours, expected, atol=2e-4 * np.abs(expected).max())


def test_shifted_separation_is_the_same_for_the_same_audio(tmp_path, repo):
    source = write(tmp_path / "mix.wav", chord_progression(seconds_each=0.4))
    _, first = separate(repo, source, tmp_path / "one", shifts=2)
    _, again = separate(repo, source, tmp_path / "two", shifts=2)
    for stem in ["drums", "vocals"]:
        np.testing.assert_array_equal(first.leaves["stems"][stem], again.leaves["stems"][stem])


def test_mono_and_other_rates_come_out_as_the_models_stereo(tmp_path, repo):
    source = write(tmp_path / "mono48.wav", sine(220, 1.0, sr=48000), sr=48000)
    _, made = separate(repo, source, tmp_path / "artifacts")
    info = sf.info(made.artifacts[0].path)
    assert (info.samplerate, info.channels) == (44100, 2)
    assert info.frames == pytest.approx(44100, abs=2)


def test_same_names_never_share_a_folder_and_odd_names_stay_inside(tmp_path, repo):
    artifacts = tmp_path / "artifacts"
    one = write(tmp_path / "a" / "song.wav", sine(220, 1.0))
    two = write(tmp_path / "b" / "song.wav", sine(330, 1.0))
    folders = {Path(separate(repo, p, artifacts)[1].artifacts[0].path).parent for p in (one, two)}
    assert len(folders) == 2
    for name in ["..flac", "..", "ünïcødé 曲.wav", "x" * 240 + ".wav", "new\nline.wav", "back\\slash.wav"]:
        folder = track_folder(str(artifacts), "tiny", f"/music/{name}", "0123456789abcdef")
        assert folder.resolve().is_relative_to(artifacts.resolve()) and folder.parent == artifacts / "tiny"
        assert len(folder.name.encode()) <= 100 and "\n" not in folder.name


def test_gc_removes_stems_of_audio_no_file_holds(tmp_path, repo):
    root = tmp_path / "Music"
    write(root / "gone.wav", sine(220, 1.0))
    write(root / "kept.wav", sine(330, 1.0))
    db = tmp_path / "c.duckdb"
    (tmp_path / "muscat.toml").write_text(f'[extractors.demucs]\nrepo = "{repo}"\nmodel = "tiny"\nshifts = 0\n')
    run_muscat("scan", str(root), db=db)
    run_muscat("extract", "--only", "demucs", db=db)
    database = catalog.Database(db)
    gone = [Path(a) for (a,) in rows(database, "SELECT artifact FROM artifacts WHERE path LIKE '%gone.wav'")]
    size = sum(p.stat().st_size for p in gone)
    (root / "gone.wav").unlink()
    run_muscat("scan", str(root), db=db)
    report = json.loads(run_muscat("gc", "--older-than", "0", "--json", db=db).stdout)
    assert report["orphaned_audio"] == 1 and report["artifact_bytes"] == size > 0
    assert not any(p.exists() for p in gone)
    assert all(Path(a).is_file() for (a,) in rows(database, "SELECT artifact FROM artifacts"))


def test_a_crash_mid_write_leaves_no_stem(tmp_path, monkeypatch):
    target = tmp_path / "drums.flac"
    real_write = sf.SoundFile.write
    calls = []

    def failing(self, data):
        calls.append(1)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(sf.SoundFile, "write", failing)
    with pytest.raises(OSError, match="No space"):
        demucs.write_stem(target, np.zeros((200_000, 2), np.float32), 44100, demucs.EXTRACTOR.params)
    assert list(tmp_path.iterdir()) == []  # neither the stem nor its temporary file


def test_stems_in_the_catalogue_and_hpcp_on_the_harmonic_stems(tmp_path, repo):
    root = tmp_path / "Music"
    write(root / "chords.flac", chord_progression(seconds_each=0.5))
    write(root / "tone.wav", sine(330, 1.0, channels=2))
    db = tmp_path / "c.duckdb"
    (tmp_path / "muscat.toml").write_text(f'[extractors.demucs]\nrepo = "{repo}"\nmodel = "tiny_bag"\nshifts = 0\n')
    listing = {e["name"]: e for e in json.loads(run_muscat("extractors", "--json", db=db).stdout)}
    assert listing["demucs"]["available"] and listing["bass_pitch"]["available"]  # needs demucs: there
    run_muscat("scan", str(root), db=db)
    result = run_muscat("extract", "--only", "demucs,hpcp,bass_pitch", "--json", db=db)
    assert result.returncode == 0, result.stderr
    database = catalog.Database(db)
    assert rows(database, "SELECT DISTINCT text FROM features WHERE feature = 'bass_source'") == [("stems",)]
    assert rows(database, "SELECT count(*), count(DISTINCT artifact) FROM artifacts") == [(8, 8)]
    for (artifact,) in rows(database, "SELECT artifact FROM artifacts"):
        assert Path(artifact).is_file() and Path(artifact).is_relative_to(tmp_path / "muscat-artifacts" / "tiny_bag")
    assert rows(database, "SELECT DISTINCT device FROM runs WHERE extractor = 'demucs'") == [("cpu",)]
    inputs = rows(database, "SELECT DISTINCT input FROM runs WHERE extractor = 'hpcp'")
    assert len(inputs) == 1 and inputs[0][0].startswith("demucs:1:")
    assert rows(database, "SELECT DISTINCT text FROM features WHERE feature = 'chroma_source'") == [("stems",)]
    assert rows(database, "SELECT count(*) FROM stale") == [(0,)]
    # New weights: the stems (and so hpcp's input) are stale; reindex redoes both.
    os.utime(repo / "tiny.th", ns=(1, 1))
    assert rows(database, "SELECT count(*) FROM stale") == [(0,)]
    summary = json.loads(run_muscat("reindex", "--dry-run", "--json", db=db).stdout)
    assert summary["extractors"]["demucs"]["reasons"] == {"weights": 2}
    assert run_muscat("reindex", db=db).returncode == 0
    assert rows(database, "SELECT count(*) FROM stale") == [(0,)]
    # The new stems were written over the old ones' paths: gc must not remove them.
    assert json.loads(run_muscat("gc", "--json", db=db).stdout)["artifact_bytes"] == 0
    for (artifact,) in rows(database, "SELECT artifact FROM artifacts"):
        assert Path(artifact).is_file()


def test_model_files_that_fail_their_checksum_are_never_loaded(tmp_path, repo):
    """A `<sig>-<sha256 prefix>.th` file is verified before it is unpickled; a mismatch makes the
    extractor unavailable with the reason, and nothing is marked failed."""
    import hashlib
    import shutil

    data = (repo / "tiny.th").read_bytes()
    good = tmp_path / "good"
    good.mkdir()
    (good / f"tiny-{hashlib.sha256(data).hexdigest()[:8]}.th").write_bytes(data)
    assert demucs.available(params(good)) is None
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    target = next(bad.glob("*.th"))
    target.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # one bit off
    reason = demucs.available(params(bad))
    assert reason is not None and "is not the model its name says" in reason and str(target) in reason

    (tmp_path / "muscat.toml").write_text(f'[extractors.demucs]\nrepo = "{bad}"\nmodel = "tiny"\n')
    db = tmp_path / "c.duckdb"
    entry = {e["name"]: e for e in json.loads(run_muscat("extractors", "--json", db=db).stdout)}["demucs"]
    assert entry["available"] is False and "checksum" in entry["reason"]
    write(tmp_path / "Music" / "a.wav", sine(440, 1.0))
    run_muscat("scan", str(tmp_path / "Music"), db=db)
    result = run_muscat("extract", "--only", "demucs", "--json", db=db)
    assert result.returncode == 2 and "is not the model its name says" in result.stderr
    assert rows(catalog.Database(db), "SELECT count(*) FROM runs WHERE extractor = 'demucs'") == [(0,)]
