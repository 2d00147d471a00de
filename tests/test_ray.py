"""Extraction on a real Ray cluster: two nodes on this machine (ray.cluster_utils.Cluster), kept
on loopback, started once for the module; muscat runs as the user runs it and connects to it."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from audio import sine, write
from conftest import MUSCAT, assert_intact, rows, run_muscat
from formats import encode_av
from models import tiny_demucs_repo

import catalog

PLUGINS = Path(__file__).resolve().parent / "plugins"
# What the cluster's processes and every muscat driver need: loopback only, token authentication
# with the test cluster's own token (a machine where Ray never ran has no ~/.ray/auth_token, which
# only ray.init and `ray start` create, and the GCS of a cluster started here stops without
# one), room for a slow start on a busy machine, and the test plugin importable.
RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_AUTH_MODE": "token",
    "RAY_AUTH_TOKEN": secrets.token_hex(32),
    "RAY_agent_register_timeout_ms": "180000",
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",  # `uv run pytest` would ship the working folder to the cluster
    "PYTHONPATH": os.pathsep.join(filter(None, [str(PLUGINS), os.environ.get("PYTHONPATH")])),
}


@pytest.fixture(scope="module")
def cluster():
    saved = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)  # before ray is imported: it reads them then
    try:  # put back even when the cluster does not start: the process's other tests run on
        from ray.cluster_utils import Cluster
        nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1"})
        try:
            nodes.add_node(num_cpus=1, node_ip_address="127.0.0.1")
            nodes.wait_for_nodes()
            yield nodes
        finally:
            nodes.shutdown()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def muscat(cluster, *args: str, db: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return run_muscat(*args, "--executor", "ray", "--ray-address", cluster.address, db=db, env=RAY_ENV,
                      timeout=timeout)


def library(root: Path) -> Path:
    """Four short pieces from real encoders (FLAC, MP3, Opus) and one WAV."""
    root.mkdir(parents=True)
    encode_av(root / "one.flac", "flac", "flac", seconds=3.0)
    encode_av(root / "two.mp3", "libmp3lame", "mp3", seconds=3.0)
    encode_av(root / "three.opus", "libopus", "ogg", seconds=3.0, rate=48000)
    write(root / "four.wav", sine(330, 3.0, channels=2))
    return root


def _alive_actors(cluster) -> list:
    """The actors alive on the cluster (read from its GCS: the test cluster has no dashboard)."""
    import ray
    from ray._private.state import actors

    ray.init(address=cluster.address, log_to_driver=False)
    try:
        return [a["ActorClassName"] for a in actors(actor_state_name="ALIVE").values()]
    finally:
        ray.shutdown()


def test_the_cpu_set_gives_the_same_values_through_ray_on_both_nodes(cluster, tmp_path):
    here, there = library(tmp_path / "here"), tmp_path / "there"
    shutil.copytree(here, there)
    local_db, ray_db = tmp_path / "local.duckdb", tmp_path / "ray.duckdb"
    for db, root in ((local_db, here), (ray_db, there)):
        assert run_muscat("scan", str(root), db=db).returncode == 0
    local = run_muscat("extract", "--workers", "2", "--json", db=local_db, timeout=300)
    assert local.returncode == 0, local.stderr
    remote = muscat(cluster, "extract", "--json", db=ray_db)
    assert remote.returncode == 0, remote.stderr
    report = json.loads(remote.stdout)
    assert report["failed"] == 0 and report["ok"] == json.loads(local.stdout)["ok"]
    # Both nodes did work: their raylet addresses are in the runs and in the report.
    assert len(report["hosts"]) == 2 and all(host.startswith("127.0.0.1:") for host in report["hosts"])
    values = "SELECT regexp_replace(path, '^.*/', ''), feature, value, text FROM features ORDER BY ALL"
    vectors = "SELECT regexp_replace(path, '^.*/', ''), feature, vector FROM feature_vectors ORDER BY ALL"
    with closing(catalog.Database(ray_db)) as ray_side, closing(catalog.Database(local_db)) as local_side:
        assert rows(ray_side, values) == rows(local_side, values)
        assert rows(ray_side, vectors) == rows(local_side, vectors)
        assert {h for (h,) in rows(ray_side, "SELECT DISTINCT host FROM runs")} == set(report["hosts"])
        assert_intact(ray_side)
    assert _alive_actors(cluster) == []  # the run left the cluster as it found it


def test_a_killed_worker_is_retried_and_a_file_that_always_kills_fails_after_max_attempts(cluster, tmp_path):
    root = tmp_path / "Music"
    root.mkdir()
    for seconds, name in enumerate(("a", "victim", "poison", "d"), start=2):  # four different audio
        encode_av(root / f"{name}.flac", "flac", "flac", seconds=seconds / 2)
    db = tmp_path / "cat.duckdb"
    (tmp_path / "muscat.toml").write_text('[ray]\nmax_attempts = 2\n[extractors.peakiness]\n'
                                          'kill_on = "poison"\nkill_once_on = "victim"\n')
    assert run_muscat("scan", str(root), db=db, env=RAY_ENV).returncode == 0
    out = muscat(cluster, "extract", "--only", "peakiness", "--json", db=db)
    assert out.returncode == 1, out.stderr
    assert json.loads(out.stdout)["failed"] == 1  # stdout is JSON only: Ray's note of the death went to stderr
    assert (root / "victim.flac.killed").exists()  # it was killed once, with SIGKILL
    with closing(catalog.Database(db)) as database:
        failed = rows(database, "SELECT path, extractor, error, host FROM failed")
        assert len(failed) == 1 and failed[0][0].endswith("poison.flac") and failed[0][1] == "peakiness"
        assert "worker lost 2 times" in failed[0][2] and failed[0][3]
        done = rows(database, "SELECT regexp_replace(path, '^.*/', ''), attempts FROM runs JOIN library USING (audio_id) "
                              "WHERE extractor = 'peakiness' AND status = 'ok' ORDER BY 1")
        assert done == [("a.flac", 1), ("d.flac", 1), ("victim.flac", 1)]  # each once
        assert_intact(database)
    assert _alive_actors(cluster) == []


def test_tiny_demucs_in_a_ray_gpu_actor_writes_its_stems_atomically(cluster, tmp_path):
    repo = tiny_demucs_repo(tmp_path / "models")
    root = tmp_path / "Music"
    root.mkdir()
    for seconds, name in ((2.0, "first"), (2.5, "second")):
        encode_av(root / f"{name}.flac", "flac", "flac", seconds=seconds)
    db = tmp_path / "cat.duckdb"
    (tmp_path / "muscat.toml").write_text(f'gpu_worker = true\n[extractors.demucs]\nrepo = "{repo}"\n'
                                          'model = "tiny"\nformat = "wav"\n')
    assert run_muscat("scan", str(root), db=db).returncode == 0
    out = muscat(cluster, "extract", "--only", "demucs", "--json", db=db)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["gpu"]["batches"] >= 1 and report["gpu"]["items"] >= 2  # the models ran in the GPU actor
    with closing(catalog.Database(db)) as database:
        stems = rows(database, "SELECT artifact, bytes FROM artifacts WHERE extractor = 'demucs'")
        assert len(stems) == 8
        for path, size in stems:
            assert Path(path).stat().st_size == size and Path(path).parent.is_relative_to(tmp_path / "muscat-artifacts")
        assert not [p for p in (tmp_path / "muscat-artifacts").rglob(".*tmp*")]  # no half-written stem
        assert_intact(database)


def test_a_killed_gpu_actor_is_restarted_and_every_file_gets_its_stems(cluster, tmp_path):
    import ray
    from ray._private.state import actors

    repo = tiny_demucs_repo(tmp_path / "models")
    root = tmp_path / "Music"
    root.mkdir()
    for i in range(6):
        encode_av(root / f"piece{i}.flac", "flac", "flac", seconds=2.0 + i / 4)
    db = tmp_path / "cat.duckdb"
    (tmp_path / "muscat.toml").write_text(f'gpu_worker = true\n[extractors.demucs]\nrepo = "{repo}"\n'
                                          'model = "tiny"\nformat = "wav"\n')
    assert run_muscat("scan", str(root), db=db).returncode == 0
    command = [str(MUSCAT), "--db", str(db), "extract", "--only", "demucs", "--json",
               "--executor", "ray", "--ray-address", cluster.address]
    run = subprocess.Popen(command, env={**os.environ, **RAY_ENV}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, cwd=tmp_path)
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        gpu = None
        deadline = time.monotonic() + 240
        while gpu is None and time.monotonic() < deadline and run.poll() is None:
            alive = [a for a in actors(actor_state_name="ALIVE").values()
                     if a["ActorClassName"].endswith("_GpuWorker") and a["Pid"]]
            gpu = alive[0] if alive else None
            time.sleep(0.2)
        assert gpu is not None and run.poll() is None, "the run ended before its GPU actor could be killed"
        time.sleep(1.0)  # let it take work
        os.kill(gpu["Pid"], signal.SIGKILL)
        out, err = run.communicate(timeout=300)
        restarts = [a["NumRestarts"] for a in actors().values() if a["ActorID"] == gpu["ActorID"]]
    finally:
        ray.shutdown()
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, err
    assert restarts == [1]  # Ray brought it back once, and the run went on with it
    assert json.loads(out)["failed"] == 0
    with closing(catalog.Database(db)) as database:
        stems = rows(database, "SELECT count(DISTINCT audio_id), count(*) FROM artifacts WHERE extractor = 'demucs'")
        assert stems == [(6, 24)]
        assert not [p for p in (tmp_path / "muscat-artifacts").rglob(".*tmp*")]
        assert_intact(database)
    assert _alive_actors(cluster) == []


def test_watch_with_ray_extracts_a_file_dropped_in(cluster, tmp_path):
    root = tmp_path / "Music"
    root.mkdir()
    db = tmp_path / "cat.duckdb"
    (tmp_path / "muscat.toml").write_text('[extractors.spectral]\nenabled = false\n[extractors.rhythm]\n'
                                          'enabled = false\n[extractors.hpcp]\nenabled = false\n')
    env = {k: v for k, v in os.environ.items() if k not in ("MUSCAT_DB", "MUSCAT_CONFIG")} | RAY_ENV
    watch = subprocess.Popen([str(MUSCAT), "--db", str(db), "watch", str(root), "--executor", "ray",
                              "--ray-address", cluster.address, "--settle", "0.5"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        encode_av(tmp_path / "dropped.flac", "flac", "flac", seconds=2.0)
        time.sleep(3)
        shutil.move(tmp_path / "dropped.flac", root / "dropped.flac")
        deadline = time.monotonic() + 180
        found = []
        while time.monotonic() < deadline and not found:
            time.sleep(1)
            out = run_muscat("sql", "SELECT value FROM features WHERE feature = 'loudness_integrated'",
                             "--format", "json", db=db)
            found = json.loads(out.stdout) if out.returncode == 0 else []
        assert found, "the dropped file was never extracted"
    finally:
        watch.send_signal(signal.SIGTERM)
        _, err = watch.communicate(timeout=60)
    assert watch.returncode == 0, err
    assert _alive_actors(cluster) == []


def test_commands_that_do_not_use_ray_never_import_it():
    code = ("import sys, cli, catalog; from catalog import extraction, executor, local_executor; "
            "assert 'ray' not in sys.modules, 'ray imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("toml,named", [
    ('[ray]\nadress = "127.0.0.1:6379"\n', "ray.adress"),
    ("[ray]\nmax_attempts = 0\n", "ray.max_attempts"),
    ('executor = "slurm"\n', "executor"),
])
def test_bad_ray_configuration_is_exit_2_naming_the_key(tmp_path, toml, named):
    (tmp_path / "muscat.toml").write_text(toml)
    out = run_muscat("extract", db=tmp_path / "cat.duckdb")
    assert out.returncode == 2 and named in out.stderr, out.stderr
