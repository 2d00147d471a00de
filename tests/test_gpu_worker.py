"""The GPU worker: one process holding the models, fed by CPU workers, batching items of several
files per forward pass. Run on the CPU here (device cpu); the machinery is the same on a GPU."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from audio import chord_progression, click_track, write
from conftest import rows, run_muscat
from models import adtof_checkpoint, tiny_demucs_repo

import catalog
from catalog.config import Settings
from catalog.gpu_worker import GpuClient, GpuError, GpuWorker, GpuWorkerLost, pack, tag_of
from catalog.gpu_worker import _release as release

# A staged extractor whose "model" doubles its items, slowly if asked, and fails on request.
DOUBLER = '''
from catalog.extractor import Extractor, Output

EXTRACTOR = Extractor(name="doubler", version=1, device="gpu", params={"delay": 0.0, "oom_above": 0},
                      outputs=[Output("doubled_peak", "", None, "scalar", "Twice the peak")])


def load_model(params, device):
    return dict(params)


def model_info(model):
    return {"factor": 2}


def prepare(audio, params, info, inputs):
    import numpy as np

    return np.abs(audio.mono())[None], None


def forward(model, batch):
    import time

    import torch

    time.sleep(model["delay"])
    if model["oom_above"] and len(batch) > model["oom_above"]:
        raise torch.cuda.OutOfMemoryError("pretend: too many items")
    if (batch < 0).any():
        raise ValueError("negative items are refused")
    return batch * 2


def finish(audio, params, info, state, outputs, inputs):
    import numpy as np

    return {"doubled_peak": float(max(np.abs(block).max() for block in outputs))}
'''


@pytest.fixture
def doubler(tmp_path, monkeypatch):
    """The doubler installed as a plugin (visible to spawned processes through sys.path)."""
    folder = tmp_path / "plugins"
    (folder / "muscat_doubler").mkdir(parents=True)
    (folder / "muscat_doubler" / "__init__.py").write_text("")
    (folder / "muscat_doubler" / "doubler.py").write_text(DOUBLER)
    info = folder / "muscat_doubler-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: muscat-doubler\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[muscat.extractors]\ndoubler = muscat_doubler.doubler\n")
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", str(folder))
    importlib.invalidate_caches()
    return folder


def shared_memory() -> set[str]:
    """This process's blocks (the GPU workers here serve it): tests in other processes make theirs."""
    return {p.name for p in Path("/dev/shm").glob(tag_of(os.getpid()) + "*")}


def gpu_worker(tmp_path, batch: int, timeout: float = 600.0, **doubler) -> GpuWorker:
    settings = Settings(db_path=tmp_path / "c.duckdb", device="cpu", gpu_batch=batch, gpu_timeout=timeout,
                        extractors={"doubler": doubler})
    return GpuWorker(settings)


def test_items_of_several_workers_share_forward_passes_and_come_back_to_their_sender(tmp_path, doubler):
    before = shared_memory()
    worker = gpu_worker(tmp_path, batch=8, delay=0.3)
    try:
        clients = [GpuClient(*worker.connection) for _ in range(3)]
        assert clients[0].info("doubler") == {"factor": 2}
        results: dict[int, list[np.ndarray]] = {}
        sent = {i: np.full((5, 3), float(i + 1), np.float32) for i in range(3)}

        def ask(i: int) -> None:
            results[i] = list(clients[i].forward("doubler", sent[i]))

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
        for thread in threads:  # the first batch takes 0.3 s: the others queue meanwhile
            thread.start()
        for thread in threads:
            thread.join()
        for i in range(3):
            np.testing.assert_array_equal(np.concatenate(results[i]), sent[i] * 2)
        stats = clients[0].stats()
        assert stats["items"] == 15 and stats["batches"] < 15 and stats["shared_batches"] >= 1
        assert stats["device"] == "cpu"
    finally:
        worker.stop()
    assert not Path(worker.folder).exists()
    assert shared_memory() == before  # every block of items and outputs removed


def test_out_of_memory_halves_the_batch_and_a_failing_request_fails_alone(tmp_path, doubler):
    before = shared_memory()
    worker = gpu_worker(tmp_path, batch=8, oom_above=2)
    try:
        client = GpuClient(*worker.connection)
        items = np.arange(14, dtype=np.float32).reshape(7, 2)
        np.testing.assert_array_equal(np.concatenate(list(client.forward("doubler", items))), items * 2)
        stats = client.stats()
        assert stats["out_of_memory"] >= 2 and stats["batch_size"] == 2
        with pytest.raises(GpuError, match="negative items are refused"):
            list(client.forward("doubler", -items))
        with pytest.raises(GpuError, match="holds no model for 'nothing'"):
            client.info("nothing")
        np.testing.assert_array_equal(np.concatenate(list(client.forward("doubler", items))), items * 2)
        # A CPU worker that goes mid-request (a crash) leaves the others served.
        gone = GpuClient(*worker.connection)
        part = pack(np.ones((3, 2), np.float32), gone.tag)
        gone._send("forward", "doubler", part)
        gone.conn.close()
        np.testing.assert_array_equal(np.concatenate(list(client.forward("doubler", items))), items * 2)
        release(part)  # a crashed worker's own block goes when the coordinator's resource tracker does
    finally:
        worker.stop()
    assert shared_memory() == before


def test_a_killed_gpu_worker_fails_what_it_held_and_is_started_again(tmp_path, doubler):
    worker = gpu_worker(tmp_path, batch=2, delay=0.5)
    try:
        client = GpuClient(*worker.connection)
        client.info("doubler")
        killer = threading.Timer(0.3, worker.process.kill)
        killer.start()
        with pytest.raises(GpuWorkerLost, match="stopped"):
            list(client.forward("doubler", np.ones((4, 2), np.float32)))
        killer.join()
        worker.process.join()
        assert worker.keep_alive() is True and worker.restarts == 1
        np.testing.assert_array_equal(np.concatenate(list(client.forward("doubler", np.ones((1, 2), np.float32)))),
                                      np.full((1, 2), 2.0))
        assert worker.keep_alive() is False
    finally:
        worker.stop()


def test_a_stuck_gpu_worker_is_killed_after_gpu_timeout_and_started_again(tmp_path, doubler):
    worker = gpu_worker(tmp_path, batch=2, timeout=1.0, delay=30.0)  # a forward pass that hangs
    watching = threading.Event()

    def watch() -> None:  # what the engine does at each step
        while not watching.is_set():
            worker.keep_alive()
            time.sleep(0.2)

    try:
        client = GpuClient(*worker.connection)
        client.info("doubler")  # up, and idle for longer than gpu_timeout: that is not stuck
        time.sleep(1.5)
        assert worker.keep_alive() is False
        watcher = threading.Thread(target=watch)
        watcher.start()
        with pytest.raises(GpuWorkerLost):
            list(client.forward("doubler", np.ones((2, 2), np.float32)))
        watching.set()
        watcher.join()
        assert worker.restarts == 1 and "no progress for" in worker.last_restart
    finally:
        watching.set()
        worker.stop()


ORPHAN = """
import os, sys, time
sys.path[:0] = {path!r}
from catalog.config import Settings
from catalog.gpu_worker import GpuWorker
if __name__ == "__main__":
    worker = GpuWorker(Settings(db_path={db!r}, device="cpu"))
    while not os.path.exists(worker.address):  # up and listening
        time.sleep(0.05)
    print(worker.process.pid, worker.folder, flush=True)
    time.sleep(600)
"""


def test_the_gpu_worker_goes_when_its_coordinator_is_killed(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "coordinator.py"
    script.write_text(ORPHAN.format(path=sys.path, db=str(tmp_path / "c.duckdb")))
    coordinator = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    pid, folder = coordinator.stdout.readline().split()
    assert Path(folder).is_dir()
    coordinator.send_signal(signal.SIGKILL)
    coordinator.wait()
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z":
        assert time.monotonic() < deadline, "the GPU worker outlived its coordinator"
        time.sleep(0.1)
    assert not Path(folder).exists()


def test_leftovers_of_coordinators_killed_with_their_workers_are_swept(tmp_path):
    import subprocess
    import sys
    import tempfile

    from catalog.gpu_worker import sweep_leftovers

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    live = str(os.getpid())
    made = [Path("/dev/shm") / f"muscat-{gone}-0123abcd", Path("/dev/shm") / f"muscat-{live}-0123abcd",
            Path(tempfile.gettempdir()) / f"muscat-gpu-{gone}-x1", Path(tempfile.gettempdir()) / f"muscat-gpu-{live}-x1"]
    made[0].write_bytes(b"0" * 64)
    made[1].write_bytes(b"0" * 64)
    made[2].mkdir()
    (made[2] / "socket").write_text("")
    made[3].mkdir()
    try:
        assert sweep_leftovers() >= 2
        assert [p.exists() for p in made] == [False, True, False, True]
    finally:
        made[1].unlink()
        made[3].rmdir()


def test_extract_through_the_gpu_worker_gives_what_the_workers_alone_give(tmp_path):
    """demucs, drums (on the drums stem), bass_pitch and hpcp (on stems) with GPU workers on two
    devices, then the same library with the models inside the CPU workers: the same values."""
    repo = tiny_demucs_repo(tmp_path / "models")
    weights = adtof_checkpoint(tmp_path / "adtof.pth")
    root = tmp_path / "Music"
    write(root / "chords.flac", chord_progression(seconds_each=0.6))
    write(root / "beat.wav", click_track(120, 3))
    write(root / "mixed.wav", chord_progression(seconds_each=0.6) + click_track(120, 3)[:, :1])
    values = {}
    for mode in ("on", "off"):
        db = tmp_path / mode / "c.duckdb"
        db.parent.mkdir()
        (db.parent / "muscat.toml").write_text(
            f"gpu_worker = {'true' if mode == 'on' else 'false'}\ngpu_batch = 3\n"
            f'[extractors.demucs]\nrepo = "{repo}"\nmodel = "tiny_bag"\nshifts = 1\nformat = "wav"\n'
            f'[extractors.drums]\nweights = "{weights}"\n')
        assert run_muscat("scan", str(root), db=db).returncode == 0
        # On: two GPU workers (two devices; both the CPU here), each CPU worker fed by one of them.
        result = run_muscat("extract", "--only", "demucs,drums,bass_pitch,hpcp", "--workers", "2", "--json",
                            "--device", "cpu,cpu" if mode == "on" else "cpu", db=db)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["failed"] == 0 and report["ok"] == 12
        if mode == "on":
            assert report["gpu"]["items"] > report["gpu"]["batches"] > 0 and report["gpu"]["device"] == "cpu,cpu"
            assert [each["items"] > 0 for each in report["gpu"]["per_device"]] == [True, True]
        else:
            assert "gpu" not in report
        con = catalog.Database(db)
        assert rows(con, "SELECT DISTINCT device FROM runs WHERE extractor IN ('demucs', 'drums', 'bass_pitch')") == [("cpu",)]
        values[mode] = {(Path(p).name, n): v for p, n, v in rows(con, """
            SELECT path, feature, value FROM features
            WHERE extractor IN ('demucs', 'drums', 'bass_pitch', 'hpcp') AND value IS NOT NULL""")}
        sources = dict(rows(con, "SELECT path, text FROM features WHERE feature = 'drums_source'"))
        assert set(sources.values()) == {"stems"}
        stems = rows(con, "SELECT artifact FROM artifacts WHERE extractor = 'demucs'")
        assert len(stems) == 12 and all(sf.info(s).frames > 0 for (s,) in stems)
    assert values["on"].keys() == values["off"].keys()
    for (path, feature), value in values["on"].items():
        # Onset counts of a random-weight drums model flip with the last bits of the stems (peaks
        # sit at the threshold): test_drums shows a batch gives the same activations.
        if not feature.endswith(("_onsets", "_rate")):
            assert value == pytest.approx(values["off"][path, feature], rel=1e-3, abs=1e-4), (path, feature)
    shutil.rmtree(tmp_path / "off")


def test_files_whose_models_were_in_a_killed_gpu_worker_fail_readably_and_the_rest_goes_on(tmp_path, doubler):
    from catalog.config import load_settings
    from catalog.extraction import Engine

    root = tmp_path / "Music"
    for i in range(6):
        write(root / f"{i}.wav", chord_progression(seconds_each=0.2 + 0.01 * i))
    db = tmp_path / "c.duckdb"
    (tmp_path / "muscat.toml").write_text("gpu_worker = true\n[extractors.doubler]\ndelay = 0.4\n")
    assert run_muscat("scan", str(root), db=db).returncode == 0
    settings = load_settings(db)
    settings.device = "cpu"
    database = catalog.Database(db)
    engine = Engine(database, settings, only=["doubler"])
    engine.start_workers(2)
    engine.plan()
    killed = False
    while not engine.idle:
        engine.step(timeout=0.1)
        if not killed and any(w.running == "doubler" for w in engine.executor.workers):
            engine.executor.gpus[0].process.kill()  # mid-request: its first files are lost with it
            killed = True
    restarts = engine.executor.gpus[0].restarts
    engine.stop()
    report = engine.report
    assert killed and restarts == 1, report.failures
    assert len(report.gpu_restarts) == 1 and "it had stopped" in report.gpu_restarts[0]
    assert report.failed >= 1 and report.ok >= 1 and report.ok + report.failed == 6, report.failures
    assert all("the GPU worker stopped" in error for _, _, error in report.failures)
    database.close()
    again = run_muscat("extract", "--only", "doubler", "--retry-failed", "--json", "--device", "cpu", db=db)
    assert again.returncode == 0 and json.loads(again.stdout)["ok"] == report.failed
