"""`muscat doctor`: a healthy catalogue passes; each kind of damage is named with a fix."""

from __future__ import annotations

import json
import os
import time

from audio import sine, write
from conftest import run_muscat

import catalog


def doctor_json(db, **kw) -> tuple[int, list[dict]]:
    result = run_muscat("doctor", "--json", db=db, **kw)
    assert "Traceback" not in result.stderr
    return result.returncode, json.loads(result.stdout)


def problems(findings: list[dict]) -> list[dict]:
    return [f for f in findings if not f["ok"]]


def extracted(tmp_path):
    root = tmp_path / "Music"
    for i in range(3):
        write(root / f"{i}.wav", sine(300 + 100 * i, 1.0))
    db = tmp_path / "cat.duckdb"
    (tmp_path / "muscat.toml").write_text("[extractors.demucs]\nenabled = false\n"
                                          "[extractors.drums]\nenabled = false\n"
                                          "[extractors.bass_pitch]\nenabled = false\n")
    run_muscat("scan", str(root), db=db)
    assert run_muscat("extract", "--only", "loudness", db=db).returncode == 0
    return db


def test_healthy_catalogue_passes_every_check(tmp_path):
    db = extracted(tmp_path)
    code, findings = doctor_json(db)
    assert problems(findings) == [] and code == 0, problems(findings)
    areas = {f["area"] for f in findings}
    assert areas == {"catalogue", "decoders", "devices", "models", "watching", "disk"}
    text = run_muscat("doctor", db=db)
    assert text.returncode == 0 and "every invariant holds" in text.stdout


def test_damage_is_named_with_a_fix(tmp_path):
    db = extracted(tmp_path)
    database = catalog.Database(db)
    with database.write() as con:  # a feature row twice, as a broken writer would leave it
        con.execute("INSERT INTO feature_values SELECT * FROM feature_values LIMIT 1")
    database.close()
    leftover = tmp_path / "muscat-artifacts" / "tiny" / "x" / ".drums.flac.tmp-123"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half a stem")
    old = time.time() - 7200
    os.utime(leftover, (old, old))
    code, findings = doctor_json(db)
    assert code == 1
    found = {f["what"].split(":")[0]: f for f in problems(findings)}
    assert "a feature value is recorded twice for one run" in found
    assert found["a feature value is recorded twice for one run"]["fix"]
    temporary = [f for f in problems(findings) if "temporary files" in f["what"]]
    assert temporary and "muscat gc" in temporary[0]["fix"]
    # gc removes the leftover, which nothing references
    assert run_muscat("gc", db=db).returncode == 0
    assert not leftover.exists()


def test_unrunnable_extractor_and_missing_catalogue_are_explained(tmp_path):
    (tmp_path / "muscat.toml").write_text(f'[extractors.drums]\nweights = "{tmp_path}/none.pth"\n')
    code, findings = doctor_json(tmp_path / "cat.duckdb")
    assert code == 1
    what = {f["what"]: f["fix"] for f in problems(findings)}
    assert any("there is no catalogue" in f["what"] and f["state"] == "off" and "muscat scan" in f["fix"]
               for f in findings)  # not wrong: a fresh install has none yet
    drums = [w for w in what if w.startswith("drums cannot run")]
    assert drums and "does not exist" in drums[0] and "[extractors.drums]" in what[drums[0]]


def test_a_small_dev_shm_is_named_when_the_gpu_worker_would_use_it(monkeypatch, tmp_path):
    from catalog import doctor, gpu_worker
    from catalog.config import Settings

    settings = Settings(db_path=tmp_path / "c.duckdb", device="cpu", gpu_worker=True)
    monkeypatch.setattr(gpu_worker, "shm_room", lambda: 64 * 1024**2)  # Docker's default
    finding = [f for f in doctor._devices(settings) if "/dev/shm" in f.what]
    assert len(finding) == 1 and not finding[0].ok and "64 MiB" in finding[0].what
    assert "--shm-size" in finding[0].fix
    monkeypatch.setattr(gpu_worker, "shm_room", lambda: 24 * 1024**3)
    assert [f.ok for f in doctor._devices(settings) if "/dev/shm" in f.what] == [True]


def test_each_of_several_devices_is_checked(tmp_path):
    from catalog import doctor
    from catalog.config import Settings

    findings = doctor._devices(Settings(db_path=tmp_path / "c.duckdb", device="cpu,cuda:5,cuda:6"))
    missing = [f.what for f in findings if not f.ok and "is configured" in f.what]
    assert [m.split()[1] for m in missing] == ["cuda:5", "cuda:6"]
