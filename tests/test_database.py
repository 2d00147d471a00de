"""The catalogue file: creation, schema versions, DuckDB 1.5 clients, readers beside a writer."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, rows, run_muscat

import catalog
from catalog import migrations

DUCKDB_15_CLI = Path(sys.executable).parent / "duckdb"

HOLD_SCRIPT = """
import os, sys, time
sys.path.insert(0, {repo!r})
import catalog
db = catalog.Database({path!r})
with db.write() as con:
    print("holding", flush=True)
    until = time.monotonic() + {seconds}
    while time.monotonic() < until and not os.path.exists({release!r}):
        time.sleep(0.05)
"""


def hold_lock(path: Path, seconds: float, release: Path | None = None) -> subprocess.Popen:
    """Another process that keeps the catalogue attached read-write for `seconds`, or until the
    file `release` appears."""
    script = HOLD_SCRIPT.format(repo=str(REPO), path=str(path), seconds=seconds, release=str(release or ""))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_created_on_first_use_with_schema_version(tmp_path):
    path = tmp_path / "new" / "cat.duckdb"
    path.parent.mkdir()
    result = run_muscat("status", "--json", db=path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["files"] == {"present": 0, "missing": 0}
    db = catalog.Database(path)
    assert rows(db, "SELECT max(version) FROM schema_version") == [(migrations.LATEST,)]


def test_opens_in_the_duckdb_15_cli(library, tmp_path):
    root, files = library
    path = tmp_path / "cat.duckdb"
    assert run_muscat("scan", str(root), db=path).returncode == 0
    assert DUCKDB_15_CLI.exists(), "duckdb-cli (a dev dependency) provides the 1.5 CLI"
    version = subprocess.run([str(DUCKDB_15_CLI), "--version"], capture_output=True, text=True).stdout
    assert version.startswith("v1.5"), version
    out = subprocess.run(
        [str(DUCKDB_15_CLI), "-readonly", "-csv", str(path), "-c",
         "SELECT count(*) AS n, count(DISTINCT root) AS roots FROM library"],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[1] == f"{len(files['good'] + files['broken'])},1"


def test_a_write_batch_of_many_rows_fills_row_groups_the_15_cli_reads(tmp_path, monkeypatch):
    """A batch of more rows than ROW_GROUP_SIZE (given at each attach: DuckDB does not keep it)
    makes row groups of that size, and the DuckDB 1.5 CLI reads such a file."""
    from catalog import database

    monkeypatch.setattr(database, "ROW_GROUP_SIZE", 2048)  # the smallest DuckDB takes
    root = tmp_path / "Music"
    for folder in range(5):
        (root / f"f{folder}").mkdir(parents=True)
        for i in range(1000):
            (root / f"f{folder}" / f"{i:04d}.flac").write_bytes(b"x" * (i + 1))
    path = tmp_path / "cat.duckdb"
    settings = catalog.load_settings(db=path)
    db = catalog.Database(path)
    assert catalog.scan(db, [str(root)], settings).added == 5000
    groups = "SELECT count(DISTINCT row_group_id) FROM pragma_storage_info('files')"
    assert rows(db, groups) == [(3,)]
    out = subprocess.run([str(DUCKDB_15_CLI), "-readonly", "-csv", str(path), "-c",
                          "SELECT count(*), count(DISTINCT file_id), sum(size) FROM library"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[1] == f"5000,5000,{5 * 1000 * 1001 // 2}"


def test_catalogue_from_a_newer_muscat_is_refused_untouched(tmp_path):
    path = tmp_path / "cat.duckdb"
    db = catalog.Database(path)
    with db.write() as con:
        con.execute("INSERT INTO schema_version VALUES (?, now()::TIMESTAMP, '99.0')", [migrations.LATEST + 1])
    before = path.read_bytes()
    result = run_muscat("status", db=path)
    assert result.returncode == 2
    assert "newer than this muscat" in result.stderr and "Traceback" not in result.stderr
    assert path.read_bytes() == before


def test_not_a_database_is_a_clear_error(tmp_path):
    path = tmp_path / "cat.duckdb"
    path.write_text("hello, I am a text file\n")
    result = run_muscat("status", db=path)
    assert result.returncode == 2
    assert str(path) in result.stderr and "Traceback" not in result.stderr


def test_reader_waits_for_a_writer_and_says_so(tmp_path):
    path = tmp_path / "cat.duckdb"
    with catalog.Database(path).read():  # create it
        pass
    holder = hold_lock(path, seconds=2.5)
    try:
        started = time.monotonic()
        result = run_muscat("sql", "SELECT count(*) AS n FROM library", "--format", "json", db=path)
        waited = time.monotonic() - started
    finally:
        holder.wait()
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [{"n": 0}]
    assert "waiting for the catalogue" in result.stderr and "PID" in result.stderr
    assert waited >= 1.0  # it did wait for the holder rather than fail


def test_lock_held_too_long_exits_2_with_a_message(tmp_path):
    path = tmp_path / "cat.duckdb"
    with catalog.Database(path).read():
        pass
    (tmp_path / "muscat.toml").write_text("lock_timeout = 1\n")
    holder = hold_lock(path, seconds=4)
    try:
        result = run_muscat("status", db=path)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2
    assert "held by" in result.stderr and "lock_timeout" in result.stderr
    assert "Traceback" not in result.stderr


def test_reader_and_writer_in_two_processes(tmp_path):
    """A scan writing in one process while another keeps querying: every query succeeds."""
    root = tmp_path / "Big"
    for d in range(60):
        folder = root / f"d{d:02d}"
        folder.mkdir(parents=True)
        for i in range(50):
            (folder / f"{i:02d}.flac").write_bytes(b"x" * (i + 1))
    path = tmp_path / "cat.duckdb"
    with catalog.Database(path).read():
        pass
    writer = subprocess.Popen(
        [sys.executable, "-c", f"""
import sys, time, os
sys.path.insert(0, {str(REPO)!r})
import catalog
settings = catalog.load_settings(db={str(path)!r})
db = catalog.Database(settings.db_path)
for round in range(6):
    for d in range(60):
        os.utime(os.path.join({str(root)!r}, f"d{{d:02d}}", "00.flac"), ns=(round * 10**9, round * 10**9))
    catalog.scan(db, [{str(root)!r}], settings)
print("done", flush=True)
"""], stdout=subprocess.PIPE, text=True)
    answers = []
    while writer.poll() is None:
        result = run_muscat("sql", "SELECT count(*) FROM library", "--format", "csv", db=path)
        assert result.returncode == 0, result.stderr
        answers.append(int(result.stdout.splitlines()[1]))
    assert writer.wait() == 0
    assert answers and set(answers) <= {0, 3000}  # whole batches only, never half a scan
    assert rows(catalog.Database(path), "SELECT count(*) FROM library") == [(3000,)]


def test_a_reader_gets_in_between_write_batches_that_come_back_to_back(tmp_path):
    """A process writing batch after batch without pause (a watcher taking a burst) leaves
    readers a gap after each (READERS_GAP_S): a reader in another process gets its answer
    while the writes go on, not once they stop."""
    path = tmp_path / "cat.duckdb"
    with catalog.Database(path).write() as con:
        con.execute("CREATE TABLE ticks (n INTEGER)")
    writer = subprocess.Popen([sys.executable, "-c", f"""
import os, sys, time
sys.path.insert(0, {str(REPO)!r})
import catalog
db = catalog.Database({str(path)!r})
n = 0
print("writing", flush=True)
while not os.path.exists({str(tmp_path / "stop")!r}):
    with db.write() as con:
        con.execute("INSERT INTO ticks VALUES (?)", [n])
        time.sleep(0.1)  # a watcher's reconciliation holds the file about this long
    n += 1
    print("wrote", n, flush=True)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        # Without the gap such a reader waited for seconds on end: 5 s and it gives up.
        reader = catalog.Database(path, lock_timeout=5)
        for _ in range(3):
            written = int(writer.stdout.readline().split()[1])  # the writer's next batch is in
            with reader.read() as con:
                (count,), = con.execute("SELECT count(*) FROM ticks").fetchall()
            assert count >= written
        assert writer.poll() is None, "the writer stopped: the reads did not come between its batches"
    finally:
        (tmp_path / "stop").touch()
        assert writer.wait(timeout=30) == 0


def test_a_write_batch_right_after_another_waits_for_the_readers_gap(tmp_path, monkeypatch):
    """The gap itself: a batch that follows the same process's last one within READERS_GAP_S
    first sleeps out the rest of it; one that comes later does not sleep."""
    from catalog import database

    slept: list[float] = []
    real_sleep = time.sleep
    monkeypatch.setattr(database.time, "sleep", lambda seconds: (slept.append(seconds), real_sleep(seconds)))
    db = catalog.Database(tmp_path / "cat.duckdb")
    with db.write():
        pass
    slept.clear()  # what creating the catalogue did
    with db.write():
        pass
    assert len(slept) == 1 and 0 < slept[0] <= database.READERS_GAP_S
    real_sleep(database.READERS_GAP_S)
    with db.write():
        pass
    assert len(slept) == 1


def test_sqlmodel_session_reads_the_catalogue(library, tmp_path):
    from sqlmodel import Session, select

    from schema.tables import File, engine_for

    root, files = library
    path = tmp_path / "cat.duckdb"
    assert run_muscat("scan", str(root), db=path).returncode == 0
    with Session(engine_for(str(path))) as session:
        found = session.exec(select(File).where(File.status == "present")).all()
    assert len(found) == len(files["good"] + files["broken"])
    # NullPool: the file is free again for a writer.
    with catalog.Database(path).write():
        pass


@pytest.mark.parametrize("value", ["'nine'", "true", "[1]"])
def test_wrong_type_in_config_is_exit_2_naming_the_key(tmp_path, value):
    (tmp_path / "muscat.toml").write_text(f"workers = {value}\n")
    result = run_muscat("status", db=tmp_path / "cat.duckdb")
    assert result.returncode == 2
    assert "'workers' must be an integer" in result.stderr and "muscat.toml" in result.stderr


@pytest.mark.parametrize("line,message", [("gpu_worker = 'yes'", "'gpu_worker' must be true or false"),
                                          ("gpu_batch = 0", "'gpu_batch' must be at least 1"),
                                          ("gpu_batch = true", "'gpu_batch' must be an integer"),
                                          ("gpu_timeout = 0", "'gpu_timeout' must be a positive number")])
def test_gpu_worker_settings_are_checked(tmp_path, line, message):
    (tmp_path / "muscat.toml").write_text(line + "\n")
    result = run_muscat("status", db=tmp_path / "cat.duckdb")
    assert result.returncode == 2 and message in result.stderr


def test_unknown_config_key_is_exit_2_naming_it(tmp_path):
    (tmp_path / "muscat.toml").write_text("wrokers = 2\n")
    result = run_muscat("status", db=tmp_path / "cat.duckdb")
    assert result.returncode == 2 and "unknown key 'wrokers'" in result.stderr


def test_invalid_toml_is_exit_2(tmp_path):
    (tmp_path / "muscat.toml").write_text("workers = = 2\n")
    result = run_muscat("status", db=tmp_path / "cat.duckdb")
    assert result.returncode == 2 and "not valid TOML" in result.stderr


ONLY = "loudness,rhythm,spectral"  # rhythm: slow enough that the run outlasts the hold


def extraction_under_a_held_catalogue(tmp_path: Path, lock_timeout: float, release_when):
    """`muscat extract` on 30 files; once its first results are in (its first flush, a second
    after it started: runs of any extractor, a probe perhaps alone, since a batch run's next
    flushes are spaced by their cost), another process holds the catalogue read-write until
    `release_when(extract process, its stderr so far)` is true (a fixed time would race the pace
    of the results on a busy machine: muscat only meets the lock when it has something to
    write). Returns (exit status, stderr, catalogue)."""
    import threading

    from audio import click_track, write

    root = tmp_path / "Music"
    for i in range(30):
        write(root / f"{i:02d}.flac", click_track(90 + 3 * i, 15))
    db = tmp_path / "cat.duckdb"
    (tmp_path / "muscat.toml").write_text(f"lock_timeout = {lock_timeout}\n")
    assert run_muscat("scan", str(root), db=db).returncode == 0
    from conftest import MUSCAT

    proc = subprocess.Popen([str(MUSCAT), "--db", str(db), "extract", "--workers", "1", "--only", ONLY],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    database = catalog.Database(db, lock_timeout=60)
    deadline = time.monotonic() + 120
    while not rows(database, "SELECT count(*) FROM runs")[0][0]:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    release = tmp_path / "release"
    holder = hold_lock(db, seconds=300, release=release)
    assert proc.poll() is None  # held while extract still runs
    try:
        deadline = time.monotonic() + 180
        while not release_when(proc, "".join(lines)):
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
    finally:
        release.touch()
        holder.wait()
    proc.wait(timeout=180)
    reader.join(timeout=10)
    return proc.returncode, "".join(lines), database


def test_extract_keeps_results_while_another_client_holds_the_catalogue(tmp_path):
    # Held until muscat says it keeps results in memory (at least a second of holding), then freed.
    code, stderr, database = extraction_under_a_held_catalogue(
        tmp_path, lock_timeout=60, release_when=lambda proc, err: "kept in memory" in err)
    assert code == 0, stderr
    assert "finished results kept in memory" in stderr and "PID" in stderr
    assert "free again" in stderr and "Traceback" not in stderr
    assert rows(database, "SELECT extractor, count(*) FROM runs WHERE status = 'ok' GROUP BY ALL ORDER BY 1") == [
        ("loudness", 30), ("probe", 30), ("rhythm", 30), ("spectral", 30)]
    from conftest import assert_intact

    assert_intact(database)


def test_extract_gives_up_on_a_held_catalogue_with_exit_2_and_loses_nothing_written(tmp_path):
    code, stderr, database = extraction_under_a_held_catalogue(
        tmp_path, lock_timeout=2, release_when=lambda proc, err: proc.poll() is not None)
    assert code == 2, stderr
    assert "gave up after" in stderr and "pending again" in stderr and "Traceback" not in stderr
    from conftest import assert_intact

    assert_intact(database)
    assert rows(database, "SELECT count(*) FROM runs")[0][0] >= 1  # the first flush's, kept
    assert rows(database, "SELECT count(*) FROM runs WHERE extractor = 'loudness'")[0][0] < 30
    rest = run_muscat("extract", "--only", ONLY, "--json", db=database.path)
    assert rest.returncode == 0 and json.loads(rest.stdout)["failed"] == 0
    assert rows(database, "SELECT extractor, count(*), max(attempts) FROM runs GROUP BY ALL ORDER BY 1") == [
        ("loudness", 30, 1), ("probe", 30, 1), ("rhythm", 30, 1), ("spectral", 30, 1)]
