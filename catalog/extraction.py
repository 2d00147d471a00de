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
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Any, Callable

from .config import Settings
from .errors import MuscatError
from .extractor import LoadedExtractor
from .registry import PROBE, load_extractors
from .workers import Job, Worker
from .writer import Probed, ResultWriter, Run

if TYPE_CHECKING:
    from .database import Database


@dataclass
class ExtractReport:
    files: int = 0  # jobs planned
    probed: int = 0
    ok: int = 0  # extractor runs that succeeded
    failed: int = 0  # runs (probe included) that failed
    skipped: int = 0  # files whose audio was done already or is being done by another job
    interrupted: bool = False
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (path, extractor, error)

    def to_json(self) -> dict[str, Any]:
        return {"files": self.files, "probed": self.probed, "ok": self.ok, "failed": self.failed,
                "skipped": self.skipped, "interrupted": self.interrupted}


def select_extractors(settings: Settings, only: list[str] | None) -> tuple[LoadedExtractor, list[LoadedExtractor]]:
    """The probe, and the CPU extractors this run may use (all runnable ones, or `only`)."""
    loaded = load_extractors(settings)
    by_name = {e.name: e for e in loaded}
    for name in only or []:
        if name not in by_name:
            raise MuscatError(f"--only: no extractor named '{name}' (known: {', '.join(sorted(by_name))})")
    chosen = [
        e for e in loaded
        if e.name != PROBE and e.device == "cpu" and e.runnable and (not only or e.name in only)
    ]
    return by_name[PROBE], chosen


def _path(root: str, dir: str, name: str, raw: bytes | None) -> bytes:
    rel = raw if raw is not None else (f"{dir}/{name}" if dir else name).encode()
    return os.fsencode(root) + b"/" + rel


class _Plan:
    """Jobs to run, from the catalogue's current state."""

    def __init__(self, db: Database, probe: LoadedExtractor, extractors: list[LoadedExtractor],
                 retry_failed: bool) -> None:
        import pyarrow as pa

        self.extractors = {e.name: e for e in extractors}
        self.jobs: list[Job] = []
        self.paths: dict[int, str] = {}  # job_id -> display path
        self.previous_audio: dict[int, str | None] = {}  # probe jobs: the audio the file held
        names = pa.table({"extractor": pa.array(list(self.extractors), pa.string())})
        with db.read() as con:
            con.register("chosen", names)
            to_probe = con.execute(
                """
                SELECT f.file_id, r.path, f.dir, f.name, f.raw_path, f.audio_id, l.path
                FROM files f JOIN roots r USING (root_id) JOIN library l USING (file_id)
                WHERE f.probed_at IS NULL OR f.changed_at > f.probed_at
                   OR (? AND f.file_id IN (
                        SELECT file_id FROM runs r JOIN extractor_current c USING (extractor, version, params_hash)
                        WHERE r.extractor = 'probe' AND r.status = 'failed'))
                ORDER BY f.file_id
                """,
                [retry_failed],
            ).fetchall()
            failed_too = (
                """
                UNION
                SELECT r.audio_id, r.extractor FROM runs r
                JOIN extractor_current c USING (extractor, version, params_hash)
                WHERE r.status = 'failed' AND r.audio_id IS NOT NULL
                """ if retry_failed else ""
            )
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
                      AND f.probed_at IS NOT NULL AND f.changed_at <= f.probed_at
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
            self.known: dict[str, set[str]] = {}
            if to_probe:
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
            con.unregister("chosen")
        for file_id, root, dir_, name, raw, previous, display in to_probe:
            job = Job(len(self.jobs), _path(root, dir_, name, raw), file_id, probe=True)
            self.jobs.append(job)
            self.paths[job.job_id] = display
            self.previous_audio[job.job_id] = previous
        for audio_id, file_id, root, dir_, name, raw, display, names_ in to_extract:
            job = Job(len(self.jobs), _path(root, dir_, name, raw), file_id, probe=False,
                      expected_audio_id=audio_id, extractors=tuple(names_))
            self.jobs.append(job)
            self.paths[job.job_id] = display


def extract(
    db: Database,
    settings: Settings,
    only: list[str] | None = None,
    workers: int | None = None,
    retry_failed: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ExtractReport:
    """Run pending work with a pool of worker processes; see the module's docstring."""
    from .status import sync_extractors

    probe, extractors = select_extractors(settings, only)
    sync_extractors(db, settings)
    report = ExtractReport()
    writer = ResultWriter(db)
    coordinator = _Coordinator(probe, writer, report, progress)
    # Workers start now: their imports (Essentia: about a second) overlap the planning.
    coordinator.start_workers(settings, workers or settings.workers)
    try:
        plan = _Plan(db, probe, extractors, retry_failed)
        report.files = len(plan.jobs)
        coordinator.run(plan, settings)
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        coordinator.stop()
        writer.flush()
    return report


class _Coordinator:
    def __init__(self, probe: LoadedExtractor, writer: ResultWriter, report: ExtractReport,
                 progress: Callable[[int, int], None] | None) -> None:
        self.probe = probe
        self.writer = writer
        self.report = report
        self.progress = progress
        self.plan: _Plan
        self.queue: deque[Job] = deque()
        self.workers: list[Worker] = []
        self.in_flight: dict[str, int] = {}  # audio_id -> job extracting it in this pass
        self.audio_of: dict[int, str] = {}  # job_id -> its audio, once known
        self.done_jobs = 0

    def start_workers(self, settings: Settings, size: int) -> None:
        self.workers = [Worker(settings) for _ in range(max(1, size))]

    def run(self, plan: _Plan, settings: Settings) -> None:
        self.plan = plan
        self.queue = deque(plan.jobs)
        for spare in self.workers[len(plan.jobs) or 1 :]:  # more workers than files
            spare.stop()
        del self.workers[len(plan.jobs) or 1 :]
        for worker in self.workers:
            self._feed(worker)
        while any(w.job is not None for w in self.workers):
            busy = {w.conn: w for w in self.workers if w.job is not None}
            for conn in wait(list(busy), timeout=0.5):
                worker = busy[conn]
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    self._crashed(worker, settings)
                    continue
                self._handle(worker, message)
            self.writer.maybe_flush()

    def stop(self) -> None:
        for worker in self.workers:
            if worker.job is not None:
                worker.kill()  # its work is neither done nor failed: pending next time
            else:
                worker.stop()
        self.workers = []

    def _feed(self, worker: Worker) -> None:
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
        self.done_jobs += 1
        if self.progress:
            self.progress(self.done_jobs, len(self.plan.jobs))
        self._feed(worker)

    def _handle(self, worker: Worker, message: tuple) -> None:
        kind, job_id = message[0], message[1]
        job = worker.job
        assert job is not None and job.job_id == job_id
        if kind == "identified":
            _, _, audio_id, values, facts, started_at, seconds = message
            self.report.probed += 1
            self.writer.add_probed(Probed(job.file_id, started_at, audio_id, facts["duration"],
                                          facts["sample_rate"], facts["channels"], facts["codec"],
                                          facts["head_tail_hash"]))
            self.writer.add_run(Run(self.probe, audio_id, job.file_id, "ok", started_at, seconds,
                                    facts["duration"], values))
            worker.send(("run", self._needs(job, audio_id)))
        elif kind == "start":
            worker.running = message[2]
        elif kind == "result":
            _, _, name, values, error, started_at, seconds, audio_seconds = message
            worker.running = None
            audio_id = self.audio_of.get(job.job_id, job.expected_audio_id)
            status = "ok" if error is None else "failed"
            self.writer.add_run(Run(self.plan.extractors[name], audio_id, job.file_id, status, started_at,
                                    seconds, audio_seconds, values or {}, error))
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
        elif kind == "done":
            self._finish_job(worker)

    def _needs(self, job: Job, audio_id: str) -> list[str]:
        """What a just-identified audio still needs from this run's extractors."""
        self.audio_of[job.job_id] = audio_id
        if audio_id in self.in_flight:
            self.report.skipped += 1
            return []
        done = self.plan.known.get(audio_id, set())
        needed = [name for name in self.plan.extractors if name not in done]
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
            self.report.failures.append((self.plan.paths[job.job_id], name, error or ""))

    def _crashed(self, worker: Worker, settings: Settings) -> None:
        """A worker died mid-job (a crash in a decoder, say): record it, carry on with a new one."""
        job = worker.job
        assert job is not None
        reason = worker.exit_description()
        worker.kill()
        now = _utcnow()
        name = worker.running
        audio_id = self.audio_of.get(job.job_id, job.expected_audio_id)
        if name is None and job.probe and job.job_id not in self.audio_of:
            self.writer.add_probed(Probed(job.file_id, now))
            self.writer.add_run(Run(self.probe, None, job.file_id, "failed", now, 0.0, None,
                                    error=f"{reason} while decoding"))
            self._count("failed", job, PROBE, reason)
        elif name is not None:
            self.writer.add_run(Run(self.plan.extractors[name], audio_id, job.file_id, "failed", now, 0.0,
                                    None, error=f"{reason} while running {name}"))
            self._count("failed", job, name, reason)
        replacement = Worker(settings)
        self.workers[self.workers.index(worker)] = replacement
        replacement.job = job
        self._finish_job(replacement)


def _utcnow():  # type: ignore[no-untyped-def]
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).replace(tzinfo=None)
