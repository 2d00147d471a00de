"""Running pending work: `muscat extract`.

The coordinator (this module) plans jobs from the catalogue, hands them to CPU worker processes
(catalog/workers.py), decides for each newly identified audio what it still needs, and passes
finished results to the one writer (catalog/writer.py).

- A job is a file: decoded once, its samples given to every extractor it needs.
- Files that were never probed (or changed since) are identified first; audio that the catalogue
  already has (a retag, a copy elsewhere in the library) is not extracted again, and two files
  with the same new audio in one pass are extracted once.
- Ctrl-C: the workers are stopped, finished results are written, and work in flight is
  recorded neither as done nor as failed: it is pending again on the next run.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field, replace
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Any, Callable

from .config import Settings
from .database import utc_now
from .devices import split
from .errors import MuscatError
from .extractor import LoadedExtractor
from .registry import PROBE, load_extractors
from .workers import Job, Worker
from .writer import Probed, ResultWriter, Run

if TYPE_CHECKING:
    from .database import Database
    from .gpu_worker import GpuWorker


@dataclass
class ExtractReport:
    files: int = 0  # jobs planned
    probed: int = 0
    ok: int = 0  # extractor runs that succeeded
    failed: int = 0  # runs (probe included) that failed
    skipped: int = 0  # files whose audio was done already or is being done by another job
    vanished: int = 0  # files moved or deleted since the plan: left for the next one
    # Set when an extractor could not write its files for want of space: nothing was recorded
    # for it, and (in `extract`) no new job was started after it.
    no_space: str | None = None
    interrupted: bool = False
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (path, extractor, error)
    # What the GPU worker did, when there was one: forward passes ("batches"), items, batches
    # with items of more than one file ("shared_batches"), device, batch size.
    gpu: dict[str, Any] | None = None
    gpu_restarts: list[str] = field(default_factory=list)  # why a GPU worker was started again

    def to_json(self) -> dict[str, Any]:
        out = {"files": self.files, "probed": self.probed, "ok": self.ok, "failed": self.failed,
               "skipped": self.skipped, "vanished": self.vanished, "interrupted": self.interrupted}
        if self.gpu is not None:
            out["gpu"] = self.gpu
        return out


def select_extractors(loaded: list[LoadedExtractor], only: list[str] | None) -> tuple[LoadedExtractor, list[LoadedExtractor]]:
    """The probe, and the extractors this run may use (all runnable ones, or `only`).

    Staged GPU extractors (catalog/model_stage.py) run their models in the GPU worker when the
    run has one (catalog/gpu_worker.py), else inside the CPU workers, on `settings.device`."""
    by_name = {e.name: e for e in loaded}
    for name in only or []:
        if name not in by_name:
            raise MuscatError(f"--only: no extractor named '{name}' (known: {', '.join(sorted(by_name))})")
        if not by_name[name].enabled:
            raise MuscatError(f"--only: {name} is switched off (enabled = false under [extractors.{name}])")
        if not by_name[name].available:
            raise MuscatError(f"--only: {name} cannot run: {by_name[name].unavailable_reason}")
    chosen = [
        e for e in loaded
        if e.name != PROBE and e.runnable and (not only or e.name in only)
    ]
    return by_name[PROBE], chosen


def _path(root: str, dir: str, name: str, raw: bytes | None) -> bytes:
    rel = raw if raw is not None else (f"{dir}/{name}" if dir else name).encode()
    return os.fsencode(root) + b"/" + rel


class _Plan:
    """Jobs to run, from the catalogue's current state."""

    def __init__(self, db: Database, extractors: list[LoadedExtractor], retry_failed: bool,
                 file_ids: list[int] | None = None, first_job_id: int = 0, load_known: bool = True,
                 stale: bool = False) -> None:
        import pyarrow as pa

        self.extractors = {e.name: e for e in extractors}
        self.upstream_names = sorted({u for e in extractors for u in e.uses})
        self.jobs: list[Job] = []
        self.paths: dict[int, str] = {}  # job_id -> display path
        self.next_job_id = first_job_id
        names = pa.table({"extractor": pa.array(list(self.extractors), pa.string())})
        only = "" if file_ids is None else "AND f.file_id IN (SELECT file_id FROM only_files)"
        with db.read() as con:
            con.register("chosen", names)
            con.register("only_files", pa.table({"file_id": pa.array(file_ids or [], pa.int64())}))
            to_probe = con.execute(
                f"""
                SELECT f.file_id, r.path, f.dir, f.name, f.raw_path, f.audio_id, l.path
                FROM files f JOIN roots r USING (root_id) JOIN library l USING (file_id)
                WHERE (f.probed_at IS NULL OR f.changed_at > f.probed_at
                   OR (? AND f.file_id IN (
                        SELECT file_id FROM runs r JOIN extractor_current c USING (extractor, version, params_hash)
                        WHERE r.extractor = 'probe' AND r.status = 'failed'))
                   OR (? AND f.file_id IN (
                        SELECT file_id FROM shown_file_runs WHERE extractor = 'probe' AND NOT current))) {only}
                ORDER BY f.file_id
                """,
                [retry_failed, stale],
            ).fetchall()
            failed_too = (
                """
                UNION
                SELECT r.audio_id, r.extractor FROM runs r
                JOIN extractor_current c USING (extractor, version, params_hash)
                WHERE r.status = 'failed' AND r.audio_id IS NOT NULL
                """ if retry_failed else ""
            ) + ("UNION SELECT DISTINCT audio_id, extractor FROM stale WHERE extractor <> 'probe'" if stale else "")
            to_extract = con.execute(
                f"""
                WITH work AS (
                    SELECT audio_id, extractor FROM pending WHERE extractor <> 'probe'
                    {failed_too}
                ),
                chosen_work AS (SELECT * FROM work WHERE extractor IN (SELECT extractor FROM chosen)),
                source AS (  -- one present, probed, unchanged file per audio
                    SELECT f.audio_id, min(f.file_id) AS file_id
                    FROM files f
                    WHERE f.status = 'present' AND f.audio_id IN (SELECT audio_id FROM chosen_work)
                      AND f.probed_at IS NOT NULL AND f.changed_at <= f.probed_at {only}
                    GROUP BY f.audio_id
                )
                SELECT s.audio_id, s.file_id, r.path, f.dir, f.name, f.raw_path, l.path,
                       list(w.extractor ORDER BY w.extractor)
                FROM source s JOIN chosen_work w USING (audio_id)
                JOIN files f ON f.file_id = s.file_id JOIN roots r USING (root_id)
                JOIN library l ON l.file_id = s.file_id
                GROUP BY ALL ORDER BY s.file_id
                """
            ).fetchall()
            # Audio the catalogue knows, with what already ran on it (current identities):
            # for deciding, once a file is identified, whether its audio needs anything.
            self.known: dict[str, set[str]] | None = None
            if to_probe and load_known:
                self.known = {}
                for audio_id, extractor in con.execute(
                    """
                    SELECT a.audio_id, r.extractor FROM audio a
                    LEFT JOIN (
                        SELECT r.audio_id, r.extractor, r.status FROM runs r
                        JOIN extractor_current c USING (extractor, version, params_hash)
                    ) r ON r.audio_id = a.audio_id AND (r.status = 'ok' OR NOT ?)
                    """,
                    [retry_failed],
                ).fetchall():
                    done = self.known.setdefault(audio_id, set())
                    if extractor is not None:
                        done.add(extractor)
            # Results of extractors that others read (stems), for the audio about to be extracted.
            upstream: dict[str, dict[str, str]] = {}
            artifacts: dict[str, dict[str, dict[str, str]]] = {}
            for audio_id, name, identity, kind, path in con.execute(
                """
                SELECT r.audio_id, c.extractor, c.extractor || ':' || c.version || ':' || c.params_hash,
                       a.kind, a.path
                FROM runs r JOIN extractor_current c USING (extractor, version, params_hash)
                LEFT JOIN run_artifacts a USING (run_id)
                WHERE r.status = 'ok' AND len(?) > 0 AND list_contains(?, c.extractor)
                  AND r.audio_id IN (SELECT unnest(?))
                """,
                [self.upstream_names, self.upstream_names, [row[0] for row in to_extract]],
            ).fetchall():
                upstream.setdefault(audio_id, {})[name] = identity
                files = artifacts.setdefault(audio_id, {}).setdefault(name, {})
                if kind is not None:
                    files[kind] = path
            con.unregister("chosen")
            con.unregister("only_files")
        for file_id, root, dir_, name, raw, previous, display in to_probe:
            self._add(Job(self.next_job_id, _path(root, dir_, name, raw), file_id, probe=True,
                          previous_audio_id=previous), display)
        for audio_id, file_id, root, dir_, name, raw, display, names_ in to_extract:
            self._add(Job(self.next_job_id, _path(root, dir_, name, raw), file_id, probe=False,
                          expected_audio_id=audio_id, extractors=tuple(names_),
                          upstream=upstream.get(audio_id, {}), upstream_artifacts=artifacts.get(audio_id, {})),
                      display)

    def _add(self, job: Job, display: str) -> None:
        self.jobs.append(job)
        self.paths[job.job_id] = display
        self.next_job_id += 1


def extract(
    db: Database,
    settings: Settings,
    only: list[str] | None = None,
    workers: int | None = None,
    retry_failed: bool = False,
    progress: Callable[[int, int], None] | None = None,
    stale: bool = False,
) -> ExtractReport:
    """Run pending work (and stale results, with `stale`) with a pool of worker processes."""
    engine = Engine(db, settings, only, retry_failed, progress, stale=stale)
    # Workers start first: their imports (Essentia: about a second) overlap the planning.
    engine.start_workers(workers or settings.workers)
    try:
        engine.plan()
        engine.trim_workers()
        while not engine.idle:
            engine.step(timeout=0.5)
    except KeyboardInterrupt:
        engine.report.interrupted = True
    finally:
        engine.stop()
    return engine.report


class Engine:
    """A worker pool, a job queue and the writer: `extract` runs it dry, `watch` keeps it fed.

    `plan()` queues pending work (all of it, or that of some files, at the front of the queue);
    `step()` hands jobs to idle workers and handles what they report for up to `timeout`
    seconds. A job is never queued twice while it waits or runs.
    """

    def __init__(self, db: Database, settings: Settings, only: list[str] | None = None,
                 retry_failed: bool = False, progress: Callable[[int, int], None] | None = None,
                 keep_results_when_locked: bool = False, stale: bool = False,
                 halt_when_out_of_space: bool = True) -> None:
        from . import extractor_state

        self.db = db
        self.settings = settings
        loaded = load_extractors(settings)
        self.probe, self.extractors = select_extractors(loaded, only)
        self.by_name = {e.name: e for e in self.extractors}
        self.identities = {e.name: e.identity for e in loaded}
        self.stale = stale
        extractor_state.sync(db, loaded)
        self.retry_failed = retry_failed
        self.progress = progress
        self.report = ExtractReport()
        self.writer = ResultWriter(db, keep_when_locked=keep_results_when_locked)
        self.queue: deque[Job] = deque()
        self.paths: dict[int, str] = {}  # job_id -> display path
        self.queued: set[tuple[bool, int]] = set()  # (probe?, file_id) of jobs waiting or running
        self.workers: list[Worker] = []
        self.size = 0
        self.next_job_id = 0
        self.in_flight: dict[str, int] = {}  # audio_id -> job extracting it now
        self.audio_of: dict[int, str] = {}  # job_id -> its audio, once known
        # Audio -> extractors done on it (current identities): loaded with the first plan that
        # has files to identify, then kept up to date from this engine's own results.
        self.known: dict[str, set[str]] | None = None
        self.done_jobs = 0
        # Files that were gone when their job came (moved, deleted): nothing is recorded for
        # them; the next plan of changed files looks at them again, wherever they are now.
        self.vanished: set[int] = set()
        self.halt_when_out_of_space = halt_when_out_of_space
        from .gpu_worker import wanted  # numpy: not for commands that never extract

        self.use_gpu_worker = wanted(settings, self.extractors)
        self.gpus: list[GpuWorker] = []  # one per device of --device

    # -- the pool --------------------------------------------------------------------------

    def start_workers(self, size: int) -> None:
        self.size = max(1, size)
        if self.use_gpu_worker and not self.gpus:
            from .gpu_worker import GpuWorker

            self.gpus = [GpuWorker(replace(self.settings, device=device)) for device in split(self.settings.device)]
        while len(self.workers) < self.size:
            self.workers.append(self._new_worker(len(self.workers)))

    def _new_worker(self, index: int) -> Worker:
        """The index-th CPU worker: with several devices, each serves its share of the workers."""
        devices = split(self.settings.device)
        settings = replace(self.settings, device=devices[index % len(devices)])
        return Worker(settings, self.gpus[index % len(self.gpus)].connection if self.gpus else None)

    def trim_workers(self) -> None:
        """Stop workers beyond the number of jobs (a short run needs no full pool)."""
        keep = len(self.queue)
        for spare in self.workers[keep:]:
            spare.kill()  # idle (perhaps still importing): nothing to lose
        del self.workers[keep:]

    def stop(self) -> None:
        # Workers hold no state worth waiting for: work in progress is neither done nor failed,
        # and is pending again next time.
        for worker in self.workers:
            worker.kill()
        self.workers = []
        if self.gpus:
            from .gpu_worker import merged_stats

            self.report.gpu = merged_stats([gpu.stats() for gpu in self.gpus])
            for gpu in self.gpus:
                gpu.stop()
            self.gpus = []
        self.writer.close()

    @property
    def idle(self) -> bool:
        return not self.queue and all(w.job is None for w in self.workers)

    @property
    def waiting(self) -> int:
        return len(self.queue) + sum(w.job is not None for w in self.workers)

    # -- planning ----------------------------------------------------------------------------

    def plan(self, file_ids: list[int] | None = None, front: bool = False) -> int:
        """Queue pending work (of `file_ids` only, when given); returns the number of new jobs."""
        # Finished results still in memory first: the plan reads the catalogue, and would
        # otherwise queue again a file whose probe is done but not yet written.
        self.writer.flush()
        if file_ids is not None:
            file_ids = sorted(set(file_ids) | self.vanished)
            self.vanished.clear()
        plan = _Plan(self.db, self.extractors, self.retry_failed, file_ids, self.next_job_id,
                     load_known=self.known is None, stale=self.stale)
        self.next_job_id = plan.next_job_id
        if plan.known is not None:
            self.known = plan.known
        fresh = [j for j in plan.jobs if (j.probe, j.file_id) not in self.queued]
        for job in fresh:
            self.queued.add((job.probe, job.file_id))
            self.paths[job.job_id] = plan.paths[job.job_id]
        if front:
            self.queue.extendleft(reversed(fresh))
        else:
            self.queue.extend(fresh)
        self.report.files += len(fresh)
        if fresh and len(self.workers) < self.size:
            self.start_workers(self.size)
        return len(fresh)

    # -- running -----------------------------------------------------------------------------

    def step(self, timeout: float) -> None:
        if not self.workers and self.queue:
            self.start_workers(self.size or self.settings.workers)
        for gpu in self.gpus:
            if gpu.keep_alive():  # what it held fails in the CPU workers that asked for it
                self.report.gpu_restarts.append(f"{gpu.settings.device}: {gpu.last_restart}")
        for worker in self.workers:
            if worker.job is None:
                self._feed(worker)
        busy = {w.conn: w for w in self.workers if w.job is not None}
        if busy:
            for conn in wait(list(busy), timeout=timeout):
                worker = busy[conn]
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    self._crashed(worker)
                    continue
                self._handle(worker, message)
        elif timeout:
            time.sleep(timeout)
        self.writer.maybe_flush()

    def _feed(self, worker: Worker) -> None:
        # Results that cannot be written yet wait in memory: past a bound, take no more work.
        if self.writer.buffered >= self.writer.max_buffered:
            worker.job = None
            return
        worker.job = self.queue.popleft() if self.queue else None
        worker.running = None
        if worker.job is not None:
            worker.send(worker.job)

    def _finish_job(self, worker: Worker) -> None:
        job = worker.job
        assert job is not None
        audio_id = self.audio_of.pop(job.job_id, None)
        if audio_id is not None and self.in_flight.get(audio_id) == job.job_id:
            del self.in_flight[audio_id]
        self.queued.discard((job.probe, job.file_id))
        self.done_jobs += 1
        if self.progress:
            self.progress(self.done_jobs, self.report.files)
        self._feed(worker)
    def _handle(self, worker: Worker, message: tuple) -> None:
        kind, job_id = message[0], message[1]
        job = worker.job
        assert job is not None and job.job_id == job_id
        if kind == "identified":
            _, _, audio_id, values, facts, started_at, seconds = message
            self.report.probed += 1
            if facts["rekeyed_from"] is not None:
                self._rekey(facts["rekeyed_from"], audio_id)
            self.writer.add_probed(Probed(job.file_id, started_at, audio_id, facts["duration"],
                                          facts["sample_rate"], facts["channels"], facts["codec"],
                                          facts["head_tail_hash"]))
            self.writer.add_run(Run(self.probe, audio_id, job.file_id, "ok", started_at, seconds,
                                    facts["duration"], values))
            needed = self._needs(job, audio_id)
            done = (self.known or {}).get(audio_id, set())
            upstream = {name: self.identities[name] for name in done if name in self.identities}
            worker.send(("run", needed, upstream))
        elif kind == "start":
            worker.running = message[2]
        elif kind == "result":
            _, _, name, values, error, started_at, seconds, audio_seconds, given, produced, device = message
            worker.running = None
            audio_id = self.audio_of.get(job.job_id, job.expected_audio_id)
            status = "ok" if error is None else "failed"
            if audio_id is not None and self.known is not None and (status == "ok" or not self.retry_failed):
                self.known.setdefault(audio_id, set()).add(name)
            self.writer.add_run(Run(self.by_name[name], audio_id, job.file_id, status, started_at,
                                    seconds, audio_seconds, values or {}, error, input=given, device=device,
                                    artifacts=produced))
            self._count(status, job, name, error)
        elif kind == "unreadable":
            _, _, reason, started_at, seconds = message
            if job.probe:
                self.writer.add_probed(Probed(job.file_id, started_at))
                self.writer.add_run(Run(self.probe, None, job.file_id, "failed", started_at, seconds, None,
                                        error=reason))
                self._count("failed", job, PROBE, reason)
            else:  # it decoded when probed: it has changed (or gone) since; identify it again
                self.writer.add_reprobe(job.file_id)
        elif kind == "changed":
            self.writer.add_reprobe(job.file_id)
        elif kind == "rekeyed":
            _, _, old, new = message
            self._rekey(old, new)
            self.audio_of[job.job_id] = new
        elif kind == "no_space":
            _, _, name, error = message
            worker.running = None
            first = self.report.no_space is None
            self.report.no_space = f"{self.paths[job.job_id]}: {name}: {error}"
            if self.halt_when_out_of_space and first:
                # Every job after it would fail the same way: leave them pending, finish the rest.
                for waiting in self.queue:
                    self.queued.discard((waiting.probe, waiting.file_id))
                self.queue.clear()
        elif kind == "vanished":
            self.report.vanished += 1
            if job.probe:
                self.vanished.add(job.file_id)
            else:
                self.writer.add_reprobe(job.file_id)
        elif kind == "done":
            self._finish_job(worker)

    def _rekey(self, old: str, new: str) -> None:
        """The audio `old` is now called `new` (catalog/legacy_identity.py): its results go with it."""
        self.writer.add_rekey(old, new)
        if self.known is not None and new not in self.known:
            self.known[new] = self.known.pop(old, set())

    def _needs(self, job: Job, audio_id: str) -> list[str]:
        """What a just-identified audio still needs from this run's extractors."""
        self.audio_of[job.job_id] = audio_id
        if audio_id in self.in_flight:
            self.report.skipped += 1
            return []
        done = (self.known or {}).get(audio_id, set())
        needed = [name for name in self.by_name if name not in done]
        if not needed:
            self.report.skipped += 1
        else:
            self.in_flight[audio_id] = job.job_id
        return needed

    def _count(self, status: str, job: Job, name: str, error: str | None) -> None:
        if status == "ok":
            self.report.ok += 1
        else:
            self.report.failed += 1
            self.report.failures.append((self.paths[job.job_id], name, error or ""))

    def _crashed(self, worker: Worker) -> None:
        """A worker died mid-job (a crash in a decoder, say): record it, carry on with a new one."""
        job = worker.job
        assert job is not None
        reason = worker.exit_description()
        worker.kill()
        now = utc_now()
        name = worker.running
        audio_id = self.audio_of.get(job.job_id, job.expected_audio_id)
        if name is None and job.probe and job.job_id not in self.audio_of:
            self.writer.add_probed(Probed(job.file_id, now))
            self.writer.add_run(Run(self.probe, None, job.file_id, "failed", now, 0.0, None,
                                    error=f"{reason} while decoding"))
            self._count("failed", job, PROBE, reason)
        elif name is not None:
            self.writer.add_run(Run(self.by_name[name], audio_id, job.file_id, "failed", now, 0.0,
                                    None, error=f"{reason} while running {name}"))
            self._count("failed", job, name, reason)
        index = self.workers.index(worker)
        replacement = self._new_worker(index)
        self.workers[index] = replacement
        replacement.job = job
        self._finish_job(replacement)
