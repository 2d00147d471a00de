"""Running pending work: `muscat extract`.

The coordinator (this module) plans jobs from the catalogue, hands them to an executor (worker
processes here, catalog/local_executor.py, or a Ray cluster, catalog/ray_executor.py), decides
for each newly identified audio what it still needs, and passes finished results to the one
writer (catalog/writer.py). They speak the run protocol of catalog/protocol.py.

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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from .config import Settings
from .clock import utc_now
from .errors import MuscatError
from .executor import make_executor
from .extractor import LoadedExtractor
from .protocol import (Changed, Done, Event, Identified, Job, NoSpace, Rekeyed, Result, RunThese, Unreadable,
                       Vanished, WorkerLost)
from .registry import PROBE, load_extractors
from .writer import WRITE_SHARE, Probed, ResultWriter, Run

if TYPE_CHECKING:
    from .database import Database


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
    hosts: dict[str, int] = field(default_factory=dict)  # extractor runs (probes included) per machine

    def to_json(self) -> dict[str, Any]:
        out = {"files": self.files, "probed": self.probed, "ok": self.ok, "failed": self.failed,
               "skipped": self.skipped, "vanished": self.vanished, "interrupted": self.interrupted,
               "hosts": self.hosts}
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
            raise MuscatError(f"--only: {name} is {by_name[name].off_reason}")
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
        import duckdb  # noqa: F401  (Arrow tables registered on a reader need its sources: catalog/duck.py)
        import pyarrow as pa

        from .columns import column

        self.extractors = {e.name: e for e in extractors}
        self.upstream_names = sorted({u for e in extractors for u in e.uses})
        self.jobs: list[Job] = []
        self.paths: dict[int, str] = {}  # job_id -> display path
        self.next_job_id = first_job_id
        names = pa.table({"extractor": column(list(self.extractors), pa.string())})
        only = "" if file_ids is None else "AND f.file_id IN (SELECT file_id FROM only_files)"
        with db.read() as con:
            con.register("chosen", names)
            con.register("only_files", pa.table({"file_id": column(file_ids or [], pa.int64())}))
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
    engine = Engine(db, settings, only, retry_failed, progress, stale=stale, workers=workers, start_workers=True)
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
    """An executor, a job queue and the writer: `extract` runs it dry, `watch` keeps it fed.

    `plan()` queues pending work (all of it, or that of some files, at the front of the queue);
    `step()` hands jobs to the executor's free workers and handles what they report for up to
    `timeout` seconds. A job is never queued twice while it waits or runs.
    """

    def __init__(self, db: Database, settings: Settings, only: list[str] | None = None,
                 retry_failed: bool = False, progress: Callable[[int, int], None] | None = None,
                 keep_results_when_locked: bool = False, stale: bool = False,
                 halt_when_out_of_space: bool = True, prompt_results: bool = False,
                 workers: int | None = None, start_workers: bool = False) -> None:
        from . import extractor_state

        self.db = db
        self.settings = settings
        loaded = load_extractors(settings)
        self.probe, self.extractors = select_extractors(loaded, only)
        self.by_name = {e.name: e for e in self.extractors}
        self.stale = stale
        self.executor = make_executor(settings, self.extractors)
        self.size: int | None = workers  # workers asked for (None: the executor's cores)
        if start_workers:
            # Before the catalogue is opened: the workers' imports (Essentia: about a second)
            # overlap the extractors' record and the plan, and the first job finds one ready.
            self.start_workers()
        try:
            extractor_state.sync(db, loaded)
        except BaseException:
            self.executor.stop()
            raise
        self.retry_failed = retry_failed
        self.progress = progress
        self.report = ExtractReport()
        # A batch run writes as often as the writes' cost allows; `prompt_results` (watch) writes
        # each result within a second.
        self.writer = ResultWriter(db, keep_when_locked=keep_results_when_locked,
                                   write_share=None if prompt_results else WRITE_SHARE)
        self.queue: deque[Job] = deque()
        self.paths: dict[int, str] = {}  # job_id -> display path
        self.queued: set[tuple[bool, int]] = set()  # (probe?, file_id) of jobs waiting or running
        self.running: dict[int, Job] = {}  # job_id -> job, while the executor holds it
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

    # -- the pool --------------------------------------------------------------------------

    def start_workers(self, size: int | None = None) -> None:
        """Start the executor's workers: `size` of them (None: as many as it has cores for)."""
        self.size = size or self.size
        self.executor.start(self.size or None)

    def trim_workers(self) -> None:
        """Stop workers beyond the number of jobs (a short run needs no full pool)."""
        self.executor.trim(len(self.queue))

    def stop(self) -> None:
        self.report.gpu = self.executor.stop()
        self.writer.close()

    @property
    def idle(self) -> bool:
        return not self.queue and not self.running

    @property
    def waiting(self) -> int:
        return len(self.queue) + len(self.running)

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
        if fresh:
            self.start_workers()
        return len(fresh)

    # -- running -----------------------------------------------------------------------------

    def step(self, timeout: float) -> None:
        if self.queue and not self.running and not self.executor.free():
            self.start_workers()
        self._feed()
        self.report.gpu_restarts += self.executor.notices()
        if self.running:
            for event in self.executor.events(timeout):
                self._handle(event)
                self._feed()
        elif timeout:
            time.sleep(timeout)
        self.writer.maybe_flush()

    def _feed(self) -> None:
        # Results that cannot be written yet wait in memory: past a bound, take no more work.
        while self.queue and self.writer.buffered < self.writer.max_buffered and self.executor.free():
            job = self.queue.popleft()
            self.running[job.job_id] = job
            self.executor.submit(job)

    def _finish_job(self, job: Job) -> None:
        del self.running[job.job_id]
        audio_id = self.audio_of.pop(job.job_id, None)
        if audio_id is not None and self.in_flight.get(audio_id) == job.job_id:
            del self.in_flight[audio_id]
        self.queued.discard((job.probe, job.file_id))
        self.done_jobs += 1
        if self.progress:
            self.progress(self.done_jobs, self.report.files)

    def _handle(self, event: Event) -> None:
        job = self.running[event.job_id]
        if isinstance(event, (Identified, Result)) or (isinstance(event, Unreadable) and job.probe):
            self.report.hosts[event.host] = self.report.hosts.get(event.host, 0) + 1  # a run was recorded
        if isinstance(event, Identified):
            facts = event.facts
            self.report.probed += 1
            if facts.rekeyed_from is not None:
                self._rekey(facts.rekeyed_from, event.audio_id)
            self.writer.add_probed(Probed(job.file_id, event.started_at, event.audio_id, facts.duration,
                                          facts.sample_rate, facts.channels, facts.codec, facts.head_tail_hash))
            self.writer.add_run(Run(self.probe, event.audio_id, job.file_id, "ok", event.started_at, event.seconds,
                                    facts.duration, event.values, host=event.host))
            self.executor.answer(RunThese(job.job_id, self._needs(job, event.audio_id)))
        elif isinstance(event, Result):
            audio_id = self.audio_of.get(job.job_id, job.expected_audio_id)
            status = "ok" if event.error is None else "failed"
            if audio_id is not None and self.known is not None and (status == "ok" or not self.retry_failed):
                self.known.setdefault(audio_id, set()).add(event.extractor)
            self.writer.add_run(Run(self.by_name[event.extractor], audio_id, job.file_id, status, event.started_at,
                                    event.seconds, event.audio_seconds, event.values or {}, event.error,
                                    input=event.input, device=event.device, artifacts=event.artifacts,
                                    host=event.host))
            self._count(status, job, event.extractor, event.error)
        elif isinstance(event, Unreadable):
            if job.probe:
                self.writer.add_probed(Probed(job.file_id, event.started_at))
                self.writer.add_run(Run(self.probe, None, job.file_id, "failed", event.started_at, event.seconds,
                                        None, error=event.reason, host=event.host))
                self._count("failed", job, PROBE, event.reason)
            else:  # it decoded when probed: it has changed (or gone) since; identify it again
                self.writer.add_reprobe(job.file_id)
        elif isinstance(event, Changed):
            self.writer.add_reprobe(job.file_id)
        elif isinstance(event, Rekeyed):
            self._rekey(event.old, event.new)
            self.audio_of[job.job_id] = event.new
        elif isinstance(event, NoSpace):
            first = self.report.no_space is None
            self.report.no_space = f"{self.paths[job.job_id]}: {event.extractor}: {event.error}"
            if self.halt_when_out_of_space and first:
                # Every job after it would fail the same way: leave them pending, finish the rest.
                for waiting in self.queue:
                    self.queued.discard((waiting.probe, waiting.file_id))
                self.queue.clear()
        elif isinstance(event, Vanished):
            # Moved or deleted since planned: the next plan takes it again, from the catalogue
            # once a scan has seen where it went. Its probe, if done, stays valid: a move keeps
            # size and mtime (a change the scan sees is a change of `changed_at`, and re-probes).
            self.report.vanished += 1
            self.vanished.add(job.file_id)
        elif isinstance(event, WorkerLost):
            self._lost(job, event)
            self._finish_job(job)
        elif isinstance(event, Done):
            self._finish_job(job)

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

    def _lost(self, job: Job, lost: WorkerLost) -> None:
        """The worker running `job` died (a crash in a decoder, say): record the job as failed."""
        now = utc_now()
        audio_id = self.audio_of.get(job.job_id, job.expected_audio_id)
        if not lost.extractors and job.probe and job.job_id not in self.audio_of:
            self.writer.add_probed(Probed(job.file_id, now))
            self.writer.add_run(Run(self.probe, None, job.file_id, "failed", now, 0.0, None,
                                    error=f"{lost.reason} while decoding"))
            self._count("failed", job, PROBE, lost.reason)
        for name in lost.extractors:
            self.writer.add_run(Run(self.by_name[name], audio_id, job.file_id, "failed", now, 0.0,
                                    None, error=f"{lost.reason} while running {name}"))
            self._count("failed", job, name, lost.reason)
