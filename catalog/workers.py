"""CPU worker processes: decode each file once, identify its audio, run the extractors asked for.

The local executor's workers (catalog/local_executor.py). Essentia is single-threaded, so there
is one process per core. Workers are started with `spawn` (the coordinator runs DuckDB's
threads, which `fork` would copy mid-flight) and ignore SIGINT: the coordinator decides what an
interruption means. Model-based (staged) extractors send their items to the GPU worker when the
run has one (`gpu`: how to reach it) and finish here.

They speak the run protocol of catalog/protocol.py over their pipe; `run_job` is the part any
executor's worker runs (a Ray actor too), with `send` and `receive` for its two directions.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import signal
import socket
import time
from multiprocessing.connection import Connection
from typing import Any, Callable

from .config import Settings
from .clock import utc_now
from .extractor import Inputs, Upstream
from .protocol import (Changed, Done, Identified, Job, NoSpace, ProbeFacts, Rekeyed, Result, RunThese, Started,
                       Unreadable, Vanished)


# One process per core, so each must keep to one thread: numpy's BLAS would otherwise start a
# thread per core in every worker and the workers would fight over the cores.
SINGLE_THREADED = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
WORKER_NICENESS = 10


def worker_main(conn: Connection, settings: Settings, gpu: tuple[str, bytes, str] | None = None) -> None:
    os.environ.update(SINGLE_THREADED)  # before numpy is imported in this process
    # Below the coordinator: with every core extracting, a change the watcher must take (or
    # results to write) would otherwise wait for a core behind the workers.
    os.nice(WORKER_NICENESS)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Decoders (libmpg123, FFmpeg) print notes about odd files straight to fd 2; every error
    # that matters reaches the coordinator through the pipe, so keep the terminal clean.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    import essentia

    from .essentia_import import load

    essentia.log.warningActive = False  # FFmpeg's chatter about every odd file
    essentia.log.infoActive = False
    load()  # once, before the first job; each algorithm is made when first used

    from .registry import load_extractors

    extractors = {e.name: e for e in load_extractors(settings)}
    # Staged extractors run their models in the GPU worker when there is one, else in here.
    models = None
    if gpu is not None:
        from .gpu_worker import GpuClient

        models = GpuClient(*gpu)
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        _run_job(conn, job, extractors, settings, models)


def _run_job(conn: Connection, job: Job, extractors: dict[str, Any], settings: Settings, models: Any) -> None:
    run_job(job, extractors, settings, models, conn.send, conn.recv, socket.gethostname())


def run_job(job: Job, extractors: dict[str, Any], settings: Settings, models: Any,
            send: Callable[[Any], None], receive: Callable[[], RunThese | None], host: str) -> None:
    """One job, start to Done: decode, identify (and ask what to run), run the extractors."""
    from .decode import DecodeError, decode
    from .identity import head_tail_hash
    from .registry import PROBE

    started_at, started = utc_now(), time.perf_counter()
    try:
        audio = decode(os.fsdecode(job.path), settings.max_duration)
    except DecodeError as exc:
        if not os.path.lexists(job.path):  # moved or deleted since planned: not the file's fault
            send(Vanished(job.job_id))
        else:
            send(Unreadable(job.job_id, str(exc), started_at, time.perf_counter() - started, host))
        send(Done(job.job_id))
        return
    except (Exception, MemoryError) as exc:  # noqa: BLE001 - a decoder's bug is this file's failure
        send(Unreadable(job.job_id, f"the decoder failed: {type(exc).__name__}: {exc}", started_at,
                        time.perf_counter() - started, host))
        send(Done(job.job_id))
        return

    if job.probe:
        try:
            values = extractors[PROBE].run(audio).values
            facts = ProbeFacts(audio.duration, audio.sample_rate, audio.channels, audio.codec,
                               head_tail_hash(job.path), carried_over(audio, job.previous_audio_id))
        except Exception as exc:  # noqa: BLE001 - any failure is recorded, never fatal
            send(Unreadable(job.job_id, f"{type(exc).__name__}: {exc}", started_at, time.perf_counter() - started,
                            host))
            send(Done(job.job_id))
            return
        send(Identified(job.job_id, audio.audio_id, values, facts, started_at, time.perf_counter() - started, host))
        reply = receive()
        if reply is None:
            return
        names, upstream, given_files = reply.extractors, {}, {}
    else:
        if audio.audio_id != job.expected_audio_id:
            recorded = carried_over(audio, job.expected_audio_id)
            if recorded is None:
                send(Changed(job.job_id, audio.audio_id))
                send(Done(job.job_id))
                return
            send(Rekeyed(job.job_id, recorded, audio.audio_id))
        names, upstream, given_files = job.extractors, dict(job.upstream), job.upstream_artifacts

    # Results others read, at hand: those the audio had, with their files (audio jobs), and those
    # made in this job. Only these count as a run's input.
    results = {name: Upstream(identity, dict(given_files[name])) for name, identity in upstream.items()
               if name in given_files}
    for name in upstream_first(names, extractors):
        extractor = extractors[name]
        inputs = Inputs({u: results[u] for u in extractor.uses if u in results},
                        str(settings.artifacts_dir), settings.device)
        send(Started(job.job_id, name))
        started_at, started = utc_now(), time.perf_counter()
        try:
            made, error = extractor.run(audio, inputs, models), None
            results[name] = Upstream(extractor.identity, {a.kind: a.path for a in made.artifacts}, made.leaves)
        except Exception as exc:  # noqa: BLE001
            if out_of_space(exc):  # not this audio's fault: nothing is recorded, it is redone later
                send(NoSpace(job.job_id, name, f"{type(exc).__name__}: {exc}"))
                continue
            made, error = None, f"{type(exc).__name__}: {exc}"
        device = "cpu" if extractor.device == "cpu" else _device_used(settings.device)
        send(Result(job.job_id, name, made.values if made else None, error, started_at, time.perf_counter() - started,
                    audio.duration, inputs.source, made.artifacts if made else [], device, host))
    send(Done(job.job_id))


def carried_over(audio: Any, recorded: str | None) -> str | None:
    """`recorded`, when it is the id muscat gave this same audio before the packets rule."""
    if recorded is None or audio.audio_id == recorded or audio.id_rule != "packets":
        return None
    from .legacy_identity import legacy_audio_id

    return recorded if legacy_audio_id(audio.path) == recorded else None


_NO_SPACE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_NO_SPACE_TEXTS = ("No space left on device", "File too large", "Disk quota exceeded")


def out_of_space(exc: BaseException) -> bool:
    """Whether an extractor failed for want of disk space (or a file-size limit), not its input.

    soundfile reports these as text, not as an OSError."""
    if isinstance(exc, OSError) and exc.errno in _NO_SPACE_ERRNOS:
        return True
    return any(text in str(exc) for text in _NO_SPACE_TEXTS)


def _device_used(requested: str) -> str:
    from .devices import resolve

    return resolve(requested)


def upstream_first(names: Any, extractors: dict[str, Any]) -> list[str]:
    """`names` ordered so that an extractor runs after those it reads (stems before hpcp)."""
    chosen, ordered, visiting = set(names), [], set()

    def visit(name: str) -> None:
        if name in ordered or name in visiting:
            return
        visiting.add(name)
        for used in extractors[name].uses:
            if used in chosen:
                visit(used)
        ordered.append(name)

    for name in sorted(chosen):
        visit(name)
    return ordered


class Worker:
    """One worker process and the coordinator's end of its pipe (catalog/local_executor.py)."""

    def __init__(self, settings: Settings, gpu: tuple[str, bytes, str] | None = None) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=worker_main, args=(child, settings, gpu), daemon=True)
        self.process.start()
        child.close()
        self.job: Job | None = None
        self.running: str | None = None  # the extractor it announced last, for crash reports

    def send(self, message: Any) -> None:
        self.conn.send(message)

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()

    def exit_description(self) -> str:
        self.process.join(1.0)
        code = self.process.exitcode
        if code is not None and code < 0:
            return f"the worker process died of signal {signal.Signals(-code).name}"
        return f"the worker process exited unexpectedly (status {code})"
