"""Versions, staleness and re-indexing: nothing is lost, nothing goes missing in between."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from audio import sine, write
from conftest import MUSCAT, assert_intact, rows, run_muscat

import catalog
from catalog import migrations

PLUGIN = '''
import os, time
from catalog.extractor import Extractor, Output

EXTRACTOR = Extractor(
    name="{name}", version={version}, device="cpu", uses={uses!r},
    params={{"gain": 1.0, "weights": "", "delay": 0.0}},
    outputs=[Output("{name}_level", "", (0, 10), "scalar", "Mean absolute sample times gain (test)")],
)


def weights_fingerprint(params):
    if not params["weights"]:
        return None
    with open(params["weights"], "rb") as f:
        return str(hash(f.read()) & 0xFFFFFFFF)


def extract(audio, params):
    import numpy as np
    time.sleep(params["delay"])
    return {{"{name}_level": float(np.abs(audio.mono()).mean()) * params["gain"] * {version}}}
'''


def install_plugins(folder: Path, *plugins: tuple[str, int, tuple[str, ...]]) -> dict[str, str]:
    """Write test extractors (name, version, uses) as an installed distribution; return the env."""
    package = folder / "muscat_versioned"
    shutil.rmtree(package, ignore_errors=True)
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    points = []
    for name, version, uses in plugins:
        (package / f"{name}.py").write_text(PLUGIN.format(name=name, version=version, uses=uses))
        points.append(f"{name} = muscat_versioned.{name}")
    info = folder / "muscat_versioned-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: muscat-versioned\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[muscat.extractors]\n" + "\n".join(points) + "\n")
    for cached in package.glob("__pycache__"):
        shutil.rmtree(cached)
    return {"PYTHONPATH": str(folder)}


@pytest.fixture
def library(tmp_path):
    root = tmp_path / "Music"
    for i in range(6):
        write(root / f"{i}.wav", sine(200 + 50 * i, 1.0))
    db = tmp_path / "c.duckdb"
    assert run_muscat("scan", str(root), db=db).returncode == 0
    return root, db


def muscat(db, *args, env=None):
    result = run_muscat(*args, db=db, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def stale_reasons(db):
    return rows(catalog.Database(db), "SELECT extractor, reason, count(*) FROM stale GROUP BY ALL ORDER BY ALL")


def test_new_version_is_stale_until_reindexed_and_never_missing(library, tmp_path):
    root, db = library
    env = install_plugins(tmp_path / "plugins", ("plug", 1, ()))
    (tmp_path / "muscat.toml").write_text("[extractors.plug]\ndelay = 0.4\n")
    muscat(db, "extract", "--only", "plug", env=env)
    database = catalog.Database(db)
    v1 = dict(rows(database, "SELECT path, value FROM features WHERE feature = 'plug_level'"))
    assert len(v1) == 6

    env = install_plugins(tmp_path / "plugins", ("plug", 2, ()))
    assert stale_reasons(db) == []  # catalogue not told yet: nothing has looked
    summary = json.loads(muscat(db, "reindex", "--dry-run", "--json", env=env))
    assert summary["stale"] == 6 and summary["extractors"]["plug"]["stale"] == 6
    assert summary["estimated_seconds"] > 0 and summary["extractors"]["plug"]["basis"] == "measured"
    assert stale_reasons(db) == [("plug", "version", 6)]
    status = json.loads(muscat(db, "status", "--json", env=env))
    assert status["extractors"]["plug"] == {"done": 0, "pending": 0, "stale": 6, "failed": 0}
    # The old values stay, marked stale, until the new ones land.
    assert rows(database, "SELECT count(*), bool_and(stale) FROM features WHERE feature = 'plug_level'") == [(6, True)]

    seen: list[int] = []
    stop = threading.Event()

    def watch_features():
        while not stop.is_set():
            seen.append(rows(database, "SELECT count(DISTINCT path) FROM features WHERE feature = 'plug_level'")[0][0])

    observer = threading.Thread(target=watch_features)
    observer.start()
    try:
        out = run_muscat("reindex", "--workers", "1", db=db, env=env)
    finally:
        stop.set()
        observer.join()
    assert out.returncode == 0, out.stderr
    assert len(seen) > 3 and set(seen) == {6}  # at no point was a value missing
    assert stale_reasons(db) == []
    v2 = dict(rows(database, "SELECT path, value FROM features WHERE feature = 'plug_level' AND NOT stale"))
    assert all(v2[p] == pytest.approx(2 * v1[p]) for p in v1)
    side_by_side = rows(database, "SELECT version, current, count FROM feature_stats_by_version "
                                  "WHERE feature = 'plug_level' ORDER BY version")
    assert side_by_side == [(1, False, 6), (2, True, 6)]
    assert rows(database, "SELECT count FROM feature_stats WHERE feature = 'plug_level'") == [(6,)]

    gc = json.loads(muscat(db, "gc", "--json", env=env))
    assert gc["superseded_runs"] == 6 and gc["values"] == 6
    assert rows(database, "SELECT count(*) FROM features WHERE feature = 'plug_level'") == [(6,)]
    assert_intact(database)


def test_parameter_change_is_stale_with_reason_params(library, tmp_path):
    root, db = library
    env = install_plugins(tmp_path / "plugins", ("plug", 1, ()))
    muscat(db, "extract", "--only", "plug", env=env)
    (tmp_path / "muscat.toml").write_text("[extractors.plug]\ngain = 3\n")
    json.loads(muscat(db, "reindex", "--dry-run", "--json", env=env))
    assert stale_reasons(db) == [("plug", "params", 6)]
    muscat(db, "extract", "--only", "plug", "--stale", env=env)
    assert stale_reasons(db) == []


def test_replaced_weights_are_stale_with_reason_weights(library, tmp_path):
    root, db = library
    env = install_plugins(tmp_path / "plugins", ("plug", 1, ()))
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"first weights")
    (tmp_path / "muscat.toml").write_text(f'[extractors.plug]\nweights = "{weights}"\n')
    muscat(db, "extract", "--only", "plug", env=env)
    weights.write_bytes(b"retrained weights")
    summary = json.loads(muscat(db, "reindex", "--dry-run", "--json", env=env))
    assert summary["stale"] == 6 and stale_reasons(db) == [("plug", "weights", 6)]
    muscat(db, "reindex", env=env)
    assert stale_reasons(db) == []


def test_upstream_results_appearing_make_downstream_stale_with_reason_input(library, tmp_path):
    """The stems case: a result computed from the mix is stale once what it reads exists."""
    root, db = library
    env = install_plugins(tmp_path / "plugins", ("layered", 1, ("layers",)))
    muscat(db, "extract", "--only", "layered", env=env)
    database = catalog.Database(db)
    assert rows(database, "SELECT DISTINCT input FROM runs WHERE extractor = 'layered'") == [("mix",)]

    env = install_plugins(tmp_path / "plugins", ("layered", 1, ("layers",)), ("layers", 1, ()))
    muscat(db, "extract", "--only", "layers", env=env)
    assert stale_reasons(db) == [("layered", "input", 6)]
    assert rows(database, "SELECT count(*), bool_and(stale) FROM features WHERE feature = 'layered_level'") == [(6, True)]
    summary = json.loads(muscat(db, "reindex", "--dry-run", "--json", env=env))
    assert summary["extractors"]["layered"]["reasons"] == {"input": 6}
    muscat(db, "reindex", env=env)
    assert stale_reasons(db) == []
    identity = rows(database, "SELECT DISTINCT input FROM runs WHERE extractor = 'layered'")
    assert len(identity) == 1 and identity[0][0].startswith("layers:1:")
    assert rows(database, "SELECT count(*) FROM runs WHERE extractor = 'layered'") == [(6,)]  # replaced


def test_new_audio_runs_upstream_before_downstream(library, tmp_path):
    root, db = library
    env = install_plugins(tmp_path / "plugins", ("layered", 1, ("layers",)), ("layers", 1, ()))
    muscat(db, "extract", "--only", "layered,layers", env=env)
    assert stale_reasons(db) == []
    inputs = rows(catalog.Database(db), "SELECT DISTINCT input FROM runs WHERE extractor = 'layered'")
    assert len(inputs) == 1 and inputs[0][0].startswith("layers:1:")


def test_hpcp_reads_demucs_stems_only_when_use_stems_is_on(tmp_path):
    from catalog import registry

    settings = catalog.load_settings(db=tmp_path / "x.duckdb")
    hpcp = {e.name: e for e in registry.load_extractors(settings)}["hpcp"]
    assert hpcp.uses == ["demucs"]
    (tmp_path / "muscat.toml").write_text("[extractors.hpcp]\nuse_stems = false\n")
    settings = catalog.load_settings(db=tmp_path / "x.duckdb")
    assert {e.name: e for e in registry.load_extractors(settings)}["hpcp"].uses == []


def test_reindex_estimate_before_any_run_is_a_stated_fallback(library, tmp_path):
    root, db = library
    env = install_plugins(tmp_path / "plugins", ("plug", 1, ()))
    muscat(db, "extract", "--only", "plug", env=env)
    with catalog.Database(db).write() as con:  # as if timings had never been recorded
        con.execute("UPDATE runs SET audio_seconds = NULL WHERE extractor = 'plug'")
    env = install_plugins(tmp_path / "plugins", ("plug", 2, ()))
    summary = json.loads(muscat(db, "reindex", "--dry-run", "--json", env=env))
    assert summary["extractors"]["plug"]["basis"] == "fallback"
    assert summary["estimated_seconds"] == pytest.approx(6 * 1.0 * 0.02 / catalog.load_settings(db=db).workers, abs=0.1)
    text = run_muscat("reindex", "--dry-run", db=db, env=env).stdout
    assert "guessed" in text and "dry run" in text


def test_gc_removes_long_missing_files_and_their_audio(library, tmp_path):
    root, db = library
    muscat(db, "extract", "--only", "loudness")
    (root / "0.wav").unlink()
    muscat(db, "scan", str(root))
    assert json.loads(muscat(db, "gc", "--json"))["missing_files"] == 0  # missing for less than 30 days
    report = json.loads(muscat(db, "gc", "--older-than", "0", "--dry-run", "--json"))
    assert report["missing_files"] == 1 and report["orphaned_audio"] == 1 and report["dry_run"]
    assert rows(catalog.Database(db), "SELECT count(*) FROM files") == [(6,)]
    muscat(db, "gc", "--older-than", "0")
    database = catalog.Database(db)
    assert rows(database, "SELECT count(*) FROM files") == [(5,)]
    assert rows(database, "SELECT count(*) FROM audio") == [(5,)]
    assert rows(database, "SELECT count(*) FROM runs WHERE audio_id NOT IN (SELECT audio_id FROM audio)") == [(0,)]
    assert_intact(database)


def test_catalogue_of_schema_version_1_migrates_keeping_every_row(tmp_path, monkeypatch):
    path = tmp_path / "old.duckdb"
    # A catalogue as schema version 1 made it: its tables only (today's views and scanner need
    # later migrations), with the rows a scan of two files wrote.
    monkeypatch.setattr(migrations, "LATEST", 1)
    monkeypatch.setattr(migrations, "VIEWS", [])
    old = catalog.Database(path)
    root = tmp_path / "Music"
    with old.write() as con:
        con.execute("INSERT INTO roots (path, added_at, last_scan_status) VALUES (?, now(), 'ok')", [str(root)])
        for name, dir_ in (("a.wav", ""), ("c.flac", "b")):
            con.execute("INSERT INTO files (root_id, dir, name, size, mtime_ns, dev, inode, status, first_seen, "
                        "changed_at) VALUES (1, ?, ?, 1000, 1, 1, 1, 'present', now(), now())", [dir_, name])
    before = rows(old, "SELECT * FROM files ORDER BY file_id")
    assert rows(old, "SELECT max(version) FROM schema_version") == [(1,)]
    monkeypatch.undo()

    result = run_muscat("status", "--json", db=path)
    assert result.returncode == 0, result.stderr
    current = catalog.Database(path)
    assert rows(current, "SELECT max(version) FROM schema_version") == [(migrations.LATEST,)]
    after = rows(current, "SELECT * FROM files ORDER BY file_id")
    assert [row[: len(before[0])] for row in after] == before  # later migrations only add columns
    backup = tmp_path / "old.duckdb.bak-v1"
    assert backup.exists()
    out = subprocess.run([str(Path(MUSCAT).parent / "duckdb"), "-readonly", "-csv", str(backup), "-c",
                          "SELECT max(version) AS v, (SELECT count(*) FROM files) AS n FROM schema_version"],
                         capture_output=True, text=True)
    assert out.stdout.splitlines()[1] == "1,2"  # the copy is the catalogue as it was
    assert json.loads(result.stdout)["files"]["present"] == 2


def test_stems_appearing_after_hpcp_ran_on_the_mix(library, tmp_path):
    """hpcp results computed on the mix turn stale (reason `input`) once demucs stems exist, and
    reindex recomputes them on the harmonic stems (a tiny random-weight Demucs here)."""
    from models import tiny_demucs_repo

    root, db = library
    muscat(db, "extract", "--only", "hpcp")
    database = catalog.Database(db)
    assert rows(database, "SELECT DISTINCT input FROM runs WHERE extractor = 'hpcp'") == [("mix",)]
    repo = tiny_demucs_repo(tmp_path / "models")
    (tmp_path / "muscat.toml").write_text(f'[extractors.demucs]\nrepo = "{repo}"\nmodel = "tiny"\nshifts = 0\n')
    muscat(db, "extract", "--only", "demucs")
    assert stale_reasons(db) == [("hpcp", "input", 6)]
    assert json.loads(muscat(db, "status", "--json"))["extractors"]["hpcp"]["stale"] == 6
    muscat(db, "reindex", "--only", "hpcp")
    assert stale_reasons(db) == []
    inputs = rows(database, "SELECT DISTINCT input FROM runs WHERE extractor = 'hpcp'")
    assert len(inputs) == 1 and inputs[0][0].startswith("demucs:1:")
    assert rows(database, "SELECT DISTINCT text FROM features WHERE feature = 'chroma_source'") == [("stems",)]
    # With use_stems off, hpcp reads the mix again: the stem-based results are the stale ones.
    (tmp_path / "muscat.toml").write_text(f'[extractors.demucs]\nrepo = "{repo}"\nmodel = "tiny"\nshifts = 0\n'
                                          "[extractors.hpcp]\nuse_stems = false\n")
    json.loads(muscat(db, "reindex", "--dry-run", "--json"))
    assert stale_reasons(db) == [("hpcp", "params", 6)]
