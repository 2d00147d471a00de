"""The one writer of extraction results: buffers finished work and writes it in batches.

Each flush is one transaction, written through Arrow tables: new audio, what probing learnt
about files, runs and their values. A run replaces an earlier run of the same identity for the
same audio (or file), carrying its attempt count on; runs of other identities stay, so older
values remain visible (as stale) until their replacement has landed.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Iterator

from .extractor import Artifact, LoadedExtractor

if TYPE_CHECKING:
    import duckdb

    from .database import Database


@dataclass
class Run:
    extractor: LoadedExtractor
    audio_id: str | None
    file_id: int
    status: str  # 'ok' | 'failed'
    started_at: datetime
    seconds: float
    audio_seconds: float | None
    values: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    input: str = "mix"
    device: str = "cpu"
    artifacts: list[Artifact] = field(default_factory=list)
    host: str | None = None  # where it ran (a cluster node's address); None: this machine


@dataclass
class Probed:
    """What decoding a file taught us; `audio_id` None when it could not be decoded."""

    file_id: int
    attempted_at: datetime
    audio_id: str | None = None
    duration: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    codec: str | None = None
    head_tail_hash: str | None = None


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM held back until the block is done (in the main thread; elsewhere they
    do not arrive anyway), then delivered."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


# How long one flush waits for a catalogue held by another process before it keeps its results
# for the next flush (the coordinator goes on handling workers and events meanwhile).
FLUSH_PATIENCE_S = 0.5
# The share of the coordinator's time that flushes may take in a batch run: after a flush of d
# seconds the next waits at least d / WRITE_SHARE (and at least `flush_seconds`). Each flush
# costs a fixed attach and checkpoint (~0.05-0.1 s here, more as the catalogue grows) besides
# its rows, and the coordinator shares the cores with the workers: at one flush a second the
# flushes took 4 s of CPU from a 12-file run of two workers on two cores (1.6 s at this share).
WRITE_SHARE = 0.02
# While the catalogue stays held, say so again this often.
LOCK_REMINDER_S = 30.0


class ResultWriter:
    """Buffers results and writes them in batches: every `flush_seconds` or `flush_runs` runs,
    or, with `write_share`, less often while flushes take long (see WRITE_SHARE; None: results
    are written within `flush_seconds` whatever that costs, for `watch`, where someone waits).

    A catalogue held by another process is waited out: results stay in memory and each flush
    tries again (callers stop taking new work once `max_buffered` results wait, so memory stays
    bounded and nothing is dropped), and the user is told. Only once it has been held for the
    catalogue's lock timeout does a flush give up with CatalogLocked, unless `keep_when_locked`
    (the watcher, which waits as long as it runs); `close()` always gives up then.
    """

    def __init__(self, db: Database, flush_seconds: float = 1.0, flush_runs: int = 500,
                 keep_when_locked: bool = False, max_buffered: int = 20000,
                 write_share: float | None = WRITE_SHARE) -> None:
        self.db = db
        self.keep_when_locked = keep_when_locked
        self.max_buffered = max_buffered
        self.locked_since: float | None = None  # monotonic time of the first failed flush
        self._told_at: float | None = None
        self.flush_seconds = flush_seconds
        self.flush_runs = flush_runs
        self.write_share = write_share
        self.host = socket.gethostname()
        self.runs: list[Run] = []
        self.probed: list[Probed] = []
        self.reprobe: list[int] = []  # files whose content changed since they were probed
        self.rekeys: dict[str, str] = {}  # audio ids carried over to the packets rule: old -> new
        self._last_flush = time.monotonic()
        self._interval = flush_seconds  # until the next flush, as the last one's cost allows

    def add_run(self, run: Run) -> None:
        self.runs.append(run)

    def add_probed(self, probed: Probed) -> None:
        self.probed.append(probed)

    def add_reprobe(self, file_id: int) -> None:
        self.reprobe.append(file_id)

    def add_rekey(self, old: str, new: str) -> None:
        self.rekeys[old] = new

    @property
    def buffered(self) -> int:
        return len(self.runs) + len(self.probed) + len(self.reprobe) + len(self.rekeys)

    def maybe_flush(self) -> None:
        if self.buffered and (
            len(self.runs) >= self.flush_runs or time.monotonic() - self._last_flush >= self._interval
        ):
            self.flush()

    def flush(self, final: bool = False) -> None:
        """Write what is buffered; while the catalogue is held, keep it (see the class)."""
        if not self.buffered:
            self._last_flush = time.monotonic()
            return
        from .errors import CatalogLocked

        try:
            self._write_all()
        except CatalogLocked as exc:
            now = time.monotonic()
            self._last_flush = now
            self.locked_since = self.locked_since or now
            held = now - self.locked_since
            if held >= self.db.lock_timeout and (final or not self.keep_when_locked):
                raise CatalogLocked(
                    f"{exc.holder_message}; gave up after {held:.0f} s of waiting, {self.buffered:,} "
                    "finished results were not written (that work is pending again; set "
                    "lock_timeout in muscat.toml to wait longer)"
                ) from None
            if held >= 1.0 and (self._told_at is None or now - self._told_at >= LOCK_REMINDER_S):
                self.db.notify(f"waiting for the catalogue: {exc.holder_message}; "
                               f"{self.buffered:,} finished results kept in memory until it is free")
                self._told_at = now
            return
        if self._told_at is not None:
            self.db.notify("the catalogue is free again: the results kept in memory are written")
        self.locked_since = self._told_at = None

    def close(self) -> None:
        """Write everything still buffered, waiting up to the lock timeout for a held catalogue."""
        while self.buffered:
            self.flush(final=True)
            if self.buffered:
                time.sleep(0.2)

    def _write_all(self) -> None:
        # Ctrl-C waits for the batch: DuckDB turns a KeyboardInterrupt raised inside one of its
        # calls into an error of its own, and the batch is one transaction either way.
        with _interrupts_deferred(), self.db.write(patience=FLUSH_PATIENCE_S) as con:
            started = time.monotonic()  # the catalogue is ours: waiting for it is not the flush's cost
            self._write_rekeys(con)  # first: the probes and runs below name the new ids
            self._write_probed(con)
            self._write_runs(con)
            if self.reprobe:
                con.execute("UPDATE files SET probed_at = NULL WHERE list_contains(?, file_id)", [self.reprobe])
        self.runs, self.probed, self.reprobe, self.rekeys = [], [], [], {}
        self._last_flush = time.monotonic()
        if self.write_share:
            self._interval = max(self.flush_seconds, (self._last_flush - started) / self.write_share)

    # -- ids carried over ------------------------------------------------------------------

    def _write_rekeys(self, con: duckdb.DuckDBPyConnection) -> None:
        if not self.rekeys:
            return
        import pyarrow as pa

        from .columns import column

        con.register("rekey_batch", pa.table({
            "old": column(list(self.rekeys), pa.string()),
            "new": column(list(self.rekeys.values()), pa.string()),
        }))
        # The audio and its runs take the new id. Where the new id is known already (a copy
        # of it arrived under the new rule first), only the files move: the old audio, held by
        # no file any more, is left to gc.
        for table in ("runs", "audio"):
            con.execute(
                f"""
                UPDATE {table} SET audio_id = k.new FROM rekey_batch k
                WHERE {table}.audio_id = k.old AND k.new NOT IN (SELECT audio_id FROM audio)
                """
            )
        con.execute("UPDATE files SET audio_id = k.new FROM rekey_batch k WHERE files.audio_id = k.old")
        con.unregister("rekey_batch")

    # -- probing ---------------------------------------------------------------------------

    def _write_probed(self, con: duckdb.DuckDBPyConnection) -> None:
        if not self.probed:
            return
        import pyarrow as pa

        from .columns import column

        batch = pa.table({
            "file_id": column([p.file_id for p in self.probed], pa.int64()),
            "attempted_at": column([p.attempted_at for p in self.probed], pa.timestamp("us")),
            "audio_id": column([p.audio_id for p in self.probed], pa.string()),
            "duration_s": column([p.duration for p in self.probed], pa.float64()),
            "sample_rate": column([p.sample_rate for p in self.probed], pa.int32()),
            "channels": column([p.channels for p in self.probed], pa.int32()),
            "codec": column([p.codec for p in self.probed], pa.string()),
            "head_tail_hash": column([p.head_tail_hash for p in self.probed], pa.string()),
        })
        con.register("probed_batch", batch)
        con.execute(
            """
            INSERT INTO audio (audio_id, duration_s, sample_rate, channels, first_seen)
            SELECT audio_id, any_value(duration_s), any_value(sample_rate), any_value(channels),
                   min(attempted_at)
            FROM probed_batch
            WHERE audio_id IS NOT NULL AND audio_id NOT IN (SELECT audio_id FROM audio)
            GROUP BY audio_id
            """
        )
        # A file that cannot be decoded holds no known audio any more.
        con.execute(
            """
            UPDATE files SET audio_id = b.audio_id, probed_at = b.attempted_at, codec = b.codec,
                   head_tail_hash = coalesce(b.head_tail_hash, files.head_tail_hash)
            FROM probed_batch b WHERE files.file_id = b.file_id
            """
        )
        con.unregister("probed_batch")

    # -- runs --------------------------------------------------------------------------------

    def _write_runs(self, con: duckdb.DuckDBPyConnection) -> None:
        if not self.runs:
            return
        import pyarrow as pa

        from .columns import column

        runs, earlier = _latest_runs(self.runs)
        ids = [row[0] for row in con.execute(
            "SELECT nextval('run_ids') FROM range(?)", [len(runs)]).fetchall()]
        batch = pa.table({
            "run_id": column(ids, pa.int64()),
            "audio_id": column([r.audio_id for r in runs], pa.string()),
            "file_id": column([r.file_id for r in runs], pa.int64()),
            "extractor": column([r.extractor.name for r in runs], pa.string()),
            "version": column([r.extractor.version for r in runs], pa.int32()),
            "params_hash": column([r.extractor.params_hash for r in runs], pa.string()),
            "scope": column([r.extractor.declaration.scope for r in runs], pa.string()),
            "input": column([r.input for r in runs], pa.string()),
            "status": column([r.status for r in runs], pa.string()),
            "error": column([r.error for r in runs], pa.string()),
            "started_at": column([r.started_at for r in runs], pa.timestamp("us")),
            "seconds": column([r.seconds for r in runs], pa.float64()),
            "audio_seconds": column([r.audio_seconds for r in runs], pa.float64()),
            "device": column([r.device for r in runs], pa.string()),
            "host": column([r.host or self.host for r in runs], pa.string()),
            "earlier": column(earlier, pa.int32()),
        })
        values: dict[str, list[Any]] = {"run_id": [], "feature": [], "value": [], "text": []}
        vectors: dict[str, list[Any]] = {"run_id": [], "feature": [], "vector": []}
        produced: dict[str, list[Any]] = {"run_id": [], "kind": [], "format": [], "path": [], "bytes": []}
        for run_id, run in zip(ids, runs):
            for artifact in run.artifacts:
                for key, value in zip(produced, (run_id, artifact.kind, artifact.format, artifact.path,
                                                 artifact.bytes)):
                    produced[key].append(value)
            kinds = {o.name: o.kind for o in run.extractor.declaration.outputs}
            for feature, value in run.values.items():
                if kinds[feature] == "vector":
                    vectors["run_id"].append(run_id)
                    vectors["feature"].append(feature)
                    vectors["vector"].append(value)
                else:
                    values["run_id"].append(run_id)
                    values["feature"].append(feature)
                    values["value"].append(value if kinds[feature] == "scalar" else None)
                    values["text"].append(value if kinds[feature] == "categorical" else None)
        con.register("run_batch", batch)
        con.register("value_batch", pa.table({
            "run_id": column(values["run_id"], pa.int64()),
            "feature": column(values["feature"], pa.string()),
            "value": column(values["value"], pa.float64()),
            "text": column(values["text"], pa.string()),
        }))
        con.register("artifact_batch", pa.table({
            "run_id": column(produced["run_id"], pa.int64()),
            "kind": column(produced["kind"], pa.string()),
            "format": column(produced["format"], pa.string()),
            "path": column(produced["path"], pa.string()),
            "bytes": column(produced["bytes"], pa.int64()),
        }))
        con.register("vector_batch", pa.table({
            "run_id": column(vectors["run_id"], pa.int64()),
            "feature": column(vectors["feature"], pa.string()),
            "vector": column(vectors["vector"], pa.list_(pa.float32())),
        }))
        # Earlier runs of the same identity on the same subject: replaced, attempts carried on.
        # The subject is run_subject() (schema/views/00_macros.sql) spelt out per scope, as two
        # hash joins, on audio_id and on file_id: a join on run_subject() computes it for every
        # run in the catalogue at each flush (measured at 2M runs: 1.5x the time as a column of
        # a subquery, 150x as a join condition, which DuckDB cannot hash).
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE replaced AS
            SELECT r.run_id AS old_run_id, r.attempts, b.run_id
            FROM run_batch b JOIN runs r
              ON r.extractor = b.extractor AND r.version = b.version AND r.params_hash = b.params_hash
             AND r.audio_id = b.audio_id
            WHERE b.scope = 'audio'
            UNION ALL
            SELECT r.run_id, r.attempts, b.run_id
            FROM run_batch b JOIN runs r
              ON r.extractor = b.extractor AND r.version = b.version AND r.params_hash = b.params_hash
             AND r.file_id = b.file_id
            WHERE b.scope = 'file'
            """
        )
        con.execute(
            """
            INSERT INTO runs (run_id, audio_id, file_id, extractor, version, params_hash, input, status,
                              attempts, error, started_at, finished_at, seconds, audio_seconds, device, host)
            SELECT b.run_id, b.audio_id, b.file_id, b.extractor, b.version, b.params_hash, b.input,
                   b.status, coalesce(max(p.attempts), 0) + any_value(b.earlier) + 1, b.error, b.started_at,
                   b.started_at + to_microseconds((b.seconds * 1e6)::BIGINT), b.seconds,
                   b.audio_seconds, b.device, b.host
            FROM run_batch b LEFT JOIN replaced p USING (run_id)
            GROUP BY ALL
            """
        )
        for table in ("feature_values", "feature_vector_values", "run_artifacts", "runs"):
            con.execute(f"DELETE FROM {table} WHERE run_id IN (SELECT old_run_id FROM replaced)")
        con.execute("INSERT INTO feature_values SELECT * FROM value_batch")
        con.execute("INSERT INTO feature_vector_values SELECT * FROM vector_batch")
        con.execute("INSERT INTO run_artifacts SELECT * FROM artifact_batch")
        con.execute("DROP TABLE temp.replaced")
        for name in ("run_batch", "value_batch", "vector_batch", "artifact_batch"):
            con.unregister(name)


def _latest_runs(runs: list[Run]) -> tuple[list[Run], list[int]]:
    """The last run of each identity on each subject, and how many earlier ones it replaces.

    One batch can hold two runs of the same result: the watcher may probe a file again (it
    changed once more) before the first probe has been written. Only the latest is recorded."""
    latest: dict[tuple, int] = {}
    counts: dict[tuple, int] = {}
    for index, run in enumerate(runs):
        e = run.extractor
        # run_subject() of schema/views/00_macros.sql, for runs that are not in the catalogue yet.
        subject = run.audio_id if e.declaration.scope == "audio" and run.audio_id else ("file", run.file_id)
        key = (e.name, e.version, e.params_hash, subject)
        latest[key] = index
        counts[key] = counts.get(key, 0) + 1
    kept = sorted(latest.items(), key=lambda item: item[1])
    return [runs[index] for _, index in kept], [counts[key] - 1 for key, _ in kept]
