"""Following a library live: `muscat watch`.

After a first scan, file-system events (inotify through watchdog) mark folders dirty; dirty
folders are reconciled in small batches with the same scanner as `muscat scan` (their own files
only, or the whole subtree for folders that appeared or moved), and the files they touched are
identified and extracted before the backlog.

- Files still being written are left out: a file counts once its writer closed it (inotify's
  close-write). Where there are no events (`--poll`, network file systems), roots are rescanned
  every `poll_interval` seconds and a file counts once its mtime is `settle` seconds old.
- Lost events are not lost data: when inotify's queue overflows (watchdog only logs it), the
  roots are rescanned; when the inotify watch limit is reached, the root is polled instead.
  A full rescan also runs every `full_rescan` seconds.
- The catalogue is held only for each write batch, so readers get in between.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import TYPE_CHECKING, Callable

from . import tags
from .config import Settings
from .scanner import ScanReport, load_arrow, normalise_root, scan

if TYPE_CHECKING:
    from datetime import datetime

    from .database import Database
    from .extraction import Engine

# File systems that send no (or unreliable) inotify events: polled instead.
NETWORK_FILE_SYSTEMS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "afs", "9p", "ceph", "glusterfs",
                        "davfs", "sshfs", "lustre", "gpfs"}
# With inotify, a file whose writer never closes it counts after this long without events
# (and once its mtime is older than the settle time).
STALE_WRITE_S = 60.0
# Events are gathered until this long passes without one (or MAX_DELAY_S after the first), then
# the dirty folders are reconciled together: a burst of copies becomes a few write batches. A
# file known to be complete (its writer closed it, or it was renamed into place) is not kept
# waiting: its folder is reconciled at the next round, and the events that arrive while that
# scan runs are taken together by the one after it.
DEBOUNCE_S = 0.25
MAX_DELAY_S = 1.0
# The files a reconciliation added, changed or moved are planned for extraction once no taken
# change waits for its reconciliation (a plan, with the write of the results before it, takes
# ~0.15 s, which a file closed meanwhile would wait for), and at the latest this long after the
# first of them was taken.
PLAN_DELAY_S = 1.0
# Up to this many files' tags are read and written in the reconciliation's own transaction: a
# few milliseconds of reading, where a write batch of their own would keep the next change
# waiting for another commit and checkpoint.
INLINE_TAGS = 32


def mount_type(path: str, mounts_file: str = "/proc/self/mounts") -> str | None:
    """The file-system type of the mount holding `path` (Linux), or None when unknown."""
    try:
        with open(mounts_file) as f:
            mounts = [line.split()[1:3] for line in f if len(line.split()) >= 3]
    except OSError:
        return None
    real = os.path.realpath(path)
    best, kind = "", None
    for point, fstype in mounts:
        point = point.replace("\\040", " ")
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, fstype
    return kind


def needs_polling(path: str) -> str | None:
    """Why a root must be polled (a network or FUSE file system), or None."""
    kind = mount_type(path)
    if kind is not None and (kind in NETWORK_FILE_SYSTEMS or kind.startswith("fuse")):
        return f"{kind} file system (sends no change events)"
    return None


class _LostEvents(logging.Handler):
    """watchdog reports an inotify queue overflow only as a log line: turn it into a flag."""

    def __init__(self, flag: threading.Event) -> None:
        super().__init__(logging.WARNING)
        self.flag = flag

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage() or "events were lost" in record.getMessage():
            self.flag.set()


class Watcher:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        roots: list[str],
        settle: float = 2.0,
        poll: bool = False,
        poll_interval: float = 60.0,
        full_rescan: float = 3600.0,
        engine: Engine | None = None,
        log: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.roots = [normalise_root(r) for r in roots]
        self.settle = settle
        self.poll_all = poll
        self.poll_interval = poll_interval
        self.full_rescan = full_rescan
        self.engine = engine
        self.log = log
        self.extensions = {"." + e for e in settings.audio_extensions}
        self.events: queue.Queue = queue.Queue()
        self.overflowed = threading.Event()
        # Files that may be open for writing -> (time of their last event, whether a write was
        # seen). Only created: settled after `settle` seconds of silence (watchdog reports the
        # files of a new folder as created, with no close to follow); written to: once closed.
        self.writing: dict[str, tuple[float, bool]] = {}
        self.dirty: dict[str, bool] = {}  # folder -> whether its subfolders need a look too
        self.complete = False  # whether a dirty folder holds a file known to be complete
        self.last_event = 0.0
        self.first_dirty = 0.0
        self.polled: dict[str, float] = {}  # polled root -> when it was last scanned
        self.recheck: dict[str, float] = {}  # folder -> when its too-fresh files will have settled
        self.observer = None
        self._handler = _LostEvents(self.overflowed)
        self.started = False  # the first scan's counts are the caller's to report
        # When each reconciliation not yet planned for extraction wrote (its files' `changed_at`),
        # and when the first of them was taken.
        self.unplanned: list[datetime] = []
        self.first_unplanned = 0.0

    # -- setup -------------------------------------------------------------------------------

    def start(self) -> ScanReport:
        """Reconcile with a first scan, start following events, and queue the backlog."""
        logging.getLogger("watchdog").addHandler(self._handler)
        self._start_observer()
        report = self._scan(self.roots, recursive=True, fresh_is_busy=True)
        load_arrow()  # now, not while the first change holds the catalogue
        tags.load_readers()
        self.started = True
        self.last_full = time.monotonic()
        if self.engine is not None:
            self._plan_taken()
            self.engine.plan()  # the backlog, behind anything new
        return report

    def _start_observer(self) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        outer = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event):  # type: ignore[no-untyped-def]  # watchdog's thread
                outer.events.put(event)

        watched = []
        for root in self.roots:
            reason = "--poll" if self.poll_all else needs_polling(root)
            if reason is None:
                watched.append(root)
            else:
                self.log(f"{root}: polled every {self.poll_interval:g} s ({reason})")
                self.polled[root] = time.monotonic()
        if not watched:
            return
        self.observer = Observer()
        for root in watched:
            try:
                self.observer.schedule(Handler(), root, recursive=True)
            except OSError as exc:  # the inotify watch limit, or a root that went away
                self.log(f"{root}: cannot follow changes ({exc.strerror or exc}); polling it every "
                         f"{self.poll_interval:g} s instead (raise fs.inotify.max_user_watches to avoid this)")
                self.polled[root] = time.monotonic()
        try:
            self.observer.start()
        except OSError as exc:
            self.log(f"cannot follow changes ({exc}); polling every root instead")
            for root in watched:
                self.polled[root] = time.monotonic()
            self.observer = None

    def stop(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(5)
        logging.getLogger("watchdog").removeHandler(self._handler)

    # -- the loop ----------------------------------------------------------------------------

    def run(self, stopping: threading.Event, on_tick: Callable[[], None] | None = None) -> None:
        while not stopping.is_set():
            self.tick()
            if on_tick is not None:
                on_tick()

    def tick(self) -> None:
        """One round: take events, reconcile what settled, keep the workers busy."""
        self._take_events(timeout=0.0 if self.engine is not None and not self.engine.idle else 0.1)
        now = time.monotonic()
        if self.overflowed.is_set():
            self.overflowed.clear()
            self.log("file-system events were lost (inotify queue overflow): rescanning")
            self._scan(self.roots, recursive=True)
        elif now - self.last_full >= self.full_rescan:
            self._scan(self.roots, recursive=True)
            self.last_full = now
            if self.engine is not None:
                self._plan_taken()
                self.engine.plan()
        for root, last in list(self.polled.items()):
            if now - last >= self.poll_interval:
                self._scan([root], recursive=True, fresh_is_busy=True)
                self.polled[root] = time.monotonic()
        for folder, due in list(self.recheck.items()):
            if now >= due:
                del self.recheck[folder]
                self._mark(folder, False, self.last_event)
        if self.dirty and (self.complete or now - self.last_event >= DEBOUNCE_S
                           or now - self.first_dirty >= MAX_DELAY_S):
            self._reconcile_dirty()
        if self.engine is not None:
            if self.unplanned:
                self._take_events(timeout=0.0)  # those that came during the reconciliation
                if not (self.dirty and self.complete) or time.monotonic() - self.first_unplanned >= PLAN_DELAY_S:
                    self._plan_taken()
            self.engine.step(timeout=0.1)

    # -- events ------------------------------------------------------------------------------

    def _is_audio(self, path: str) -> bool:
        name = os.path.basename(path)
        return not name.startswith(".") and os.path.splitext(name)[1].lower() in self.extensions

    def _inside(self, path: str) -> bool:
        return any(path == r or path.startswith(r.rstrip("/") + "/") for r in self.roots)

    def _take_events(self, timeout: float) -> None:
        try:
            event = self.events.get(timeout=timeout) if timeout else self.events.get_nowait()
        except queue.Empty:
            event = None
        now = time.monotonic()
        while event is not None:
            self._note(event, now)
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                event = None
        for path, (last, written) in list(self.writing.items()):
            if now - last > (STALE_WRITE_S if written else self.settle) and not (written and self._fresh(path)):
                del self.writing[path]
                self._mark(os.path.dirname(path), False, now)

    def _note(self, event, now: float) -> None:  # type: ignore[no-untyped-def]
        kind = event.event_type
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(getattr(event, "dest_path", "") or "")
        if event.is_directory:
            if kind in ("created", "deleted", "moved"):
                self._mark(src, True, now)
                if dest:
                    self._mark(dest, True, now)
            return
        if kind in ("opened", "closed_no_write"):
            return
        if kind == "modified" or kind == "created" and self._fresh(src):
            if self._is_audio(src):
                written = kind == "modified" or self.writing.get(src, (0.0, False))[1]
                self.writing[src] = (now, written)
                self._mark(os.path.dirname(src), False, now)
        elif kind == "created":  # moved in from outside: complete (an old mtime), no close to come
            if self._is_audio(src):
                self._mark(os.path.dirname(src), False, now, complete=True)
        elif kind == "closed":
            if self.writing.pop(src, None) is not None or self._is_audio(src):
                self._mark(os.path.dirname(src), False, now, complete=True)
        elif kind == "deleted":
            self.writing.pop(src, None)
            if self._is_audio(src):
                self._mark(os.path.dirname(src), False, now)
        elif kind == "moved":  # a rename is complete at once: temp-file-then-rename writers
            self.writing.pop(src, None)
            for path in (src, dest):
                if path and self._is_audio(path):
                    self._mark(os.path.dirname(path), False, now, complete=True)

    def _mark(self, folder: str, recursive: bool, now: float, complete: bool = False) -> None:
        if not self._inside(folder):
            return  # moved out of the tree: the source side says what left
        if not self.dirty:
            self.first_dirty = now
        self.dirty[folder] = self.dirty.get(folder, False) or recursive
        self.complete = self.complete or complete
        self.last_event = now

    # -- reconciling -------------------------------------------------------------------------

    def _reconcile_dirty(self) -> None:
        dirty, self.dirty, self.complete = self.dirty, {}, False
        deep = sorted(f for f, recursive in dirty.items() if recursive)
        # A folder inside one that is rescanned whole needs no look of its own.
        deep = [f for i, f in enumerate(deep) if not any(f.startswith(d.rstrip("/") + "/") for d in deep[:i])]
        shallow = [f for f, recursive in dirty.items()
                   if not recursive and not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deep)]
        if deep:
            self._scan(deep, recursive=True)
        if shallow:
            self._scan(shallow, recursive=False)

    def _fresh(self, path: str) -> bool:
        try:
            return time.time() - os.stat(path).st_mtime < self.settle
        except OSError:
            return False

    def _defer_writing(self, path: bytes, st: os.stat_result) -> bool:
        return os.fsdecode(path) in self.writing

    def _defer_fresh(self, path: bytes, st: os.stat_result) -> bool:
        return time.time() - st.st_mtime < self.settle

    def _scan(self, paths: list[str], recursive: bool, fresh_is_busy: bool = False) -> ScanReport:
        defer = self._defer_fresh if fresh_is_busy or self.poll_all else self._defer_writing
        report = scan(self.db, paths, self.settings, allow_empty=False, recursive=recursive, defer=defer,
                      inline_tags=INLINE_TAGS)
        for root, reason in report.offline:
            self.log(f"{root}: {reason}; left as it was, nothing marked missing")
        for path, reason in report.problems:
            self.log(f"{path}: {reason}")
        changes = report.added + report.changed + report.moved + report.missing
        if changes and self.started:
            self.log(f"{', '.join(f'{n} {k}' for k, n in report.to_json().items() if n and k != 'unchanged')}")
        if self.engine is not None and report.added + report.changed + report.moved:
            if not self.unplanned:
                self.first_unplanned = time.monotonic()
            self.unplanned.append(report.scanned_at)
        for path in report.deferred:  # too fresh to take: look again once it has settled
            if defer == self._defer_fresh:
                self.recheck.setdefault(os.path.dirname(path), time.monotonic() + self.settle)
        for root in [p for p in paths if p in self.polled]:
            self.polled[root] = time.monotonic()
        return report

    def _plan_taken(self) -> None:
        """Queue the extraction of what the reconciliations since the last plan took, before
        the backlog."""
        assert self.engine is not None
        if not self.unplanned:
            return
        written, self.unplanned = self.unplanned, []
        with self.db.read() as con:
            touched = [row[0] for row in con.execute(
                "SELECT file_id FROM files WHERE list_contains(?::TIMESTAMP[], changed_at) AND status = 'present'",
                [written],
            ).fetchall()]
        if touched or self.engine.vanished:
            self.engine.plan(touched, front=True)
