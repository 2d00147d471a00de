"""kill -9 at random points of `scan`, `extract` and `watch`, then the catalogue's invariants.

Each campaign is seeded (the seed is in the test id, and in every failure message): a short
version runs by default, the long one with `pytest -m campaign`. After every kill the catalogue
must open and pass catalog/integrity.py (no duplicate rows, ok runs complete, artifacts whole);
after a last run that is not killed it must hold exactly the truth: every file, every result
once, nothing failed (a killed job is neither failed nor done) and nothing attempted twice.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from audio import sine, write
from conftest import MUSCAT, assert_intact, rows, run_muscat
from models import tiny_demucs_repo

import catalog

SHORT, LONG = 4, 40  # trials per campaign by default, and with -m campaign
CPU_SET = ["hpcp", "key", "loudness", "rhythm", "spectral"]


def start(db: Path, *args: str) -> subprocess.Popen:
    # A session of its own: killing its group takes the workers down too, as a crash would.
    return subprocess.Popen([str(MUSCAT), "--db", str(db), *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def kill(proc: subprocess.Popen, rng: random.Random) -> None:
    """SIGKILL the command; sometimes its workers too, sometimes the coordinator alone."""
    if rng.random() < 0.5:
        with_suppressed(lambda: os.killpg(proc.pid, signal.SIGKILL))
    else:
        with_suppressed(lambda: os.kill(proc.pid, signal.SIGKILL))
    proc.wait()
    # Orphaned workers notice their closed pipe and leave; wait so the next run starts clean.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    with_suppressed(lambda: os.killpg(proc.pid, signal.SIGKILL))


def with_suppressed(action) -> None:
    try:
        action()
    except ProcessLookupError:
        pass


def check_after_kill(db: Path, seed: int, trial: int) -> None:
    database = catalog.Database(db, lock_timeout=30)
    try:
        assert_intact(database)
    except AssertionError as exc:
        raise AssertionError(f"seed {seed}, after kill {trial}: {exc}") from None
    finally:
        database.close()


# -- scan ------------------------------------------------------------------------------------


def mutate_library(root: Path, rng: random.Random, serial: int) -> None:
    """Add, delete, rename and rewrite some files and folders (scan only reads names and stats)."""
    files = sorted(p for p in root.rglob("*.flac"))
    for path in rng.sample(files, k=min(len(files), rng.randint(0, 40))):
        action = rng.choice(["delete", "rename", "rewrite"])
        if action == "delete":
            path.unlink()
        elif action == "rename":
            path.rename(path.with_name(f"r{serial}-{path.name}"))
        else:
            path.write_bytes(os.urandom(rng.randint(1, 64)))
    for n in range(rng.randint(0, 3)):
        folder = root / f"new-{serial}-{n}"
        folder.mkdir()
        for i in range(rng.randint(1, 30)):
            (folder / f"{i}.flac").write_bytes(os.urandom(8))
    folders = [p for p in root.iterdir() if p.is_dir()]
    if folders and rng.random() < 0.3:
        rng.choice(folders).rename(root / f"moved-{serial}")


def scan_campaign(tmp_path: Path, seed: int, trials: int) -> None:
    rng = random.Random(seed)
    root = tmp_path / "Lib"
    for d in range(40):
        folder = root / f"d{d:02d}"
        folder.mkdir(parents=True)
        for i in range(60):
            (folder / f"{i:02d}.flac").write_bytes(os.urandom(8))
    db = tmp_path / "cat.duckdb"
    assert run_muscat("scan", str(root), db=db).returncode == 0
    for trial in range(trials):
        mutate_library(root, rng, trial)
        proc = start(db, "scan", str(root))
        time.sleep(rng.uniform(0.05, 1.2))
        kill(proc, rng)
        check_after_kill(db, seed, trial)
    result = run_muscat("scan", str(root), db=db)
    assert result.returncode == 0, f"seed {seed}: {result.stderr}"
    database = catalog.Database(db)
    assert_intact(database)
    truth = {str(p) for p in root.rglob("*.flac")}
    assert {p for (p,) in rows(database, "SELECT path FROM library")} == truth, f"seed {seed}"


@pytest.mark.parametrize("seed", [1])
def test_scan_killed_at_random_points(tmp_path, seed):
    scan_campaign(tmp_path, seed, SHORT)


@pytest.mark.campaign
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_scan_kill_campaign(tmp_path, seed):
    scan_campaign(tmp_path, seed, LONG)


# -- extract ---------------------------------------------------------------------------------


def extraction_library(tmp_path: Path, count: int, gpu_worker: bool = False) -> tuple[Path, Path]:
    """`count` different short tracks, and a configuration with demucs (tiny model, WAV stems),
    its models in the GPU worker when asked (on the CPU here)."""
    root = tmp_path / "Music"
    for i in range(count):
        write(root / f"{i:02d}.wav", sine(110 * (1 + i % 7) + i, 3.0, channels=2))
    repo = tiny_demucs_repo(tmp_path / "models")
    (tmp_path / "muscat.toml").write_text(
        f"gpu_worker = {str(gpu_worker).lower()}\n"
        f'[extractors.demucs]\nrepo = "{repo}"\nmodel = "tiny"\nformat = "wav"\nshifts = 0\n'
        "[extractors.rhythm]\nenabled = false\n"  # the slowest of the set; others cover it
        "[extractors.notes]\nenabled = true\n[extractors.bass_notes]\nenabled = true\n"  # MIDI artifacts
    )
    return root, tmp_path / "cat.duckdb"


def assert_complete(db: Path, files: int, extractors: list[str], seed: int) -> None:
    """Every result once, nothing failed, nothing attempted twice, nothing stale."""
    database = catalog.Database(db)
    assert_intact(database)
    assert rows(database, "SELECT count(*) FROM runs WHERE status <> 'ok'") == [(0,)], f"seed {seed}"
    retried = rows(database, "SELECT r.extractor, r.attempts, r.input, l.path FROM runs r "
                             "LEFT JOIN library l USING (file_id) WHERE r.attempts > 1")
    assert retried == [], f"seed {seed}: attempted more than once"
    assert rows(database, "SELECT extractor, count(*) FROM runs GROUP BY ALL ORDER BY 1") == [
        (name, files) for name in sorted(["probe", *extractors])], f"seed {seed}"
    assert rows(database, "SELECT count(*) FROM stale") == [(0,)], f"seed {seed}"
    assert rows(database, "SELECT count(*) FROM pending") == [(0,)], f"seed {seed}"
    database.close()


def extract_campaign(tmp_path: Path, seed: int, trials: int) -> None:
    rng = random.Random(seed)
    files = 4 if trials == SHORT else 8  # the short run: half the files, half the time
    root, db = extraction_library(tmp_path, files, gpu_worker=seed % 2 == 0)  # even seeds: killed with it
    assert run_muscat("scan", str(root), db=db).returncode == 0
    killed = []
    for trial in range(trials):
        proc = start(db, "extract", "--workers", "2")
        time.sleep(rng.uniform(0.5, 6.0))
        kill(proc, rng)
        killed.append(proc.pid)
        check_after_kill(db, seed, trial)
    result = run_muscat("extract", "--workers", "2", db=db, timeout=300)
    assert result.returncode == 0, f"seed {seed}: {result.stderr}"
    assert_complete(db, files, ["bass_notes", "bass_pitch", "chromaprint", "demucs", "hpcp", "key", "loudness", "notes",
                                "spectral"], seed)
    database = catalog.Database(db)
    # hpcp read the stems everywhere: a kill between demucs and hpcp did not leave a mix result.
    assert rows(database, "SELECT DISTINCT input LIKE 'demucs:%' FROM runs WHERE extractor = 'hpcp'") == [(True,)]
    assert rows(database, "SELECT count(*) FROM artifacts WHERE kind LIKE 'stem:%'") == [(files * 4,)]
    assert rows(database, "SELECT count(*) FROM artifacts WHERE kind = 'midi'") == [(files * 2,)]  # notes, bass_notes
    if seed % 2 == 0:  # the last run's GPU worker swept what the killed ones left in /dev/shm and /tmp
        import tempfile

        from catalog.gpu_worker import tag_of

        left = [p for pid in killed for folder, pattern in (("/dev/shm", tag_of(pid) + "*"),
                                                            (tempfile.gettempdir(), f"muscat-gpu-{pid}-*"))
                for p in Path(folder).glob(pattern)]
        assert left == [], f"seed {seed}"


@pytest.mark.parametrize("seed", [2])
def test_extract_killed_at_random_points(tmp_path, seed):
    extract_campaign(tmp_path, seed, SHORT)


@pytest.mark.campaign
@pytest.mark.parametrize("seed", [21, 22, 23])
def test_extract_kill_campaign(tmp_path, seed):
    extract_campaign(tmp_path, seed, LONG)


# -- watch -----------------------------------------------------------------------------------


def watch_campaign(tmp_path: Path, seed: int, trials: int) -> None:
    rng = random.Random(seed)
    root = tmp_path / "Music"
    root.mkdir()
    db = tmp_path / "cat.duckdb"
    (tmp_path / "muscat.toml").write_text(
        "".join(f"[extractors.{name}]\nenabled = false\n" for name in ["rhythm", "hpcp", "key", "notes", "chromaprint"]))
    source = tmp_path / "incoming"
    made = 0
    for trial in range(trials):
        proc = start(db, "watch", str(root), "--settle", "0.3", "--workers", "2")
        deadline = time.monotonic() + rng.uniform(1.0, 6.0)
        while time.monotonic() < deadline:  # files arrive (copied in, or moved around) meanwhile
            if rng.random() < 0.7:
                path = write(source / f"{made:03d}.wav", sine(100 + 7 * made, 1.0))
                shutil.move(path, root / path.name)
                made += 1
            else:
                present = sorted(root.glob("*.wav"))
                if present:
                    victim = rng.choice(present)
                    victim.rename(victim.with_name(f"m{trial}-{victim.name}"))
            time.sleep(rng.uniform(0.0, 0.4))
        kill(proc, rng)
        check_after_kill(db, seed, trial)
    assert run_muscat("scan", str(root), db=db).returncode == 0
    result = run_muscat("extract", "--workers", "2", db=db, timeout=300)
    assert result.returncode == 0, f"seed {seed}: {result.stderr}"
    database = catalog.Database(db)
    assert {p for (p,) in rows(database, "SELECT path FROM library")} == {str(p) for p in root.glob("*.wav")}
    database.close()
    assert_complete(db, made, ["loudness", "spectral"], seed)


@pytest.mark.parametrize("seed", [3])
def test_watch_killed_at_random_points(tmp_path, seed):
    watch_campaign(tmp_path, seed, SHORT)


@pytest.mark.campaign
@pytest.mark.parametrize("seed", [31, 32, 33])
def test_watch_kill_campaign(tmp_path, seed):
    watch_campaign(tmp_path, seed, LONG)
