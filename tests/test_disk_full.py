"""A full disk while writing stems or the catalogue, simulated with a file-size limit
(RLIMIT_FSIZE, SIGXFSZ ignored: writes past it fail with EFBIG, as ENOSPC would)."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
from pathlib import Path

from audio import sine, write
from conftest import MUSCAT, assert_intact, rows, run_muscat
from models import tiny_demucs_repo

import catalog


def run_limited(limit: int, db: Path, *args: str) -> subprocess.CompletedProcess:
    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([str(MUSCAT), "--db", str(db), *args], capture_output=True, text=True,
                          preexec_fn=limit_file_size, timeout=300)


def library(tmp_path: Path, seconds: float) -> Path:
    for i in range(3):
        write(tmp_path / "Music" / f"{i}.wav", sine(200 + 50 * i, seconds, channels=2))
    repo = tiny_demucs_repo(tmp_path / "models")
    (tmp_path / "muscat.toml").write_text(
        f'[extractors.demucs]\nrepo = "{repo}"\nmodel = "tiny"\nformat = "wav"\nbits = 32\nshifts = 0\n')
    db = tmp_path / "cat.duckdb"
    assert run_muscat("scan", str(tmp_path / "Music"), db=db).returncode == 0
    return db


def assert_done_on_a_later_run(db: Path) -> None:
    again = run_muscat("extract", "--only", "loudness,demucs", "--workers", "1", "--json", db=db)
    assert again.returncode == 0, again.stderr
    database = catalog.Database(db)
    assert_intact(database)
    assert rows(database, "SELECT extractor, count(*), max(attempts) FROM runs WHERE status = 'ok' "
                          "GROUP BY ALL ORDER BY 1") == [("demucs", 3, 1), ("loudness", 3, 1), ("probe", 3, 1)]
    assert rows(database, "SELECT count(*) FROM artifacts") == [(12,)]
    database.close()


def test_disk_full_while_writing_stems(tmp_path):
    db = library(tmp_path, seconds=22.0)  # a 32-bit WAV stem: 7.8 MB
    result = run_limited(7_000_000, db, "extract", "--only", "loudness,demucs", "--workers", "1")
    assert result.returncode == 2, result.stderr
    assert "out of disk space" in result.stderr and "File too large" in result.stderr
    assert "pending" in result.stderr and "Traceback" not in result.stderr
    database = catalog.Database(db)
    assert_intact(database)
    # Not the audio's fault: no demucs run is recorded (no failure either), no file is left.
    assert rows(database, "SELECT count(*) FROM runs WHERE extractor = 'demucs' OR status = 'failed'") == [(0,)]
    assert [p for p in (tmp_path / "muscat-artifacts").rglob("*") if p.is_file()] == []
    database.close()
    assert_done_on_a_later_run(db)


def test_disk_full_while_writing_the_catalogue(tmp_path):
    db = library(tmp_path, seconds=2.0)
    before = db.stat().st_size
    result = run_limited(before + 50_000, db, "extract", "--only", "loudness,demucs", "--workers", "1")
    assert result.returncode == 2, result.stderr
    assert "cannot write the catalogue" in result.stderr and "File too large" in result.stderr
    assert "Traceback" not in result.stderr
    # The catalogue opens, holds whole batches only, and answers an outside query.
    listing = run_muscat("sql", "SELECT count(*) AS n FROM library", "--format", "json", db=db)
    assert listing.returncode == 0 and json.loads(listing.stdout) == [{"n": 3}]
    database = catalog.Database(db)
    assert_intact(database)
    database.close()
    assert_done_on_a_later_run(db)
