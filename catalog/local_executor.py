"""The local executor: worker processes on this machine, and a GPU worker per device.

CPU workers (catalog/workers.py) decode and run the extractors, one process per core; with a
GPU, one GPU worker per device (catalog/gpu_worker.py) holds the models of the staged extractors
and batches their windows across files, and the CPU workers are shared out among the devices.
A worker that dies takes its job with it: the job is reported lost (the coordinator records it
as failed) and a new worker takes its place.
"""

from __future__ import annotations

from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Any

from .devices import split
from .protocol import Done, Event, Job, NoSpace, Result, RunThese, Started, WorkerLost
from .workers import Worker

if TYPE_CHECKING:
    from .config import Settings
    from .extractor import LoadedExtractor
    from .gpu_worker import GpuWorker


class LocalExecutor:
    def __init__(self, settings: Settings, extractors: list[LoadedExtractor]) -> None:
        from .gpu_worker import wanted  # numpy: not for commands that never extract

        self.settings = settings
        self.size = 0
        self.workers: list[Worker] = []
        self.use_gpu_worker = wanted(settings, extractors)
        self.gpus: list[GpuWorker] = []  # one per device of --device
        self._notices: list[str] = []

    def start(self, size: int | None) -> None:
        self.size = max(1, size or self.settings.workers)
        if self.use_gpu_worker and not self.gpus:
            from .gpu_worker import GpuWorker

            self.gpus = [GpuWorker(self.settings.replace(device=device)) for device in split(self.settings.device)]
        while len(self.workers) < self.size:
            self.workers.append(self._new_worker(len(self.workers)))

    def _new_worker(self, index: int) -> Worker:
        """The index-th CPU worker: with several devices, each serves its share of the workers."""
        devices = split(self.settings.device)
        settings = self.settings.replace(device=devices[index % len(devices)])
        return Worker(settings, self.gpus[index % len(self.gpus)].connection if self.gpus else None)

    def free(self) -> int:
        return sum(w.job is None for w in self.workers)

    def busy(self) -> int:
        return sum(w.job is not None for w in self.workers)

    def submit(self, job: Job) -> None:
        worker = next(w for w in self.workers if w.job is None)
        worker.job, worker.running = job, None
        worker.send(job)

    def answer(self, reply: RunThese) -> None:
        next(w for w in self.workers if w.job is not None and w.job.job_id == reply.job_id).send(reply)

    def events(self, timeout: float) -> list[Event]:
        for gpu in self.gpus:
            if gpu.keep_alive():  # what it held fails in the CPU workers that asked for it
                self._notices.append(f"{gpu.settings.device}: {gpu.last_restart}")
        busy = {w.conn: w for w in self.workers if w.job is not None}
        if not busy:
            return []
        out: list[Event] = []
        for conn in wait(list(busy), timeout=timeout):
            worker = busy[conn]
            try:
                message = conn.recv()
            except (EOFError, OSError):
                out.append(self._lost(worker))
                continue
            if isinstance(message, Started):
                worker.running = message.extractor
            elif isinstance(message, (Result, NoSpace)):
                worker.running = None
            elif isinstance(message, Done):
                worker.job = None
            out.append(message)
        return out

    def _lost(self, worker: Worker) -> WorkerLost:
        """A worker died mid-job (a crash in a decoder, say): a new one takes its place."""
        assert worker.job is not None
        lost = WorkerLost(worker.job.job_id, worker.exit_description(), [worker.running] if worker.running else [])
        worker.kill()
        index = self.workers.index(worker)
        self.workers[index] = self._new_worker(index)
        return lost

    def trim(self, keep: int) -> None:
        for spare in self.workers[keep:]:
            spare.kill()  # idle (perhaps still importing): nothing to lose
        del self.workers[keep:]

    def notices(self) -> list[str]:
        said, self._notices = self._notices, []
        return said

    def stop(self) -> dict[str, Any] | None:
        # Workers hold no state worth waiting for: work in progress is neither done nor failed,
        # and is pending again next time.
        for worker in self.workers:
            worker.kill()
        self.workers = []
        stats = None
        if self.gpus:
            from .gpu_worker import merged_stats

            stats = merged_stats([gpu.stats() for gpu in self.gpus])
            for gpu in self.gpus:
                gpu.stop()
            self.gpus = []
        return stats
