"""The Ray executor: extraction on a Ray cluster, with muscat's process as the only writer.

- CPU work runs in actors, one per CPU they are given (`num_cpus=1`), spread over the nodes.
  Each runs `catalog.workers.run_job` — the code a local worker process runs — so it reads the
  audio by path on its own node and writes artifacts to `artifacts_dir`: every node must mount
  the library and the artifacts folder under the same paths. Only the messages of the run
  protocol (catalog/protocol.py) come back, as a stream per job: values and the records of
  files, never audio.
- With model-based (staged) extractors and GPUs in the cluster, one GPU actor per GPU
  (`num_gpus=1`) holds their models and batches the windows of several files per forward pass,
  with the local GPU worker's batching (catalog/gpu_worker.py); CPU actors send it their items.
- An actor or node that dies takes its job with it: the job is tried again on a new actor, up
  to `[ray] max_attempts` times (default 3), then reported lost ("worker lost 3 times: ...").
  A GPU actor that dies is restarted by Ray (up to `max_attempts` times) and the CPU actors
  ask it again for the forward passes it held.
  What the coordinator already had of the job is not repeated; a retried job writes its
  artifacts again, atomically.
- Address: `--ray-address`, else `[ray] address`, else $RAY_ADDRESS, else a local Ray started
  for the run (on 127.0.0.1) and stopped after. Stopping kills every actor this run made.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

from .protocol import Done, Event, Identified, Job, Result, RunThese, Started, WorkerLost

if TYPE_CHECKING:
    from .config import Settings
    from .extractor import LoadedExtractor

# A Ray node started on a busy machine can take long to bring up its agent; the default (30 s)
# made `ray.init` fail on a loaded 2-core machine.
AGENT_TIMEOUT_MS = "180000"


def connect(settings: Settings) -> bool:
    """Connect to the cluster the settings name, or start a local Ray; whether it was started here."""
    # Under `uv run`, Ray would ship the current folder to the cluster as the workers' working
    # folder (and rebuild the environment there): the nodes run the muscat installed on them.
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    import ray

    if ray.is_initialized():
        return False
    address = settings.ray_address or os.environ.get("RAY_ADDRESS") or None
    _notes_to_stderr()
    options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING, "include_dashboard": False}
    # Ray's core worker installs handlers of its own for SIGTERM (it exits at once, status 15):
    # muscat's (finish what is finished, stop the actors) must stay.
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        if address:
            ray.init(address=address, **options)
            return False
        os.environ.setdefault("RAY_agent_register_timeout_ms", AGENT_TIMEOUT_MS)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # advertise 127.0.0.1, not the network
        ray.init(num_cpus=settings.workers, _node_ip_address="127.0.0.1", **options)
        return True
    finally:
        for signum, handler in handlers.items():
            if handler is not None:
                signal.signal(signum, handler)


def _notes_to_stderr() -> None:
    """Ray prints the cluster's notes (a worker that died) to the driver's stdout, which is
    muscat's (`extract --json`): send them to stderr. Ray has no setting for it."""
    from ray._private import worker

    printer = getattr(worker, "print_to_stdstream", None)
    if printer is None or getattr(printer, "muscat", False):
        return

    def to_stderr(data: dict[str, Any], ignore_prefix: bool) -> None:
        printer({**data, "is_err": True}, ignore_prefix)

    to_stderr.muscat = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = to_stderr


def node_address() -> str:
    """This node's address as Ray names it (ip:port of its raylet): what runs record as `host`."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node["NodeID"] == node_id:
            return f"{node['NodeManagerAddress']}:{node['NodeManagerPort']}"
    return ray.util.get_node_ip_address()


class _CpuWorker:
    """A Ray actor that runs jobs as a local worker process does (catalog/workers.py)."""

    def __init__(self, settings: Settings, gpu: Any = None) -> None:
        from .essentia_import import load
        from .registry import load_extractors

        load()
        self.settings = settings
        self.extractors = {e.name: e for e in load_extractors(settings)}
        self.models = _GpuActorClient(gpu, max(1, settings.ray_max_attempts)) if gpu is not None else None
        self.replies: queue.Queue = queue.Queue()
        self.host = node_address()

    def run(self, job: Job) -> Iterator[Any]:
        """The job's messages as they come (a Ray streaming generator)."""
        from .workers import run_job

        messages: queue.Queue = queue.Queue()

        def work() -> None:
            try:
                run_job(job, self.extractors, self.settings, self.models, messages.put, self.replies.get, self.host)
            except BaseException as exc:  # noqa: BLE001 - a bug here must end the stream, not hang it
                messages.put(exc)

        threading.Thread(target=work, daemon=True).start()
        while True:
            message = messages.get()
            if isinstance(message, BaseException):
                raise message
            yield message
            if isinstance(message, Done):
                return

    def answer(self, reply: RunThese) -> None:
        self.replies.put(reply)

    def pid(self) -> int:
        return os.getpid()


class _GpuWorker:
    """A Ray actor holding the staged extractors' models, batching requests from CPU actors."""

    def __init__(self, settings: Settings) -> None:
        from types import SimpleNamespace

        from .gpu_worker import _Server

        self.server = _Server(settings, "ray", SimpleNamespace(value=time.monotonic()),
                              deliver=lambda reply, message: reply(message) or True,
                              pack_outputs=lambda outputs: ("inline", outputs))
        threading.Thread(target=self.server.run, daemon=True).start()
        threading.Thread(target=self.server.finish, daemon=True).start()

    def info(self, name: str) -> dict[str, Any]:
        return self.server.info(name)

    def forward(self, name: str, items: Any, client: str) -> Any:
        import numpy as np
        import torch

        from .gpu_worker import GpuError

        if not len(items):
            return np.zeros((0,), np.float32)
        answered = threading.Event()
        box: list[tuple] = []
        self.server.add(lambda message: (box.append(message), answered.set()), client, 0, name,
                        torch.from_numpy(np.array(items, dtype=np.float32)))
        answered.wait()
        kind, _, payload = box[0]
        if kind == "error":
            raise GpuError(payload)
        return payload[1]

    def stats(self) -> dict[str, Any]:
        return self.server.stats()


class _GpuActorClient:
    """model_stage.Models for a CPU actor: the GPU actor's models."""

    def __init__(self, actor: Any, attempts: int) -> None:
        import ray

        self.actor = actor
        self.attempts = attempts
        self.me = ray.get_runtime_context().get_actor_id()
        self._info: dict[str, dict[str, Any]] = {}

    def info(self, name: str) -> dict[str, Any]:
        if name not in self._info:
            self._info[name] = self._call("info", name)
        return self._info[name]

    def forward(self, name: str, items: Any) -> Iterator[Any]:
        yield self._call("forward", name, items, self.me)

    def _call(self, method: str, *args: Any) -> Any:
        """A call to the GPU actor, waiting while Ray restarts it: a forward pass is computed
        again whole, so one that died with the actor is simply asked again. Raises once the
        actor has died `attempts` times under this call (Ray gave up restarting it)."""
        import ray

        deaths = 0
        while True:
            try:
                return ray.get(getattr(self.actor, method).remote(*args))
            except ray.exceptions.ActorUnavailableError:  # restarting: its models are loading
                time.sleep(0.5)
            except ray.exceptions.RayActorError as exc:
                deaths += 1
                if deaths >= self.attempts:
                    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    raise RuntimeError(f"GPU actor lost {deaths} times: {reason}") from None
                time.sleep(0.5)


@dataclass
class _Slot:
    """One CPU actor and the job it holds."""

    actor: Any
    job: Job | None = None
    stream: Any = None  # the ObjectRefGenerator of the job's messages
    attempts: int = 0
    running: str | None = None  # the extractor it announced last
    answered: RunThese | None = None  # what the coordinator said to the job's Identified
    delivered: set[str] = field(default_factory=set)  # extractors whose Result the coordinator has


class RayExecutor:
    def __init__(self, settings: Settings, extractors: list[LoadedExtractor]) -> None:
        from .model_stage import is_staged

        self.settings = settings
        self.size = 0
        self.max_attempts = max(1, settings.ray_max_attempts)
        self.staged = any(is_staged(e.module) for e in extractors)
        self.slots: list[_Slot] = []
        self.gpus: list[Any] = []
        self.started_ray = False
        self._classes: tuple[Any, Any] | None = None

    # -- actors ------------------------------------------------------------------------------

    def _actor_classes(self) -> tuple[Any, Any]:
        if self._classes is None:
            import ray

            cpu = ray.remote(num_cpus=1, max_concurrency=2, max_restarts=0)(_CpuWorker)
            # A CPU actor that dies is replaced by a new one (_lost); the GPU actor is one that
            # every CPU actor holds a handle to, so Ray restarts it in place (loading its models
            # again), and the CPU actors ask again (_GpuActorClient._call).
            gpu = ray.remote(max_concurrency=64, max_restarts=self.max_attempts)(_GpuWorker)
            self._classes = (cpu, gpu)
        return self._classes

    def _start_gpus(self) -> None:
        """A GPU actor per GPU of the cluster when staged extractors run (or one on a CPU, with
        `gpu_worker = true`); none otherwise: then each CPU actor holds the models itself."""
        import ray

        gpus = int(ray.cluster_resources().get("GPU", 0))
        wanted = self.staged and self.settings.gpu_worker is not False and (gpus or self.settings.gpu_worker)
        if not wanted or self.gpus:
            return
        _, gpu_class = self._actor_classes()
        if gpus:
            self.gpus = [gpu_class.options(num_gpus=1).remote(self.settings) for _ in range(gpus)]
        else:
            self.gpus = [gpu_class.options(num_cpus=0).remote(self.settings)]

    def _new_actor(self, index: int) -> Any:
        from .workers import SINGLE_THREADED

        cpu_class, _ = self._actor_classes()
        gpu = self.gpus[index % len(self.gpus)] if self.gpus else None
        # One CPU each: numpy's BLAS must keep to one thread from the process's start (Ray imports
        # numpy before the actor runs), or the actors on a node fight over its cores.
        return cpu_class.options(scheduling_strategy="SPREAD",
                                 runtime_env={"env_vars": SINGLE_THREADED}).remote(self.settings, gpu)

    def start(self, size: int | None) -> None:
        import ray

        if not ray.is_initialized():
            self.started_ray = connect(self.settings)
        self._start_gpus()
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.size = max(1, size or cpus)
        while len(self.slots) < self.size:
            self.slots.append(_Slot(self._new_actor(len(self.slots))))

    def free(self) -> int:
        return sum(slot.job is None for slot in self.slots)

    def busy(self) -> int:
        return sum(slot.job is not None for slot in self.slots)

    def submit(self, job: Job) -> None:
        slot = next(s for s in self.slots if s.job is None)
        slot.job, slot.attempts, slot.running, slot.answered, slot.delivered = job, 0, None, None, set()
        self._run(slot)

    def _run(self, slot: _Slot) -> None:
        slot.stream = slot.actor.run.options(num_returns="streaming").remote(slot.job)

    def answer(self, reply: RunThese) -> None:
        slot = next(s for s in self.slots if s.job is not None and s.job.job_id == reply.job_id)
        slot.answered = reply
        slot.actor.answer.remote(reply)

    # -- what happened -----------------------------------------------------------------------

    def events(self, timeout: float) -> list[Event]:
        import ray

        out: list[Event] = []
        wait = timeout
        while True:
            by_stream = {id(s.stream): s for s in self.slots if s.stream is not None}
            if not by_stream:
                return out
            ready, _ = ray.wait([s.stream for s in by_stream.values()], num_returns=1, timeout=wait)
            if not ready:
                return out
            for stream in ready:
                self._take(by_stream[id(stream)], out)
            wait = 0  # what else is ready now, without waiting again

    def _take(self, slot: _Slot, out: list[Event]) -> None:
        import ray

        try:
            message = ray.get(next(slot.stream))
        except StopIteration:
            slot.stream = None
            return
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError, ray.exceptions.ObjectLostError) as exc:
            self._lost(slot, exc, out)
            return
        if isinstance(message, Identified) and slot.answered is not None:
            slot.actor.answer.remote(slot.answered)  # a retried job: the coordinator has answered already
            return
        if isinstance(message, Started):
            slot.running = message.extractor
            if message.extractor in slot.delivered:
                return
        elif isinstance(message, Result):
            slot.running = None
            if message.extractor in slot.delivered:
                return
            slot.delivered.add(message.extractor)
        elif isinstance(message, Done):
            slot.job, slot.stream = None, None
        out.append(message)

    def _lost(self, slot: _Slot, exc: Exception, out: list[Event]) -> None:
        """The actor (or its node) died, or the job's task failed: try again on a new actor."""
        import ray

        assert slot.job is not None
        slot.attempts += 1
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        try:
            ray.kill(slot.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
        slot.actor = self._new_actor(self.slots.index(slot))
        if slot.attempts < self.max_attempts:
            self._run(slot)
            return
        # What it may have been running: the extractor it announced, else any it had still to finish
        # (its announcement may have died with it).
        unfinished = [slot.running] if slot.running else [
            name for name in (slot.answered.extractors if slot.answered else slot.job.extractors)
            if name not in slot.delivered]
        out.append(WorkerLost(slot.job.job_id, f"worker lost {slot.attempts} times: {reason}", unfinished))
        slot.job, slot.stream = None, None

    # -- the end -----------------------------------------------------------------------------

    def trim(self, keep: int) -> None:
        import ray

        for slot in [s for s in self.slots if s.job is None][max(0, keep - self.busy()):]:
            ray.kill(slot.actor, no_restart=True)
            self.slots.remove(slot)

    def notices(self) -> list[str]:
        return []

    def stop(self) -> dict[str, Any] | None:
        import ray

        if not ray.is_initialized():
            return None
        stats = None
        if self.gpus:
            from .gpu_worker import merged_stats

            try:
                stats = merged_stats(ray.get([gpu.stats.remote() for gpu in self.gpus], timeout=10))
            except Exception:  # noqa: BLE001 - a GPU actor that is gone has no figures to give
                stats = None
        for actor in [s.actor for s in self.slots] + self.gpus:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.slots, self.gpus = [], []
        if self.started_ray:
            ray.shutdown()
            self.started_ray = False
        return stats
