"""Drum transcription: ADTOF's architecture loading a checkpoint in its port's format."""

from __future__ import annotations

import json

import numpy as np
import pytest
from audio import click_track, write
from conftest import rows, run_muscat
from models import adtof_checkpoint

import catalog
from extractors import drums


def test_filterbank_has_84_bands_that_each_sum_to_one():
    bank = drums.filterbank()
    assert bank.shape == (1024, 84)
    assert np.allclose(bank.sum(axis=0), 1.0)


def test_checkpoint_loads_with_strict_keys_and_runs(tmp_path):
    import torch

    path = adtof_checkpoint(tmp_path / "adtof.pth")
    model = drums.load(str(path), "cpu")
    clicks = torch.from_numpy(click_track(120, 3)[:, 0])
    with torch.inference_mode():
        curves = drums.forward(model, clicks[None])[0].numpy()
        # Files of one length share a forward pass in the GPU worker: a batch changes nothing.
        batched = drums.forward(model, torch.stack([torch.zeros_like(clicks), clicks]))[1].numpy()
    assert curves.shape == (301, 5) and ((curves >= 0) & (curves <= 1)).all()
    np.testing.assert_allclose(batched, curves, atol=1e-5)
    names = set(torch.load(path, weights_only=False)["model_weights"])
    assert {"cnn_blocks.0.0.weight", "cnn_blocks.1.5.running_var", "gru_layers.2.weight_hh_l0_reverse",
            "output_layer.weight"} <= names


def test_a_checkpoint_of_another_shape_is_refused(tmp_path):
    import torch

    path = adtof_checkpoint(tmp_path / "adtof.pth")
    checkpoint = torch.load(path, weights_only=False)
    checkpoint["model_weights"]["output_layer.weight"] = torch.zeros(4, 120)
    torch.save(checkpoint, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="does not match ADTOF"):
        drums.load(str(tmp_path / "other.pth"), "cpu")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pth")
    with pytest.raises(ValueError, match="not an ADTOF checkpoint"):
        drums.load(str(tmp_path / "foreign.pth"), "cpu")


class Payload:
    """A pickled object whose loading would run code: what a malicious weights file holds."""

    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_a_checkpoint_that_would_run_code_is_refused_unloaded(tmp_path, monkeypatch):
    import torch

    path = adtof_checkpoint(tmp_path / "adtof.pth")
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["model_info"]["payload"] = Payload()
    torch.save(checkpoint, tmp_path / "evil.pth")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="is not a plain weights file"):
        drums.load(str(tmp_path / "evil.pth"), "cpu")
    assert not (tmp_path / "PWNED").exists()


def test_peak_picking_finds_known_onsets():
    curve = np.zeros(300)
    for frame in (10, 11, 50, 120, 121, 200):
        curve[frame] = 0.9
    curve[121] = 0.95  # 120 and 121 are one onset: the higher frame wins
    curve[80] = 0.3  # below the threshold
    assert drums.pick_onsets(curve, 0.5, 0.02) == [0.1, 0.5, 1.21, 2.0]


def test_midi_file_holds_every_onset(tmp_path):
    onsets = {"kick": [0.0, 0.5, 1.0], "snare": [0.5], "tom": [], "hihat": [0.25, 0.75], "cymbal": [1.0]}
    path = tmp_path / "drums.mid"
    path.write_bytes(drums.midi_bytes(onsets))
    data = path.read_bytes()
    assert data[:4] == b"MThd" and data[14:18] == b"MTrk"
    assert data.count(bytes([0x99, 35])) == 3 and data.count(bytes([0x99, 38])) == 1
    assert data.count(bytes([0x99, 42])) == 2 and data.count(bytes([0x89])) == 7


def test_missing_weights_make_it_unavailable_and_a_checkpoint_makes_it_run(tmp_path):
    db = tmp_path / "c.duckdb"
    entry = {e["name"]: e for e in json.loads(run_muscat("extractors", "--json", db=db).stdout)}["drums"]
    assert entry["available"] is False and "no weights file" in entry["reason"]
    (tmp_path / "muscat.toml").write_text(f'[extractors.drums]\nweights = "{tmp_path}/none.pth"\n')
    entry = {e["name"]: e for e in json.loads(run_muscat("extractors", "--json", db=db).stdout)}["drums"]
    assert entry["available"] is False and "does not exist" in entry["reason"]

    weights = adtof_checkpoint(tmp_path / "adtof.pth")
    (tmp_path / "muscat.toml").write_text(f'[extractors.drums]\nweights = "{weights}"\nthresholds = [0.0, 0.0, 0.0, 0.0, 0.0]\n')
    root = tmp_path / "Music"
    write(root / "beat.wav", click_track(120, 4))
    run_muscat("scan", str(root), db=db)
    result = run_muscat("extract", "--only", "drums", "--json", db=db)
    assert result.returncode == 0, result.stderr
    database = catalog.Database(db)
    (artifact,) = rows(database, "SELECT artifact FROM artifacts WHERE kind = 'midi'")[0]
    assert open(artifact, "rb").read(4) == b"MThd"
    values = dict(rows(database, "SELECT feature, coalesce(value::VARCHAR, text) FROM features WHERE extractor = 'drums'"))
    assert values["drums_source"] == "mix" and float(values["drum_onset_rate"]) > 0
    assert float(values["kick_rate"]) == pytest.approx(float(values["kick_onsets"]) / 4, rel=0.01)
