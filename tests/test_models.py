"""`muscat models`: fetching Demucs' models from a real HTTP server on 127.0.0.1 (resumed, verified,
refused when damaged), adding ADTOF's checkpoint, and what doctor and extract make of missing ones.

The server serves a random-weight model set laid out as Demucs' own source is: `<sig>-<sha8>.th`
files under a root folder, listed in a `files.txt`, and a bag's `.yaml` (a mirror of models the
installed demucs does not know serves those two itself)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from audio import click_track, sine, write
from conftest import rows, run_muscat
from models import adtof_checkpoint, tiny_demucs_repo

import catalog
from catalog import models

BAG = "tiny_bag"


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    """A mirror of a two-model bag: files.txt, tiny_bag.yaml, tiny_models/<sig>-<sha8>.th."""
    built = tiny_demucs_repo(tmp_path_factory.mktemp("built"), name="tiny", seed=0)
    tiny_demucs_repo(built, name="tiny2", seed=1)
    root = tmp_path_factory.mktemp("mirror")
    (root / "tiny_models").mkdir()
    names = []
    for sig in ("tiny", "tiny2"):
        data = (built / f"{sig}.th").read_bytes()
        names.append(f"{sig}-{hashlib.sha256(data).hexdigest()[:8]}.th")
        (root / "tiny_models" / names[-1]).write_bytes(data)
    (root / "files.txt").write_text("# Tiny random-weight models\nroot: tiny_models/\n" + "\n".join(names) + "\n")
    (root / f"{BAG}.yaml").write_text("models: ['tiny', 'tiny2']\nweights: [[1., 0., 1., 0.], [0., 1., 0., 1.]]\n")
    return root


class _Handler(BaseHTTPRequestHandler):
    """GET with `Range: bytes=N-`; can cut a response short once, or serve a damaged file."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        file = server.root / self.path.lstrip("/")
        if not file.is_file():
            self.send_error(404)
            return
        data = file.read_bytes()
        if self.path in server.corrupt:
            data = data[:-1] + bytes([data[-1] ^ 1])
        start = 0
        wanted = self.headers.get("Range", "")
        if wanted.startswith("bytes="):
            start = int(wanted[len("bytes="):].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        cut = server.drop_once.pop(self.path, None)
        if cut is not None:  # the connection drops midway
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(mirror):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.root, httpd.requests, httpd.drop_once, httpd.corrupt = mirror, [], {}, set()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def member_paths(mirror: Path) -> list[str]:
    return sorted(f"/tiny_models/{p.name}" for p in (mirror / "tiny_models").iterdir())


def configure(tmp_path: Path, url: str, extra: str = "") -> Path:
    (tmp_path / "muscat.toml").write_text(f'[models]\ndemucs_url = "{url}"\n'
                                          f'[extractors.demucs]\nmodel = "{BAG}"\nshifts = 0\n{extra}')
    return tmp_path / "c.duckdb"


def models_folder(tmp_path: Path) -> Path:
    return catalog.load_settings(db=tmp_path / "c.duckdb").models_dir


def test_models_dir_defaults_to_the_user_data_folder_and_is_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert catalog.load_settings(db=tmp_path / "c.duckdb").models_dir == tmp_path / "data" / "muscat" / "models"
    (tmp_path / "muscat.toml").write_text('models_dir = "weights"\n[models]\ndemucs_url = "http://mirror.example/demucs"\n')
    settings = catalog.load_settings(db=tmp_path / "c.duckdb")
    assert settings.models_dir == tmp_path / "weights" and settings.demucs_url == "http://mirror.example/demucs/"
    for toml, key in [("models_dir = 3\n", "'models_dir'"), ("[models]\nmirror = 'x'\n", "'models.mirror'"),
                      ("[models]\ndemucs_url = 5\n", "'models.demucs_url'"), ("models = 1\n", "'models'")]:
        (tmp_path / "muscat.toml").write_text(toml)
        result = run_muscat("models", db=tmp_path / "c.duckdb")
        assert result.returncode == 2 and key in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_fetch_then_extract_separates_with_no_config_edit(tmp_path, mirror, server):
    db = configure(tmp_path, server.url)
    write(tmp_path / "Music" / "a.wav", sine(220, 1.5, channels=2))
    assert run_muscat("scan", str(tmp_path / "Music"), db=db).returncode == 0
    before = run_muscat("extract", "--only", "demucs", db=db)  # nothing is downloaded by extract
    assert before.returncode == 2 and "is not installed" in before.stderr and "muscat models fetch demucs" in before.stderr
    assert server.requests == []

    fetched = run_muscat("models", "fetch", "demucs", db=db)
    assert fetched.returncode == 0, fetched.stderr
    assert "3 files" in fetched.stdout and "all verified" in fetched.stdout
    folder = models_folder(tmp_path) / "demucs"
    assert folder == Path(os.environ["XDG_DATA_HOME"]) / "muscat" / "models" / "demucs"
    th = sorted(p.name for p in folder.glob("*.th"))
    assert th == [p.rsplit("/", 1)[1] for p in member_paths(mirror)] and (folder / f"{BAG}.yaml").is_file()
    assert not list(folder.glob(".*"))  # no temporary files left
    manifest = json.loads((folder / "manifest.json").read_text())["files"]
    assert manifest[th[0]]["sha256"] == hashlib.sha256((folder / th[0]).read_bytes()).hexdigest()

    listing = json.loads(run_muscat("models", "--json", db=db).stdout)
    assert [e["extractor"] for e in listing] == ["demucs", "drums", "bass_pitch", "notes", "bass_notes"]
    for entry in listing:
        assert {"extractor", "files", "licence", "source"} <= set(entry)
        for f in entry["files"]:
            assert {"name", "path", "present", "verified", "bytes"} <= set(f)
    demucs_entry = listing[0]
    assert demucs_entry["ready"] and demucs_entry["folder"] == str(folder)
    assert [(f["name"], f["present"], f["verified"]) for f in demucs_entry["files"]] == \
        [(f"{BAG}.yaml", True, True)] + [(name, True, True) for name in th]
    assert demucs_entry["files"][1]["bytes"] == (folder / th[0]).stat().st_size
    assert "non-commercial" in listing[1]["licence"] and "github.com/MZehren/ADTOF" in listing[1]["source"]

    result = run_muscat("extract", "--only", "demucs", "--json", db=db)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ok"] == 1
    stems = rows(catalog.Database(db), "SELECT artifact FROM artifacts WHERE extractor = 'demucs'")
    assert len(stems) == 4 and all(Path(a).is_file() for (a,) in stems)

    # Fetching again verifies what is there and downloads no model (only the mirror's listing).
    server.requests.clear()
    again = run_muscat("models", "fetch", "demucs", db=db)
    assert again.returncode == 0 and "nothing to download" in again.stdout
    assert sorted(path for path, _ in server.requests) == ["/files.txt", f"/{BAG}.yaml"]


def test_an_interrupted_download_resumes(tmp_path, mirror, server):
    db = configure(tmp_path, server.url)
    first, second = member_paths(mirror)
    server.drop_once[first] = 150_000  # the connection drops after 150 kB
    folder = models_folder(tmp_path) / "demucs"
    folder.mkdir(parents=True)
    partial = (mirror / second.lstrip("/")).read_bytes()[:50_000]  # left by a run that was stopped
    (folder / f".{second.rsplit('/', 1)[1]}.part").write_bytes(partial)
    result = run_muscat("models", "fetch", "demucs", "--json", db=db)
    assert result.returncode == 0, result.stderr
    requests = [r for r in server.requests if r[0] in (first, second)]
    assert requests == [(first, None), (first, "bytes=150000-"), (second, "bytes=50000-")]
    for path in (first, second):
        name = path.rsplit("/", 1)[1]
        assert (folder / name).read_bytes() == (mirror / path.lstrip("/")).read_bytes()
    report = json.loads(result.stdout)
    size = (mirror / second.lstrip("/")).stat().st_size
    assert {f["name"]: f["downloaded"] for f in report["files"]}[second.rsplit("/", 1)[1]] == size - 50_000
    entry = {e["name"]: e for e in json.loads(run_muscat("extractors", "--json", db=db).stdout)}["demucs"]
    assert entry["available"], entry["reason"]


def test_a_corrupted_download_is_refused_and_removed(tmp_path, mirror, server):
    db = configure(tmp_path, server.url)
    first = member_paths(mirror)[0]
    server.corrupt.add(first)
    result = run_muscat("models", "fetch", "demucs", db=db)
    name = first.rsplit("/", 1)[1]
    assert result.returncode == 2 and name in result.stderr and "does not match the checksum" in result.stderr
    assert "Traceback" not in result.stderr
    folder = models_folder(tmp_path) / "demucs"
    assert sorted(p.name for p in folder.iterdir()) == []  # neither the file nor its download
    entry = {e["name"]: e for e in json.loads(run_muscat("extractors", "--json", db=db).stdout)}["demucs"]
    assert entry["available"] is False and "is not installed" in entry["reason"]


def test_a_server_that_is_down_gives_the_urls_to_fetch_by_hand(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = tmp_path / "c.duckdb"
    (tmp_path / "muscat.toml").write_text(f'[models]\ndemucs_url = "http://127.0.0.1:{port}/demucs/"\n')
    result = run_muscat("models", "fetch", "demucs", db=db)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    folder = models_folder(tmp_path) / "demucs"
    for name in ["f7e0c4bc-ba3fe64a.th", "d12395a8-e57c48e6.th", "92cfc3b6-ef3bcb9c.th", "04573f0d-f3cf25b2.th"]:
        assert f"http://127.0.0.1:{port}/demucs/hybrid_transformer/{name}" in result.stderr
    assert f"into {folder}/" in result.stderr and "muscat models fetch demucs" in result.stderr
    # A model the installed demucs does not list: the mirror's own listing is what to fetch.
    (tmp_path / "muscat.toml").write_text(f'[models]\ndemucs_url = "http://127.0.0.1:{port}/"\n'
                                          f'[extractors.demucs]\nmodel = "{BAG}"\n')
    result = run_muscat("models", "fetch", "demucs", db=db)
    assert result.returncode == 2 and f"http://127.0.0.1:{port}/{BAG}.yaml" in result.stderr


class Payload:
    """A pickle whose loading runs code: what a substituted model file holds."""

    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_a_tampered_model_is_refused_before_it_is_loaded(tmp_path, mirror, server, monkeypatch):
    db = configure(tmp_path, server.url)
    assert run_muscat("models", "fetch", "demucs", db=db).returncode == 0
    folder = models_folder(tmp_path) / "demucs"
    target = sorted(folder.glob("*.th"))[0]
    target.write_bytes(pickle.dumps(Payload()))
    write(tmp_path / "Music" / "a.wav", sine(220, 1.0))
    run_muscat("scan", str(tmp_path / "Music"), db=db)
    entry = {e["name"]: e for e in json.loads(run_muscat("extractors", "--json", db=db, cwd=tmp_path).stdout)}["demucs"]
    assert entry["available"] is False and str(target) in entry["reason"] and "not loaded" in entry["reason"]
    result = run_muscat("extract", "--only", "demucs", db=db, cwd=tmp_path)
    assert result.returncode == 2 and str(target) in result.stderr
    listing = run_muscat("models", db=db)
    assert listing.returncode == 1 and "is not the model its name says" in listing.stdout
    doctor = run_muscat("doctor", "--json", db=db)
    fails = [f for f in json.loads(doctor.stdout) if f["state"] == "fail" and f["area"] == "models"]
    assert doctor.returncode == 1 and any(str(target) in f["what"] for f in fails)
    # Loading checks again, just before unpickling.
    from extractors import demucs

    monkeypatch.chdir(tmp_path)
    models.use(folder.parent)
    params = {**demucs.EXTRACTOR.params, "model": BAG, "shifts": 0}
    with pytest.raises(ValueError, match="is not the model its name says"):
        demucs.load_model(params, "cpu")
    assert not (tmp_path / "PWNED").exists()

    # A file whose name still checks out but is not the one muscat fetched (the manifest's sha256).
    good = mirror / member_paths(mirror)[0].lstrip("/")
    shutil.copyfile(good, target)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][target.name]["sha256"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="is not the file muscat recorded"):
        demucs.load_model(params, "cpu")
    # A .th dropped into muscat's folder with no checksum at all is not trusted either.
    manifest["files"][target.name]["sha256"] = hashlib.sha256(good.read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert demucs.available(params) is None
    target.rename(folder / "tiny.th")
    reason = demucs.available(params)
    assert reason is not None and "carries no checksum" in reason


def test_models_add_drums_checks_the_architecture_and_records_the_checksum(tmp_path):
    import torch

    db = tmp_path / "c.duckdb"
    wrong = adtof_checkpoint(tmp_path / "other.pth")
    checkpoint = torch.load(wrong, weights_only=True)
    del checkpoint["model_weights"]["output_layer.bias"]
    checkpoint["model_weights"]["extra_layer.weight"] = torch.zeros(3)
    checkpoint["model_weights"]["output_layer.weight"] = torch.zeros(4, 120)
    torch.save(checkpoint, wrong)
    refused = run_muscat("models", "add", "drums", str(wrong), db=db)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "missing keys: output_layer.bias" in refused.stderr and "unexpected keys: extra_layer.weight" in refused.stderr
    assert "output_layer.weight (4, 120) instead of (5, 120)" in refused.stderr
    folder = models_folder(tmp_path) / "drums"
    assert not folder.exists() or not any(folder.iterdir())

    source = adtof_checkpoint(tmp_path / "adtof.pth")
    result = run_muscat("models", "add", "drums", str(source), "--json", db=db)
    assert result.returncode == 0, result.stderr
    added = json.loads(result.stdout)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert added["sha256"] == digest and Path(added["path"]) == folder / f"adtof-{digest[:8]}.pth"
    assert json.loads((folder / "manifest.json").read_text())["files"][f"adtof-{digest[:8]}.pth"]["sha256"] == digest
    entry = {e["extractor"]: e for e in json.loads(run_muscat("models", "--json", db=db).stdout)}["drums"]
    assert entry["ready"] and [(f["present"], f["verified"]) for f in entry["files"]] == [(True, True)]
    (tmp_path / "muscat.toml").write_text("[extractors.drums]\nthresholds = [0.0, 0.0, 0.0, 0.0, 0.0]\n")
    write(tmp_path / "Music" / "beat.wav", click_track(120, 2))
    run_muscat("scan", str(tmp_path / "Music"), db=db)
    extracted = run_muscat("extract", "--only", "drums", db=db)
    assert extracted.returncode == 0, extracted.stderr
    assert rows(catalog.Database(db), "SELECT count(*) FROM artifacts WHERE kind = 'midi'") == [(1,)]

    # Changed after it was added: refused, not loaded.
    data = bytearray(Path(added["path"]).read_bytes())
    data[-1] ^= 1
    Path(added["path"]).write_bytes(bytes(data))
    entry = {e["name"]: e for e in json.loads(run_muscat("extractors", "--json", db=db).stdout)}["drums"]
    assert entry["available"] is False and "is not the file muscat recorded" in entry["reason"]
    assert run_muscat("extract", "--only", "drums", db=db).returncode == 2


def test_a_fresh_doctor_exits_0_with_off_lines(tmp_path):
    db = tmp_path / "c.duckdb"
    result = run_muscat("doctor", "--json", db=db)
    assert result.returncode == 0, result.stdout
    findings = json.loads(result.stdout)
    off = {f["what"].split(" ", 1)[0]: f for f in findings if f["state"] == "off"}
    assert {"demucs", "drums", "bass_pitch", "there"} <= set(off)  # "there is no catalogue ... yet"
    assert "muscat models fetch demucs" in off["demucs"]["fix"] and "muscat models add drums" in off["drums"]["fix"]
    assert all(f["ok"] for f in findings)
    text = run_muscat("doctor", db=db)
    assert text.returncode == 0 and "off   models: demucs is off" in text.stdout and "FAIL" not in text.stdout


def test_extract_only_an_extractor_that_cannot_run_exits_2_with_the_reason(tmp_path):
    db = tmp_path / "c.duckdb"
    write(tmp_path / "Music" / "a.wav", sine(440, 1.0))
    run_muscat("scan", str(tmp_path / "Music"), db=db)
    for args, reason in [(("extract", "--only", "loudness,drums"), "no weights file"),
                         (("extract", "--only", "bass_pitch"), "needs demucs"),
                         (("reindex", "--dry-run", "--only", "demucs"), "muscat models fetch demucs")]:
        result = run_muscat(*args, db=db)
        assert result.returncode == 2 and reason in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert rows(catalog.Database(db), "SELECT count(*) FROM runs WHERE extractor <> 'probe'") == [(0,)]
    (tmp_path / "muscat.toml").write_text("[extractors.demucs]\nenabled = false\n")
    result = run_muscat("extract", "--only", "demucs", db=db)
    assert result.returncode == 2 and "switched off" in result.stderr


def test_weights_that_ship_in_a_wheel_are_listed_verified_and_have_nothing_to_fetch(tmp_path, monkeypatch):
    db = tmp_path / "c.duckdb"
    listing = {e["extractor"]: e for e in json.loads(run_muscat("models", "--json", db=db).stdout)}
    for name, dist, file in [("bass_pitch", "pesto-pitch", "mir-1k_g7.ckpt"), ("notes", "basic-pitch", "nmp.onnx"),
                             ("bass_notes", "basic-pitch", "nmp.onnx")]:
        entry = listing[name]
        assert [(f["name"], f["present"], f["verified"], f["problem"]) for f in entry["files"]] == \
            [(file, True, True, None)], entry
        assert entry["files"][0]["bytes"] == Path(entry["files"][0]["path"]).stat().st_size > 100_000
        assert dist in entry["source"] and entry["command"] is None
        fetched = run_muscat("models", "fetch", name, db=db)
        assert fetched.returncode == 2 and f"its weights ship in the {dist} wheel" in fetched.stderr
        assert "Traceback" not in fetched.stderr
    assert "Apache-2.0" in listing["notes"]["licence"] and listing["notes"]["reason"] is None
    assert not listing["notes"]["ready"] and listing["notes"]["off_reason"].startswith("off by default")
    assert not listing["bass_notes"]["ready"] and "demucs" in listing["bass_notes"]["reason"]

    # A file that is not what the wheel's RECORD says it installed is named, with the repair.
    monkeypatch.setattr(models, "sha256", lambda path: "0" * 64)
    settings = catalog.load_settings(db=db)
    damaged = {e["extractor"]: e for e in models.listing(settings)}["notes"]["files"][0]
    assert damaged["problem"].endswith("is not the file its wheel installed (sha256 differs): "
                                       "`uv sync --reinstall-package basic-pitch`")
