"""The command line as users meet it: help, output formats, read-only SQL, defaults."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, rows, run_muscat

import catalog

COMMANDS = ["scan", "watch", "extract", "status", "stats", "extractors", "sql", "reindex", "gc", "doctor"]


@pytest.mark.parametrize("command", [None] + COMMANDS)
def test_every_command_has_help(command):
    args = ["--help"] if command is None else [command, "--help"]
    result = run_muscat(*args)
    assert result.returncode == 0 and "Usage:" in result.stdout
    assert len(result.stdout.splitlines()) > 5


@pytest.fixture
def scanned(library, tmp_path):
    root, files = library
    path = tmp_path / "cat.duckdb"
    assert run_muscat("scan", str(root), db=path).returncode == 0
    return path, root, files


WRITES = [
    "DELETE FROM files",
    "DROP TABLE files",
    "DROP VIEW library",
    "CREATE TABLE x (a INTEGER)",
    "INSERT INTO roots (path, added_at) VALUES ('/x', now())",
    "UPDATE files SET status = 'missing'",
    "ATTACH '{tmp}/other.duckdb' AS other",
    "COPY files TO '{tmp}/out.csv'",
    "EXPORT DATABASE '{tmp}/exported'",
    "SET threads = 1",
    "INSTALL httpfs",
    "CHECKPOINT",
    "SELECT 1; DELETE FROM files",
    "BEGIN TRANSACTION",
]


@pytest.mark.parametrize("statement", WRITES)
def test_sql_refuses_writes_and_changes_nothing(scanned, tmp_path, statement):
    path, root, files = scanned
    before = path.read_bytes()
    result = run_muscat("sql", statement.format(tmp=tmp_path), db=path)
    assert result.returncode == 2, result.stdout
    assert "read-only" in result.stderr and "Traceback" not in result.stderr
    assert path.read_bytes() == before
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "exported").exists()
    assert not (tmp_path / "other.duckdb").exists()


def test_sql_formats(scanned):
    path, root, files = scanned
    query = "SELECT path, size FROM library ORDER BY path LIMIT 2"
    as_json = json.loads(run_muscat("sql", query, "--format", "json", db=path).stdout)
    assert [set(r) for r in as_json] == [{"path", "size"}] * 2
    assert all(r["path"].startswith(str(root)) for r in as_json)
    as_csv = run_muscat("sql", query, "--format", "csv", db=path).stdout.splitlines()
    assert as_csv[0] == "path,size" and len(as_csv) == 3
    table = run_muscat("sql", query, db=path).stdout.splitlines()
    assert table[0].split() == ["path", "size"] and set(table[1]) <= {"-", " "}


def test_sql_reads_views_tables_and_metadata(scanned):
    path, _, _ = scanned
    for query in ["SHOW TABLES", "DESCRIBE library", "SUMMARIZE files", "FROM roots",
                  "EXPLAIN SELECT * FROM library", "PIVOT (SELECT codec, size FROM library) ON codec USING count(*)"]:
        result = run_muscat("sql", query, db=path)
        assert result.returncode == 0, (query, result.stderr)


def test_sql_error_is_exit_2_without_traceback(scanned):
    path, _, _ = scanned
    result = run_muscat("sql", "SELECT no_such_column FROM library", db=path)
    assert result.returncode == 2 and "no_such_column" in result.stderr and "Traceback" not in result.stderr


def test_status_json_shape(scanned):
    path, root, files = scanned
    data = json.loads(run_muscat("status", "--json", db=path).stdout)
    assert data["files"] == {"present": len(files["good"] + files["broken"]), "missing": 0}
    assert data["audio"] == 0  # nothing decoded yet
    assert list(data["extractors"]) == ["probe", "bass_pitch", "chromaprint", "demucs", "drums", "hpcp", "key", "loudness", "rhythm", "spectral"]
    assert data["extractors"]["probe"] == {"done": 0, "pending": len(files["good"] + files["broken"]),
                                           "stale": 0, "failed": 0}
    assert [r["path"] for r in data["roots"]] == [str(root)]
    text = run_muscat("status", db=path).stdout
    assert f"{len(files['good'] + files['broken'])} present" in text and str(root) in text


def test_database_from_env_and_default_location(library, tmp_path):
    root, files = library
    env_db = tmp_path / "from-env.duckdb"
    assert run_muscat("scan", str(root), env={"MUSCAT_DB": str(env_db)}).returncode == 0
    assert env_db.exists()
    work = tmp_path / "work"
    work.mkdir()
    assert run_muscat("scan", str(root), cwd=work).returncode == 0
    assert (work / "muscat.duckdb").exists()


def test_config_beside_the_database_is_read(library, tmp_path):
    root, files = library
    (tmp_path / "muscat.toml").write_text('audio_extensions = ["flac"]\n')
    path = tmp_path / "cat.duckdb"
    assert run_muscat("scan", str(root), db=path).returncode == 0
    names = [p for (p,) in rows(catalog.Database(path), "SELECT path FROM library")]
    assert names and all(n.endswith(".flac") for n in names)


def test_explicit_config_that_does_not_exist_is_exit_2(tmp_path):
    result = run_muscat("--config", str(tmp_path / "nope.toml"), "status", db=tmp_path / "c.duckdb")
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_status_and_sql_do_not_load_heavy_modules(scanned):
    path, _, _ = scanned
    probe = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
sys.argv = ["muscat", "--db", {str(path)!r}, "{{cmd}}"] + {{extra}}
from cli import main
try:
    main()
except SystemExit:
    pass
print(sorted(m for m in ("torch", "essentia", "demucs", "sqlmodel", "pyarrow", "numpy", "soundfile") if m in sys.modules))
"""
    for cmd, extra in [("status", []), ("sql", ["SELECT count(*) FROM library"])]:
        out = subprocess.run([sys.executable, "-c", probe.format(cmd=cmd, extra=extra)],
                             capture_output=True, text=True).stdout
        assert out.strip().splitlines()[-1] == "[]", (cmd, out)
