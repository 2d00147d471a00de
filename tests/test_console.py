"""The console script (console.py): a plain no-change rescan of a small library is answered
before the command line is loaded, and everything else goes to the command line unchanged."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from audio import sine, write
from conftest import run_muscat

import catalog
import console

REPO = os.path.dirname(catalog.__path__[0])


def imported(stderr: str) -> set[str]:
    """The modules a process loaded, from its `-X importtime` report."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def importing(*args: str, db) -> subprocess.CompletedProcess:
    return run_muscat(*args, db=db, env={"PYTHONPROFILEIMPORTTIME": "1"})


def by_the_command_line(*args: str, db) -> subprocess.CompletedProcess:
    """The same command through cli.py itself, as the console script was before it."""
    env = {k: v for k, v in os.environ.items() if k not in ("MUSCAT_DB", "MUSCAT_CONFIG")}
    return subprocess.run([sys.executable, "-m", "cli", "--db", str(db), *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=300)


def test_plain_scan_takes_the_plain_form_only(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (tmp_path / "file.flac").write_bytes(b"")
    A, B, F = str(a), str(b), str(tmp_path / "file.flac")
    assert console.plain_scan(["scan", A]) == (None, None, [A])
    assert console.plain_scan(["--db", "x.duckdb", "scan", A, B]) == ("x.duckdb", None, [A, B])
    assert console.plain_scan(["--db=x.duckdb", "--config", "m.toml", "scan", A]) == ("x.duckdb", "m.toml", [A])
    declined = [
        [], ["scan"], ["status"], ["--version"], ["-h"], ["scan", "--help"], ["scan", "--json", A],
        ["scan", A, "--allow-empty"], ["scan", "--", A], ["--db", "x", "--db", "y", "scan", A],
        ["--db"], ["--db", "--config", "c", "scan", A], ["--db=", "scan", A], ["--verbose", "scan", A],
        ["scan", F], ["scan", str(tmp_path / "missing")], ["scan", A, F], ["watch", A], ["--db", "scan", A],
    ]
    for args in declined:
        assert console.plain_scan(args) is None, args


def test_a_no_change_rescan_is_answered_without_the_command_line(library, tmp_path):
    root, files = library
    db = tmp_path / "cat.duckdb"
    assert run_muscat("scan", str(root), db=db).returncode == 0
    answered = importing("scan", str(root), db=db)
    assert answered.returncode == 0, answered.stderr
    loaded = imported(answered.stderr)
    assert "catalog.scanner" in loaded
    assert not loaded & {"click", "cli", "duckdb", "pyarrow", "catalog.database"}
    # Nor dataclasses, which imports inspect (with ast, dis, tokenize): a third of its time.
    assert not loaded & {"dataclasses", "inspect", "typing"}
    usual = by_the_command_line("scan", str(root), db=db)
    assert usual.returncode == 0, usual.stderr
    expected = len(files["good"] + files["broken"])
    assert answered.stdout == usual.stdout == f"0 added, 0 changed, 0 moved, 0 missing, {expected} unchanged, 0 errors\n"


def test_a_changed_library_is_scanned_by_the_command_line(library, tmp_path):
    root, files = library
    db = tmp_path / "cat.duckdb"
    assert run_muscat("scan", str(root), db=db).returncode == 0
    write(root / "Artist A" / "Album 2" / "02 New.flac", sine(300, 0.3))
    scanned = importing("scan", str(root), db=db)
    assert scanned.returncode == 0, scanned.stderr
    assert "click" in imported(scanned.stderr)
    assert scanned.stdout.startswith("1 added, 0 changed, 0 moved, 0 missing, ")


@pytest.mark.parametrize("args", [["scan", "--json"], ["scan"]], ids=["an option", "no option"])
def test_a_settings_problem_is_reported_by_the_command_line(library, tmp_path, args):
    root, _ = library
    db = tmp_path / "cat.duckdb"
    assert run_muscat("scan", str(root), db=db).returncode == 0
    config = tmp_path / "muscat.toml"  # beside the catalogue: read by every command
    config.write_text("workers = [\n")
    failed = run_muscat(*args, str(root), db=db)
    assert failed.returncode == 2
    assert failed.stderr.startswith("muscat: error: ") and str(config) in failed.stderr
    assert "Traceback" not in failed.stderr


def test_a_file_given_as_a_folder_is_a_usage_error_as_before(tmp_path):
    path = tmp_path / "song.flac"
    path.write_bytes(b"")
    refused = run_muscat("scan", str(path), db=tmp_path / "cat.duckdb")
    assert refused.returncode == 2
    assert "is a file" in refused.stderr
