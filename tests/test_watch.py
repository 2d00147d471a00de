"""A real watcher on a temporary library: settling, moves, bursts, lost events, readers, signals."""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from audio import click_track, sine, write
from conftest import MUSCAT, assert_intact, rows, run_muscat

import catalog


def wait_for(check, timeout: float = 30.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not true within {timeout} s: {check.__doc__ or check}")


@contextlib.contextmanager
def watching(db: Path, root: Path, *options: str):
    proc = subprocess.Popen([str(MUSCAT), "--db", str(db), "watch", str(root), *options],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    database = catalog.Database(db, lock_timeout=30)
    try:
        wait_for(lambda: db.exists() and rows(database, "SELECT count(*) FROM roots")[0][0] == 1)
        time.sleep(0.5)  # the observer is up once the first scan has been written
        yield proc, database
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def paths(database) -> set[str]:
    return {p for (p,) in rows(database, "SELECT path FROM library")}


def test_slow_copy_is_taken_once_after_it_completes(tmp_path):
    root = tmp_path / "Music"
    root.mkdir()
    source = write(tmp_path / "source.wav", click_track(120, 8))
    data = source.read_bytes()
    target = root / "slow.wav"
    with watching(tmp_path / "c.duckdb", root, "--settle", "1") as (proc, database):
        with open(target, "wb") as out:
            for start in range(0, len(data), len(data) // 8):
                out.write(data[start : start + len(data) // 8])
                out.flush()
                time.sleep(0.4)
                assert str(target) not in paths(database), "a file still being written was catalogued"
        wait_for(lambda: rows(database, "SELECT count(*) FROM runs WHERE extractor = 'rhythm'")[0][0] == 1)
        assert rows(database, "SELECT count(*) FROM runs WHERE extractor = 'probe'") == [(1,)]
        assert rows(database, "SELECT count(*) FROM runs WHERE status = 'failed'") == [(0,)]
        assert rows(database, "SELECT size FROM library") == [(len(data),)]
    assert proc.returncode == 0


def test_moves_keep_identity_and_a_folder_moved_out_goes_missing(tmp_path):
    root = tmp_path / "Music"
    write(root / "Album" / "one.wav", sine(300, 1.0))
    write(root / "Album" / "two.wav", sine(400, 1.0))
    write(root / "single.wav", sine(500, 1.0))
    with watching(tmp_path / "c.duckdb", root, "--no-extract") as (proc, database):
        # Files younger than --settle when the watcher starts are taken once they have settled.
        wait_for(lambda: len(paths(database)) == 3)
        before = dict(rows(database, "SELECT path, file_id FROM library"))
        (root / "single.wav").rename(root / "renamed.wav")
        (root / "Album").rename(root / "Album (2024)")
        wait_for(lambda: str(root / "Album (2024)" / "two.wav") in paths(database)
                 and str(root / "renamed.wav") in paths(database))
        after = dict(rows(database, "SELECT path, file_id FROM library"))
        assert after[str(root / "renamed.wav")] == before[str(root / "single.wav")]
        assert after[str(root / "Album (2024)" / "one.wav")] == before[str(root / "Album" / "one.wav")]
        assert rows(database, "SELECT count(*) FROM files WHERE status = 'missing'") == [(0,)]

        # rsync and taggers write a hidden temporary file, then rename it over the target.
        temporary = root / ".renamed.wav.Xy12Ab"
        temporary.write_bytes(write(tmp_path / "new.wav", sine(600, 1.0)).read_bytes())
        temporary.rename(root / "renamed.wav")
        wait_for(lambda: rows(database, "SELECT count(*) FROM files WHERE changed_at > first_seen")[0][0] >= 1)
        assert rows(database, "SELECT size FROM library WHERE path = ?", [str(root / "renamed.wav")]) == [
            ((tmp_path / "new.wav").stat().st_size,)]

        (root / "Album (2024)" / "one.wav").unlink()
        wait_for(lambda: rows(database, "SELECT count(*) FROM files WHERE status = 'missing'")[0][0] == 1)
        shutil.move(str(root / "Album (2024)"), str(tmp_path / "elsewhere"))  # out of the tree
        wait_for(lambda: rows(database, "SELECT count(*) FROM files WHERE status = 'missing'")[0][0] == 2)
        assert paths(database) == {str(root / "renamed.wav")}
        assert not any(".Xy12Ab" in p for (p,) in rows(database, "SELECT name FROM files"))
        assert_intact(database)


def test_burst_of_1000_files_all_arrive_while_readers_get_in(tmp_path):
    root = tmp_path / "Music"
    root.mkdir()
    template = write(tmp_path / "t.wav", sine(440, 0.05)).read_bytes()
    with watching(tmp_path / "c.duckdb", root, "--no-extract") as (proc, database):
        stop = threading.Event()
        answers: list[int] = []

        def reader():
            while not stop.is_set():
                result = run_muscat("sql", "SELECT count(*) FROM library", "--format", "csv",
                                    db=tmp_path / "c.duckdb")
                assert result.returncode == 0, result.stderr
                answers.append(int(result.stdout.split()[1]))

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for i in range(1000):
                folder = root / f"batch{i // 100}"
                folder.mkdir(exist_ok=True)
                (folder / f"{i:04d}.wav").write_bytes(template)
            wait_for(lambda: rows(database, "SELECT count(*) FROM library")[0][0] == 1000, timeout=60)
        finally:
            stop.set()
            thread.join()
        assert answers and all(0 <= n <= 1000 for n in answers)
        assert_intact(database)


def test_lost_events_trigger_a_rescan(tmp_path):
    """watchdog reports an inotify queue overflow only in its log; the rescan finds what was missed."""
    root = tmp_path / "Music"
    write(root / "known.wav", sine(440, 0.2))
    settings = catalog.load_settings(db=tmp_path / "c.duckdb")
    database = catalog.Database(settings.db_path)
    watcher = catalog.Watcher(database, settings, [str(root)])
    watcher.start()
    try:
        watcher.observer.unschedule_all()  # from now on, events are lost
        write(root / "missed" / "unseen.wav", sine(330, 0.2))
        for _ in range(10):
            watcher.tick()
        assert str(root / "missed" / "unseen.wav") not in paths(database)
        logging.getLogger("watchdog.observers.inotify_c").warning(
            "Inotify queue overflowed; filesystem events were lost")
        watcher.tick()
        assert str(root / "missed" / "unseen.wav") in paths(database)
    finally:
        watcher.stop()


def test_sigterm_exits_0_and_a_restart_resumes(tmp_path):
    root = tmp_path / "Music"
    for i in range(6):
        write(root / f"{i}.flac", click_track(100 + 5 * i, 20))
    db = tmp_path / "c.duckdb"
    with watching(db, root, "--workers", "1") as (proc, database):
        wait_for(lambda: rows(database, "SELECT count(*) FROM runs WHERE extractor = 'rhythm'")[0][0] >= 1, 120)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        assert proc.returncode == 0 and time.monotonic() - started < 10
    partial = rows(database, "SELECT count(*) FROM runs WHERE extractor = 'rhythm'")[0][0]
    assert partial < 6
    assert rows(database, "SELECT count(*) FROM runs WHERE status = 'failed'") == [(0,)]
    with watching(db, root, "--workers", "2") as (proc, database):
        wait_for(lambda: rows(database, "SELECT count(*) FROM pending")[0][0] == 0
                 and rows(database, "SELECT count(*) FROM runs WHERE extractor = 'rhythm'")[0][0] == 6, 120)
    assert rows(database, "SELECT extractor, count(*) FROM runs GROUP BY ALL HAVING count(*) <> 6") == []


def test_a_closed_file_is_taken_at_its_close_and_a_folder_moved_in_waits_for_settle(tmp_path):
    root = tmp_path / "Music"
    (root / "Album").mkdir(parents=True)
    data = write(tmp_path / "src.wav", sine(440, 0.5)).read_bytes()
    settle = 20
    with watching(tmp_path / "c.duckdb", root, "--no-extract", "--settle", str(settle)) as (proc, database):
        closed = root / "Album" / "closed.wav"
        with open(closed, "wb") as out:
            out.write(data)
        # Its writer closed it: taken then, not once the settle time has passed (the timeout is
        # well inside it).
        wait_for(lambda: str(closed) in paths(database), timeout=settle - 5)
        # A folder written elsewhere and moved in: its just-written file comes with no close the
        # watcher saw, so it waits until --settle seconds passed without events.
        staging = tmp_path / "staging" / "New Album"
        write(staging / "fresh.wav", sine(300, 0.5))
        staging.rename(root / "New Album")
        fresh = root / "New Album" / "fresh.wav"
        time.sleep(3)
        assert str(fresh) not in paths(database), "a file seen without its close was taken before it settled"
        wait_for(lambda: str(fresh) in paths(database), timeout=settle + 40)
        assert paths(database) == {str(closed), str(fresh)}
    assert proc.returncode == 0


def test_polling_takes_a_file_once_it_has_settled(tmp_path):
    root = tmp_path / "Music"
    root.mkdir()
    with watching(tmp_path / "c.duckdb", root, "--poll", "--poll-interval", "0.3", "--settle", "1.5",
                  "--no-extract") as (proc, database):
        target = root / "growing.wav"
        data = write(tmp_path / "src.wav", sine(440, 2.0)).read_bytes()
        with open(target, "wb") as out:
            for start in range(0, len(data), len(data) // 4):
                out.write(data[start : start + len(data) // 4])
                out.flush()
                time.sleep(0.5)
                assert str(target) not in paths(database)
        wait_for(lambda: str(target) in paths(database), timeout=15)
        assert rows(database, "SELECT size FROM library") == [(len(data),)]


def test_network_file_systems_are_polled(tmp_path):
    from catalog.watcher import mount_type, needs_polling

    mounts = tmp_path / "mounts"
    mounts.write_text("server:/music /mnt/music nfs4 rw 0 0\n/dev/sda1 / ext4 rw 0 0\n"
                      "box: /mnt/box fuse.sshfs rw 0 0\n")
    assert mount_type("/mnt/music/Album", str(mounts)) == "nfs4"
    assert mount_type("/home/me/Music", str(mounts)) == "ext4"
    assert mount_type("/mnt/box/x", str(mounts)) == "fuse.sshfs"
    assert needs_polling(str(tmp_path)) is None or "file system" in needs_polling(str(tmp_path))


def test_watch_limit_falls_back_to_polling(tmp_path, monkeypatch):
    from watchdog.observers import Observer

    def refuse(*args, **kwargs):
        raise OSError(28, "inotify watch limit reached")

    monkeypatch.setattr(Observer, "schedule", refuse)
    root = tmp_path / "Music"
    write(root / "a.wav", sine(440, 0.2))
    settings = catalog.load_settings(db=tmp_path / "c.duckdb")
    messages: list[str] = []
    watcher = catalog.Watcher(catalog.Database(settings.db_path), settings, [str(root)], poll_interval=0.2,
                              settle=0.0, log=messages.append)
    watcher.start()
    try:
        assert str(root) in watcher.polled and any("polling it" in m for m in messages)
        write(root / "b.wav", sine(330, 0.2))
        time.sleep(0.3)
        watcher.tick()
        assert str(root / "b.wav") in paths(watcher.db)
    finally:
        watcher.stop()


class _PlanRecorder:
    """The part of an Engine the watcher calls, recording what it is asked to plan."""

    def __init__(self) -> None:
        self.plans: list[list[int] | None] = []
        self.vanished: set[int] = set()
        self.idle = True

    def plan(self, file_ids=None, front=False):
        self.plans.append(None if file_ids is None else sorted(file_ids))
        return 0

    def step(self, timeout):
        pass


def test_changes_waiting_to_be_taken_go_before_the_plan_of_those_taken(tmp_path, monkeypatch):
    """A file closed while the watcher reconciles another is reconciled next, before either is
    planned for extraction (a plan takes a tenth of a second it would wait for); both are then
    planned together. With changes coming all the time, the plan waits PLAN_DELAY_S at most."""
    from watchdog.events import FileClosedEvent

    from catalog import watcher as watcher_module

    root = tmp_path / "Music"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    settings = catalog.load_settings(db=tmp_path / "c.duckdb")
    database = catalog.Database(settings.db_path)
    engine = _PlanRecorder()
    watcher = catalog.Watcher(database, settings, [str(root)], engine=engine)
    watcher.start()
    try:
        watcher.observer.unschedule_all()  # this test hands the watcher its events
        assert engine.plans == [None]  # the backlog
        reconcile = watcher._reconcile_dirty
        closes: list[Path] = []

        def reconcile_while_another_closes():
            reconcile()
            if closes:  # closed while the reconciliation ran
                watcher.events.put(FileClosedEvent(str(closes.pop())))

        monkeypatch.setattr(watcher, "_reconcile_dirty", reconcile_while_another_closes)
        first, second = write(root / "a" / "one.wav", sine(440, 0.2)), write(root / "b" / "two.wav", sine(330, 0.2))
        closes.append(second)
        watcher.events.put(FileClosedEvent(str(first)))
        watcher.tick()
        assert str(first) in paths(database) and str(second) not in paths(database)
        assert engine.plans == [None], "planned while a closed file waited"
        watcher.tick()
        ids = dict(rows(database, "SELECT path, file_id FROM library"))
        assert engine.plans == [None, sorted([ids[str(first)], ids[str(second)]])]
        # A stream of closes: planned anyway once the first unplanned change is PLAN_DELAY_S old.
        monkeypatch.setattr(watcher_module, "PLAN_DELAY_S", 0.0)
        third, fourth = write(root / "a" / "three.wav", sine(220, 0.2)), write(root / "b" / "four.wav", sine(550, 0.2))
        closes.append(fourth)
        watcher.events.put(FileClosedEvent(str(third)))
        watcher.tick()
        ids = dict(rows(database, "SELECT path, file_id FROM library"))
        assert engine.plans[-1] == [ids[str(third)]]
    finally:
        watcher.stop()
