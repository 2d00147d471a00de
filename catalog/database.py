"""The catalogue file: one writer that holds it only per batch, readers that wait their turn.

DuckDB lets one process hold a database file read-write, and while it does, no other process
can open it at all. So a writer attaches the file to an in-memory DuckDB instance for one short
transaction and detaches it afterwards (attach costs about a millisecond; detach checkpoints),
and readers open the file read-only, retrying while a writer holds it.

Readers share one in-memory DuckDB instance per `Database` and attach the file read-only for
each read: starting an instance costs about 35 ms of CPU, attaching 5 ms, and `muscat status`
reads a few times.

duckdb is imported on first use, not at import time: `muscat scan` forks its folder walker
before paying for that import (see catalog/walker.py); readers import only its engine
(catalog/duck.py).
"""

from __future__ import annotations

import re
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from .clock import utc_now  # noqa: F401  (the catalogue's clock; long imported from here)
from .errors import CatalogLocked, DatabaseError

if TYPE_CHECKING:
    import duckdb

ALIAS = "catalogue"
# Files created by muscat stay readable by DuckDB 1.5 clients (the `duckdb` CLI on PyPI).
STORAGE_VERSION = "v1.5.0"
# Rows per row group in what a write batch adds (DuckDB's default: 122,880), given at each attach
# since DuckDB does not keep it in the file. A batch that fills row groups writes them out as it
# goes, where a smaller one leaves all its rows to the commit's checkpoint: a first scan of
# 100,000 files spent 0.17 s inserting and committing them with the default, 0.13 s with this.
ROW_GROUP_SIZE = 32768
# How long a waiting command stays silent before it says why it waits.
QUIET_WAIT_S = 1.0
# A write batch starts at least this long after the same process's previous one ended: readers
# waiting for the file try every 25 ms at most (_retry_while_locked), and a watcher taking a
# burst of changes batch after batch would otherwise keep them out for as long as it lasts.
READERS_GAP_S = 0.03


def _lock_holder(message: str) -> str | None:
    """The 'held in PROGRAM (PID n)' part of DuckDB's lock error, if it is one."""
    if "Could not set lock" not in message and "Conflicting lock" not in message:
        return None
    match = re.search(r"held in (.*?\(PID \d+\))", message)
    return match.group(1) if match else "another process"


class Database:
    """A muscat catalogue file. Cheap to create; nothing is opened until used."""

    def __init__(
        self,
        path: str | Path,
        lock_timeout: float = 60.0,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.path = Path(path).absolute()
        self.lock_timeout = lock_timeout
        self.notify = notify or (lambda message: None)
        self._memory: duckdb.DuckDBPyConnection | None = None
        self._migrated = False
        self._reader: duckdb.DuckDBPyConnection | None = None
        self._reads = 0  # reads open now (nested ones share the attachment)
        self._read_lock = threading.RLock()
        self._write_ended = float("-inf")  # time.monotonic() at the end of the last write batch

    def close(self) -> None:
        """Release the in-memory DuckDB instances that write batches and reads attach the file to."""
        if self._memory is not None:
            self._memory.close()
            self._memory = None
        with self._read_lock:
            if self._reader is not None and self._reads == 0:
                self._reader.close()
                self._reader = None

    # -- writing -------------------------------------------------------------------------

    @contextmanager
    def write(self, patience: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """One write batch: the file attached, a transaction open, committed on success.

        While another process holds the file, wait up to `patience` seconds (default: the
        lock timeout), then raise CatalogLocked."""
        import duckdb

        gap = self._write_ended + READERS_GAP_S - time.monotonic()
        if gap > 0:
            time.sleep(gap)
        con = self._attach(patience)
        try:
            try:
                con.begin()
                try:
                    yield con
                except BaseException:
                    con.rollback()
                    raise
                con.commit()
            finally:
                self._detach(con)
                self._write_ended = time.monotonic()
        except duckdb.IOException as exc:
            # A full disk (or a file-size limit), most likely. DuckDB keeps the file consistent:
            # the batch either landed whole (in its write-ahead log) or not at all.
            self.close()  # the failed attachment is unusable; the next write starts afresh
            reason = str(exc).replace("\n", " ")
            reason = reason.split("Original error: ", 1)[-1].strip()  # DuckDB's cause, not its wrapping
            raise DatabaseError(
                f"cannot write the catalogue {self.path}: {reason}. Nothing was lost: what was not "
                "written is pending again. Free space on that disk and run the command again."
            ) from None

    def _attach(self, patience: float | None = None) -> duckdb.DuckDBPyConnection:
        import duckdb

        if self._memory is None:
            self._memory = duckdb.connect(":memory:")
            self._memory.execute("SET enable_progress_bar = false")
        con = self._memory
        statement = self._attach_statement(created=not self.path.exists())
        self._retry_while_locked(lambda: con.execute(statement), patience)
        con.execute(f"USE {ALIAS}")
        if not self._migrated:
            # Imported when a catalogue is opened, not with this module: a no-change rescan
            # never opens it (catalog/scan_state.py), and migrations bring shutil and more.
            from . import migrations

            try:
                migrations.upgrade(self, con)
            except BaseException:
                self._detach(con)
                raise
            self._migrated = True
        return con

    def _attach_statement(self, created: bool) -> str:
        """ATTACH for writing; a file it creates gets the storage version 1.5 clients read."""
        options = f"ROW_GROUP_SIZE {ROW_GROUP_SIZE}" + (f", STORAGE_VERSION '{STORAGE_VERSION}'" if created else "")
        quoted = str(self.path).replace("'", "''")
        return f"ATTACH '{quoted}' AS {ALIAS} ({options})"

    def _detach(self, con: duckdb.DuckDBPyConnection) -> None:
        con.execute("USE memory")
        con.execute(f"DETACH {ALIAS}")

    def reattach(self, con: duckdb.DuckDBPyConnection) -> None:
        """Detach and attach again on the same connection (used to copy the file safely)."""
        self._detach(con)
        statement = self._attach_statement(created=False)
        self._retry_while_locked(lambda: con.execute(statement))
        con.execute(f"USE {ALIAS}")

    # -- reading -------------------------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection to the catalogue, waiting while a writer holds the file.

        The file stays attached until the outermost read ends, then is detached so that
        writers in other processes get in. One thread reads at a time per `Database`. The
        connection comes from DuckDB's engine alone (catalog/duck.py): `import duckdb` before
        registering Arrow tables or data frames on it."""
        with self._read_lock:
            if self._reads == 0:
                self._attach_for_reading()
            self._reads += 1
            try:
                # A connection of its own: what one read leaves (a PIVOT's temporary ENUM) is
                # gone for the next.
                cursor = self._reader.cursor()
                try:
                    cursor.execute(f"USE {ALIAS}")
                    yield cursor
                finally:
                    cursor.close()
            finally:
                self._reads -= 1
                if self._reads == 0:
                    self._reader.execute(f"DETACH {ALIAS}")

    def _reading_instance(self) -> duckdb.DuckDBPyConnection:
        from .duck import duckdb

        if self._reader is None:
            self._reader = duckdb.connect(":memory:")
            self._reader.execute("SET enable_progress_bar = false")
        return self._reader

    def statements(self, sql: str) -> list[duckdb.Statement]:
        """`sql` split into DuckDB's statements, parsed on the readers' instance (duckdb's
        module-level parser would start an instance of its own: 35 ms). Raises duckdb.Error."""
        with self._read_lock:
            return self._reading_instance().extract_statements(sql)

    def _attach_for_reading(self) -> None:
        if not self.path.exists():
            with self.write():  # create the catalogue on first use
                pass
        reader = self._reading_instance()
        quoted = str(self.path).replace("'", "''")

        def attach() -> None:
            reader.execute(f"ATTACH '{quoted}' AS {ALIAS} (READ_ONLY)")

        self._retry_while_locked(attach)
        if self._migrated:
            return
        try:
            from . import migrations

            reader.execute(f"USE {ALIAS}")
            older = migrations.needs_upgrade(self, reader)
            reader.execute("USE memory")
        except BaseException:
            reader.execute("USE memory")
            reader.execute(f"DETACH {ALIAS}")
            raise
        if older:  # bring an older catalogue up to date, then read it
            reader.execute(f"DETACH {ALIAS}")
            with self.write():
                pass
            self._retry_while_locked(attach)
        self._migrated = True

    def connect_read_only(self) -> duckdb.DuckDBPyConnection:
        """A read-only connection to the file as it is (not migrated), waiting while a writer
        holds it. The caller closes it; `read()` is the usual way in."""
        from .duck import duckdb

        con = self._retry_while_locked(lambda: duckdb.connect(str(self.path), read_only=True))
        try:
            con.execute("SET enable_progress_bar = false")
        except BaseException:
            con.close()
            raise
        return con

    # -- waiting on other processes --------------------------------------------------------

    def _retry_while_locked(self, action, patience: float | None = None):  # type: ignore[no-untyped-def]
        from .duck import duckdb

        timeout = self.lock_timeout if patience is None else patience
        started = time.monotonic()
        told = False
        delay = 0.01
        while True:
            try:
                return action()
            except duckdb.IOException as exc:
                holder = _lock_holder(str(exc))
                if holder is None:
                    raise DatabaseError(f"cannot open the catalogue {self.path}: {exc}") from None
                waited = time.monotonic() - started
                if waited >= timeout:
                    held = f"the catalogue {self.path} is held by {holder}"
                    raise CatalogLocked(
                        f"{held}; gave up after {waited:.0f} s (set lock_timeout in muscat.toml to "
                        "wait longer)", held,
                    ) from None
                if not told and waited >= QUIET_WAIT_S:
                    self.notify(f"waiting for the catalogue {self.path}: it is held by {holder}")
                    told = True
                time.sleep(delay)
                # Tries stay frequent (a failed attach costs microseconds): a watcher that writes
                # a batch every few hundred milliseconds leaves gaps of tens of them, which a
                # reader backing off to 0.2 s missed for seconds on end.
                delay = min(delay * 2, 0.025)
            except duckdb.Error as exc:
                raise DatabaseError(f"cannot open the catalogue {self.path}: {exc}") from None


def require_catalogue(db: Database) -> None:
    """For commands that only read what is there (similar, plot, report): a catalogue that does
    not exist yet is an error, rather than an empty one made on the way."""
    if not db.path.exists():
        raise DatabaseError(f"{db.path}: no catalogue here yet (muscat scan FOLDER makes one)")
