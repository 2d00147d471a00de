"""The command line as users meet it: help, output formats, read-only SQL, defaults."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import MUSCAT, REPO, rows, run_muscat

import catalog

COMMANDS = ["scan", "watch", "extract", "status", "stats", "extractors", "sql", "reindex", "gc", "doctor", "similar",
            "plot", "report"]


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


# (column, SQL, as a table and CSV print it, as JSON holds it; CSV's text where it differs)
EVERY_TYPE = [
    ("tstz", "TIMESTAMPTZ '2024-03-01 12:34:56.789+00'", "2024-03-01 18:04:56.789+05:30", None),
    ("ts", "TIMESTAMP '2024-03-01 12:34:56.5'", "2024-03-01 12:34:56.5", None),
    ("ts_ns", "TIMESTAMP_NS '2024-03-01 12:34:56.123456789'", "2024-03-01 12:34:56.123456789", None),
    ("day", "DATE '2024-03-01'", "2024-03-01", None),
    ("forever", "DATE 'infinity'", "infinity", None),
    ("clock", "TIME '12:34:56'", "12:34:56", None),
    ("clock_tz", "TIMETZ '12:34:56+02'", "12:34:56+02", None),
    ("span", "INTERVAL '1 year 2 months 3 days 04:05:06.5'", "1 year 2 months 3 days 04:05:06.5", None),
    ("huge", "170141183460469231731687303715884105727::HUGEINT", "170141183460469231731687303715884105727",
     170141183460469231731687303715884105727),
    ("uhuge", "340282366920938463463374607431768211455::UHUGEINT", "340282366920938463463374607431768211455",
     340282366920938463463374607431768211455),
    ("big", "123456789012345678901234567890::BIGNUM", "123456789012345678901234567890", None),
    ("id", "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::UUID", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", None),
    ("bytes", "'\\xDE\\xAD\\xBE\\xEF'::BLOB", "deadbeef", None),
    ("list", "[1, 2, NULL]", "[1, 2, NULL]", [1, 2, None], "[1, 2, null]"),
    ("pair", "[1.5, 2.5]::DOUBLE[2]", "[1.5, 2.5]", [1.5, 2.5]),
    ("record", "{'a': 1, 'b': 'x', 'after': INTERVAL '1 month'}", "{a: 1, b: x, after: 1 month}",
     {"a": 1, "b": "x", "after": "1 month"}, '{"a": 1, "b": "x", "after": "1 month"}'),
    ("lookup", "MAP {'k': 1, 'j': 2}", "{k: 1, j: 2}", {"k": 1, "j": 2}, '{"k": 1, "j": 2}'),
    ("nan", "'nan'::DOUBLE", "nan", "null"),
    ("inf", "'inf'::DOUBLE", "inf", "null"),
    ("minus_inf", "'-inf'::FLOAT", "-inf", "null"),
    ("money", "12345678901234567890.123456789::DECIMAL(38, 9)", "12345678901234567890.123456789",
     Decimal("12345678901234567890.123456789")),
    ("mood", "'happy'::ENUM('sad', 'happy')", "happy", None),
    ("bits", "'10101'::BIT", "10101", None),
    ("nothing", "NULL::INTEGER", "NULL", "null", ""),
    ("yes", "true", "true", True),
]


def test_sql_prints_every_duckdb_type_in_every_format(tmp_path):
    # One query with every kind of value, in a time zone other than UTC so that TIMESTAMPTZ's
    # conversion shows; each value is checked as printed in a table, in CSV and in JSON.
    query = "SELECT " + ", ".join(f"{sql} AS {name}" for name, sql, *_ in EVERY_TYPE) + " -- all of them"
    db = tmp_path / "c.duckdb"
    out = {}
    for fmt in ("table", "csv", "json"):
        result = run_muscat("sql", query, "--format", fmt, db=db, env={"TZ": "Asia/Kolkata"})
        assert result.returncode == 0 and "Traceback" not in result.stderr, (fmt, result.stderr)
        out[fmt] = result.stdout
    header, dashes, line = out["table"].splitlines()
    starts = [i for i, c in enumerate(dashes) if c == "-" and (i == 0 or dashes[i - 1] == " ")]
    table = [line[a:b].strip() for a, b in zip(starts, starts[1:] + [len(line)])]
    csv_header, csv_row = list(csv.reader(io.StringIO(out["csv"])))
    as_json = json.loads(out["json"], parse_float=Decimal)
    assert len(as_json) == 1 and list(as_json[0]) == [name for name, *_ in EVERY_TYPE]
    assert header.split() == csv_header == list(as_json[0])
    for (name, _, text, *rest), in_table, in_csv in zip(EVERY_TYPE, table, csv_row):
        in_json = rest[0] if rest else None
        expected_json = text if in_json is None else None if in_json == "null" else in_json
        assert in_table == text, name
        assert in_csv == (rest[1] if len(rest) > 1 else text), name
        assert as_json[0][name] == expected_json, name
    assert "12345678901234567890.123456789" in out["json"]  # every digit, not a float's 17


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
    assert list(data["extractors"]) == ["probe", "bass_notes", "bass_pitch", "chromaprint", "demucs", "drums", "hpcp",
                                       "key", "loudness", "notes", "rhythm", "spectral"]
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
    # duckdb: the package's Python layer (relational API, Arrow sources); reading needs only its
    # engine, _duckdb (catalog/duck.py). urllib.request and http.client: only model downloads.
    # importlib.metadata (with email): plugins are found by reading entry_points.txt files
    # (catalog/registry.py); chromaprint: its module loads libchromaprint and FFmpeg's libraries,
    # its availability is looked up without that (extractors/chromaprint.py); shutil, logging:
    # only where a file is copied or Basic Pitch is run. hashlib (OpenSSL): blake2b comes from
    # catalog/blake2.py; csv and decimal: only CSV output and DECIMAL values need them.
    heavy = ("torch", "essentia", "demucs", "sqlmodel", "sqlalchemy", "duckdb_engine", "pyarrow", "numpy",
             "pandas", "soundfile", "av", "mutagen", "watchdog", "tqdm", "ray", "duckdb", "urllib.request",
             "http.client", "importlib.metadata", "email", "chromaprint", "ctypes", "shutil", "logging",
             "hashlib", "_hashlib", "csv", "decimal")
    # Each DuckDB instance costs ~35 ms of CPU to start: status and sql read through one.
    probe = f"""
import sys
HEAVY = {heavy!r}
sys.path.insert(0, {str(REPO)!r})
sys.argv = ["muscat", "--db", {str(path)!r}, "{{cmd}}"] + {{extra}}
import _duckdb
instances = []
connect = _duckdb.connect
def counted(*args, **kwargs):
    instances.append(args)
    return connect(*args, **kwargs)
_duckdb.connect = counted
from cli import main
try:
    main()
except SystemExit:
    pass
print("instances", len(instances))
print(sorted(m for m in HEAVY if m in sys.modules))
"""
    # The first command after a scan writes the catalogue's record of the extractors (a write,
    # with the whole duckdb package); what is measured is every run after that.
    assert run_muscat("status", db=path).returncode == 0
    for cmd, extra in [("status", []), ("sql", ["SELECT count(*) FROM library"]),
                       ("sql", ["SELECT now(), INTERVAL 1 day, [TIMESTAMPTZ '2024-03-01 12:00+00']"])]:
        out = subprocess.run([sys.executable, "-c", probe.format(cmd=cmd, extra=extra)],
                             capture_output=True, text=True).stdout
        assert out.strip().splitlines()[-1] == "[]", (cmd, out)
        assert out.strip().splitlines()[-2] == "instances 1", (cmd, out)


def test_status_and_sql_end_quickly_with_all_their_output(scanned):
    """The console script ends status and sql with os._exit (cli.run): what they print is
    flushed first, in full, with the exit status it always had; a failure ends the usual way."""
    path, _, files = scanned
    big = run_muscat("sql", "SELECT range AS n, repeat('x', 50) AS pad FROM range(200000)", "--format", "csv", db=path)
    lines = big.stdout.splitlines()
    assert big.returncode == 0 and big.stderr == ""
    assert lines[0] == "n,pad" and len(lines) == 200001 and lines[-1] == f"199999,{'x' * 50}"
    shown = run_muscat("status", db=path)
    assert shown.returncode == 0 and shown.stderr == ""
    assert shown.stdout.splitlines()[-1].startswith("spectral")  # the last table's last row
    counts = json.loads(run_muscat("status", "--json", db=path).stdout)
    assert counts["files"]["present"] == len(files["good"] + files["broken"])
    # Through a pipe that closes early (`| head -1`): the same as before, no traceback.
    head = subprocess.run(f"'{MUSCAT}' --db '{path}' sql 'SELECT * FROM range(300000)' | head -1",
                          shell=True, capture_output=True, text=True)
    assert head.stdout.split() == ["range"] and "Traceback" not in head.stderr
    failed = run_muscat("sql", "SELECT no_such_column FROM library", db=path)
    assert failed.returncode == 2 and "no_such_column" in failed.stderr


def test_a_scan_that_succeeded_ends_at_once_with_its_work_complete(library, tmp_path):
    """The console script also ends a scan that succeeded with os._exit (cli.run), once its
    catalogue is detached and its scan state saved: what it printed is there in full, another
    process reads every file, and the next scan is answered from the state. A scan that
    reported something (exit 1) ends the usual way, through Python's finalization."""
    root, files = library
    path = tmp_path / "cat.duckdb"
    # An atexit handler runs when the process is torn down the usual way, not after os._exit.
    probe = f"""
import atexit, sys
sys.path.insert(0, {str(REPO)!r})
sys.argv = ["muscat", "--db", {str(path)!r}, "scan"] + sys.argv[1:]
atexit.register(lambda: print("finalized"))
import cli
cli.run()
"""
    first = subprocess.run([sys.executable, "-c", probe, str(root)], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [f"{len(files['good'] + files['broken'])} added, 0 changed, 0 moved, "
                                         "0 missing, 0 unchanged, 0 errors"]
    assert Path(f"{path}.scan-state").exists()
    counted = run_muscat("sql", "SELECT count(*) AS n FROM files WHERE status = 'present'", "--format", "csv", db=path)
    assert counted.stdout.splitlines() == ["n", str(len(files["good"] + files["broken"]))]
    again = run_muscat("scan", "--json", str(root), db=path)
    assert json.loads(again.stdout)["unchanged"] == len(files["good"] + files["broken"])
    # An offline root: reported, exit 1, and the process is finalized as always.
    reported = subprocess.run([sys.executable, "-c", probe, str(root), str(tmp_path / "unplugged")],
                              capture_output=True, text=True)
    assert reported.returncode == 1 and "unplugged" in reported.stderr
    assert reported.stdout.splitlines()[-1] == "finalized"
