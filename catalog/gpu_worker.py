"""The GPU worker: one process per device that holds the models of staged extractors
(catalog/model_stage.py) and runs them on batches of items from many files at once.

CPU workers decode a file, `prepare` its items (demucs: windows of the track), hand them here and
`finish` when the outputs come back (overlap-add, encoding, writing stems): decoding and writing
overlap the device's work, and the device gets full batches whenever several files are in flight.

Each CPU worker connects to the GPU worker's Unix socket (in a private temporary folder). Items
and outputs travel in shared memory (/dev/shm), the messages that name them through the socket;
where /dev/shm has no room they travel pickled through the socket instead. Inside:

- a thread per connection reads requests: ("info", id, name) for what `prepare` needs to know,
  ("forward", id, name, items) for outputs, ("stats", id);
- the main thread takes up to `batch_size` items of one extractor and shape, oldest request first,
  from any connection, and starts `forward` on the device;
- a finisher thread copies each batch's outputs back and answers a request when all its items
  are done, so the next batch is already running on the device while the last one is copied.

A CUDA out-of-memory error halves the batch size and tries again; any other error fails the
requests of that batch (their files' results fail with the message), and the worker goes on.
It exits by itself when its coordinator is gone; what a kill -9 of everything leaves (shared
memory, the socket's folder: both named after the coordinator's pid) the next one sweeps away.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import re
import secrets
import shutil
import signal
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Client, Connection, Listener
from multiprocessing.shared_memory import SharedMemory
from typing import Any, Callable, Iterator

import numpy as np

from .config import Settings

CONNECT_TIMEOUT_S = 120.0  # the GPU worker imports torch before it answers
STARTUP_GRACE_S = 300.0  # before its first sign of life, on top of gpu_timeout
GROUP_BYTES = 32 << 20  # items a CPU worker sends per request; two requests in flight at most


class GpuError(RuntimeError):
    """The GPU worker could not run a request (the message says why)."""


class GpuWorkerLost(RuntimeError):
    """The GPU worker stopped (crashed, or was killed) before it answered."""


# -- moving arrays between processes ------------------------------------------------------------

def pack(array: np.ndarray, tag: str) -> tuple:
    """An array as a message part: in shared memory when /dev/shm has room, else inline.

    Blocks are named `<tag><random>`, the tag naming the coordinator (see `sweep_leftovers`)."""
    if array.nbytes and shm_room() > 2 * array.nbytes:
        shm = SharedMemory(name=f"{tag}{secrets.token_hex(8)}", create=True, size=array.nbytes)
        np.ndarray(array.shape, array.dtype, shm.buf)[...] = array
        shm.close()
        return ("shm", shm.name, array.shape, array.dtype.str)
    return ("inline", array)


def unpack(part: tuple, remove: bool = True) -> np.ndarray:
    """The array of a message part, copied; its shared memory removed unless the sender will
    remove it (`remove=False`: the GPU worker reading items, which their sender frees)."""
    if part[0] == "inline":
        return part[1]
    _, name, shape, dtype = part
    shm = SharedMemory(name=name)
    try:
        return np.ndarray(shape, np.dtype(dtype), shm.buf).copy()
    finally:
        shm.close()
        if remove:
            shm.unlink()


def shm_room() -> int:
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


# -- the CPU worker's side ----------------------------------------------------------------------

class GpuClient:
    """A CPU worker's connection to the GPU worker (a model_stage.Models)."""

    def __init__(self, address: str, authkey: bytes, tag: str) -> None:
        self.address, self.authkey, self.tag = address, authkey, tag
        self.conn: Connection | None = None
        self.infos: dict[str, dict[str, Any]] = {}
        self.replies: dict[int, tuple] = {}
        self.next_id = 0

    def info(self, name: str) -> dict[str, Any]:
        if name not in self.infos:
            self.infos[name] = self._wait(self._send("info", name))[2]
        return self.infos[name]

    def forward(self, name: str, items: np.ndarray) -> Iterator[np.ndarray]:
        per_group = max(1, GROUP_BYTES // max(1, items[0].nbytes if len(items) else 1))
        groups = [items[i : i + per_group] for i in range(0, len(items), per_group)]
        in_flight: deque[tuple[int, tuple]] = deque()
        try:
            for group in groups:
                part = pack(group, self.tag)
                try:
                    request_id = self._send("forward", name, part)
                except GpuWorkerLost:
                    _release(part)
                    raise
                in_flight.append((request_id, part))
                if len(in_flight) == 2:
                    yield self._outputs(*in_flight.popleft())
            while in_flight:
                yield self._outputs(*in_flight.popleft())
        finally:  # abandoned half way (an error): answers still due are collected, memory freed
            while in_flight:
                request_id, part = in_flight.popleft()
                if self.conn is None:  # lost: nothing will answer
                    _release(part)
                    continue
                try:
                    self._outputs(request_id, part)
                except (GpuError, GpuWorkerLost):
                    pass

    def stats(self) -> dict[str, Any]:
        return self._wait(self._send("stats"))[2]

    def _outputs(self, request_id: int, sent: tuple) -> np.ndarray:
        try:
            reply = self._wait(request_id)
        finally:
            _release(sent)
        return unpack(reply[2])

    def _send(self, kind: str, *args: Any) -> int:
        self.next_id += 1
        try:
            self._connection().send((kind, self.next_id, *args))
        except (OSError, EOFError):
            self._lost()
        return self.next_id

    def _wait(self, request_id: int) -> tuple:
        while request_id not in self.replies:
            try:
                reply = self._connection().recv()
            except (OSError, EOFError):
                self._lost()
            self.replies[reply[1]] = reply
        reply = self.replies.pop(request_id)
        if reply[0] == "error":
            raise GpuError(reply[2])
        return reply

    def _lost(self) -> None:
        self.conn, self.replies = None, {}
        raise GpuWorkerLost("the GPU worker stopped before it answered (it is started again)")

    def _connection(self) -> Connection:
        if self.conn is None:
            deadline = time.monotonic() + CONNECT_TIMEOUT_S
            while True:
                try:
                    self.conn = Client(self.address, "AF_UNIX", authkey=self.authkey)
                    break
                except (FileNotFoundError, ConnectionRefusedError):
                    if time.monotonic() > deadline:
                        raise GpuWorkerLost(f"the GPU worker did not start within {CONNECT_TIMEOUT_S:.0f} s") from None
                    time.sleep(0.05)
        return self.conn


def _release(part: tuple) -> None:
    """Remove a part's shared memory once the other side is done with it."""
    if part[0] == "shm":
        try:
            shm = SharedMemory(name=part[1])
            shm.close()
            shm.unlink()
        except FileNotFoundError:
            pass


# -- the GPU worker's side ----------------------------------------------------------------------

@dataclass(eq=False)
class _Request:
    reply: Any  # where its answer goes: (connection, lock) of a CPU worker here
    client: Any  # who asked (batches shared by several are counted)
    request_id: int
    name: str
    items: Any  # torch tensor [N, ...] in host memory
    taken: int = 0  # items handed to a batch
    done: int = 0  # items whose outputs are back
    outputs: np.ndarray | None = None  # filled by the finisher thread only
    failed: bool = False


class _Server:
    """Batches the forward passes of requests from any number of clients.

    Replies go through `deliver(reply, message)` (a CPU worker's connection here; a waiting
    call in the Ray GPU actor, catalog/ray_executor.py), outputs through `pack` (shared memory
    here; as they are for Ray's object store)."""

    def __init__(self, settings: Settings, tag: str, alive: Any,
                 deliver: Callable[[Any, tuple], bool] | None = None,
                 pack_outputs: Callable[[np.ndarray], Any] | None = None) -> None:
        from .devices import resolve
        from .model_stage import ModelCache, is_staged
        from .registry import load_extractors

        modules = {e.name: (e.module, e.params) for e in load_extractors(settings)
                   if e.runnable and is_staged(e.module)}
        self.device = resolve(settings.device)
        self.tag = tag
        self.alive = alive  # shared with the coordinator: when it last showed it was not stuck
        self.cache = ModelCache(modules, self.device)
        self.batch_size = max(1, settings.gpu_batch)
        self.waiting: deque[_Request] = deque()
        self.ready = threading.Condition()
        self.finishing: queue.Queue = queue.Queue(maxsize=2)
        self.started = time.monotonic()
        self.counts = {"batches": 0, "items": 0, "shared_batches": 0, "requests": 0, "out_of_memory": 0}
        self.deliver = deliver or _send
        self.pack_outputs = pack_outputs or (lambda outputs: pack(outputs, self.tag))

    # connections

    def accept(self, listener: Listener) -> None:
        while True:
            conn = listener.accept()
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn: Connection) -> None:
        import torch

        reply = (conn, threading.Lock())
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):  # that CPU worker is gone: its requests with it
                with self.ready:
                    for request in [r for r in self.waiting if r.reply is reply]:
                        request.failed = True
                        self.waiting.remove(request)
                return
            kind, request_id = message[0], message[1]
            try:
                if kind == "info":
                    _send(reply, ("info", request_id, self.info(message[2])))
                elif kind == "stats":
                    _send(reply, ("stats", request_id, self.stats()))
                elif kind == "forward":
                    items = torch.from_numpy(unpack(message[3], remove=False))
                    if not len(items):
                        _send(reply, ("done", request_id, ("inline", np.zeros((0,), np.float32))))
                        continue
                    self.add(reply, id(conn), request_id, message[2], items)
            except Exception as exc:  # noqa: BLE001 - the request fails, the worker goes on
                _send(reply, ("error", request_id, f"{type(exc).__name__}: {exc}"))

    def _held(self, name: str) -> None:
        if name not in self.cache.modules:
            raise LookupError(f"the GPU worker holds no model for {name!r} (held: "
                              f"{', '.join(sorted(self.cache.modules)) or 'none'})")

    def info(self, name: str) -> dict[str, Any]:
        self._held(name)
        return self.cache.get(name)[1]

    def add(self, reply: Any, client: Any, request_id: int, name: str, items: Any) -> None:
        """Queue `items` (a torch tensor in host memory) for the model of `name`."""
        self._held(name)
        if self.device.startswith("cuda"):
            items = items.pin_memory()  # copied to the device without a stop
        request = _Request(reply, client, request_id, name, items)
        with self.ready:
            self.counts["requests"] += 1
            self.waiting.append(request)
            self.ready.notify()

    def stats(self) -> dict[str, Any]:
        return {**self.counts, "device": self.device, "batch_size": self.batch_size,
                "seconds": time.monotonic() - self.started}

    # batches

    def run(self) -> None:
        import torch

        while True:
            batch = self._next_batch()
            name = batch[0][0].name
            out_of_memory = False
            try:
                model = self.cache.get(name)[0]
                module = self.cache.modules[name][0]
                # Each slice copied from pinned memory on its own (a cat on the host would not be pinned).
                inputs = torch.cat([r.items[start : start + n].to(self.device, non_blocking=True)
                                    for r, start, n in batch])
                with torch.inference_mode():
                    outputs = module.forward(model, inputs)
            except torch.cuda.OutOfMemoryError:
                out_of_memory = True  # handled below, once the exception has let go of its tensors
            except Exception as exc:  # noqa: BLE001
                self._fail(batch, f"{type(exc).__name__}: {exc}")
                continue
            if out_of_memory:
                inputs = outputs = None
                self._retry_smaller(batch)
                continue
            self.counts["batches"] += 1
            self.counts["items"] += sum(n for _, _, n in batch)
            self.counts["shared_batches"] += len({r.client for r, _, _ in batch}) > 1
            self.finishing.put((batch, outputs))

    def _next_batch(self) -> list[tuple[_Request, int, int]]:
        """Up to batch_size items of the oldest request's extractor and shape, oldest first."""
        with self.ready:
            while not self.waiting:
                self.alive.value = time.monotonic()  # idle, not stuck
                self.ready.wait(timeout=1.0)
            first = self.waiting[0]
            key = (first.name, tuple(first.items.shape[1:]))
            batch, room = [], self.batch_size
            for request in list(self.waiting):
                if (request.name, tuple(request.items.shape[1:])) != key:
                    continue
                take = min(room, len(request.items) - request.taken)
                batch.append((request, request.taken, take))
                request.taken += take
                room -= take
                if request.taken == len(request.items):
                    self.waiting.remove(request)
                if not room:
                    break
            return batch

    def _retry_smaller(self, batch: list[tuple[_Request, int, int]]) -> None:
        import torch

        torch.cuda.empty_cache()
        self.counts["out_of_memory"] += 1
        if self.batch_size == 1:
            self._fail(batch, "the device is out of memory even for one item")
            return
        self.batch_size //= 2
        with self.ready:
            for request, start, _ in reversed(batch):
                request.taken = min(request.taken, start)
                if request not in self.waiting:
                    self.waiting.appendleft(request)

    def _fail(self, batch: list[tuple[_Request, int, int]], reason: str) -> None:
        with self.ready:
            for request, _, _ in batch:
                if request in self.waiting:
                    self.waiting.remove(request)
        for request in {r for r, _, _ in batch}:
            if not request.failed:
                request.failed = True
                self.deliver(request.reply, ("error", request.request_id, reason))

    def finish(self) -> None:
        while True:
            batch, outputs = self.finishing.get()
            try:
                host = outputs.float().cpu().numpy()
            except Exception as exc:  # noqa: BLE001 - an asynchronous device error surfaces here
                self._fail(batch, f"{type(exc).__name__}: {exc}")
                continue
            self.alive.value = time.monotonic()  # a batch came back: not stuck
            position = 0
            for request, start, n in batch:
                if not request.failed:
                    if request.outputs is None:
                        request.outputs = np.empty((len(request.items), *host.shape[1:]), np.float32)
                    request.outputs[start : start + n] = host[position : position + n]
                    request.done += n
                    if request.done == len(request.items):
                        part, request.outputs = self.pack_outputs(request.outputs), None
                        if not self.deliver(request.reply, ("done", request.request_id, part)):
                            _release(part)  # nobody to read it
                position += n


def _send(reply: Any, message: tuple) -> bool:
    """Whether the message went (False: that CPU worker is gone)."""
    conn, lock = reply
    with lock:
        try:
            conn.send(message)
            return True
        except OSError:
            return False


def server_main(address: str, authkey: bytes, settings: Settings, coordinator: int, alive: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator decides what Ctrl-C means
    threading.Thread(target=_exit_with, args=(coordinator, os.path.dirname(address)), daemon=True).start()
    # Listening first: CPU workers connect (and wait) while torch and the models load.
    listener = Listener(address, "AF_UNIX", authkey=authkey)
    server = _Server(settings, tag_of(coordinator), alive)
    threading.Thread(target=server.accept, args=(listener,), daemon=True).start()
    threading.Thread(target=server.finish, daemon=True).start()
    server.run()


def _exit_with(coordinator: int, folder: str) -> None:
    """Go when the coordinator has gone (kill -9 runs no clean-up): GPU memory is not left held."""
    while os.getppid() == coordinator:
        time.sleep(0.5)
    shutil.rmtree(folder, ignore_errors=True)
    os._exit(0)


# -- the coordinator's side ---------------------------------------------------------------------

class GpuWorker:
    """The GPU worker process, started again (same address) when it dies."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        sweep_leftovers()
        # Private (0700): the socket lives here. Named after this process, like the shared memory.
        self.folder = tempfile.mkdtemp(prefix=f"muscat-gpu-{os.getpid()}-")
        self.address = os.path.join(self.folder, "socket")
        self.authkey = secrets.token_bytes(16)
        self.process: multiprocessing.process.BaseProcess | None = None
        self.alive = multiprocessing.get_context("spawn").Value("d", 0.0, lock=False)
        self.restarts = 0
        self.last_restart: str | None = None  # why it was last started again
        self.start()

    @property
    def connection(self) -> tuple[str, bytes, str]:
        """What a CPU worker needs to reach it (GpuClient's arguments)."""
        return self.address, self.authkey, tag_of(os.getpid())

    def start(self) -> None:
        if os.path.exists(self.address):
            os.unlink(self.address)
        context = multiprocessing.get_context("spawn")
        self.alive.value = time.monotonic() + STARTUP_GRACE_S  # importing torch is not being stuck
        self.process = context.Process(target=server_main, daemon=True, name="muscat-gpu",
                                       args=(self.address, self.authkey, self.settings, os.getpid(), self.alive))
        self.process.start()

    def keep_alive(self) -> bool:
        """Start it again if it died, or if it has been stuck for gpu_timeout seconds (a hung
        device or driver: it neither finished a batch nor waited idle); whether it had to."""
        assert self.process is not None
        stuck = time.monotonic() - self.alive.value
        if self.process.is_alive() and stuck <= self.settings.gpu_timeout:
            return False
        if self.process.is_alive():
            self.last_restart = f"it had shown no progress for {stuck:.0f} s (gpu_timeout)"
            self.process.kill()
        else:
            self.last_restart = f"it had stopped (exit status {self.process.exitcode})"
        self.process.join()
        self.restarts += 1
        self.start()
        return True

    def stats(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """What it has done (see _Server.stats), or None when it does not answer."""
        if self.process is None or not self.process.is_alive():
            return None
        try:
            with Client(self.address, "AF_UNIX", authkey=self.authkey) as conn:
                conn.send(("stats", 0))
                return conn.recv()[2] if conn.poll(timeout) else None
        except (OSError, EOFError):
            return None

    def stop(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.kill()
        if self.process is not None:
            self.process.join()
        shutil.rmtree(self.folder, ignore_errors=True)


def tag_of(coordinator: int) -> str:
    """The start of the names of a coordinator's shared memory blocks."""
    return f"muscat-{coordinator}-"


def sweep_leftovers() -> int:
    """Remove shared memory blocks and socket folders of coordinators that are gone: killed -9
    with their workers, nothing of theirs cleaned up after them. The number removed."""
    removed = 0
    for folder, pattern in (("/dev/shm", re.compile(r"muscat-(\d+)-[0-9a-f]+")),
                            (tempfile.gettempdir(), re.compile(r"muscat-gpu-(\d+)-.+"))):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            match = pattern.fullmatch(name)
            if match and not _alive(int(match.group(1))):
                path = os.path.join(folder, name)
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's
    return True


def wanted(settings: Settings, extractors: list[Any]) -> bool:
    """Whether a run with these extractors gets GPU workers: `gpu_worker` in muscat.toml, else
    whenever a staged GPU extractor runs and a device is a GPU."""
    from .devices import split
    from .model_stage import is_staged

    if not any(e.device == "gpu" and is_staged(e.module) for e in extractors):
        return False
    if settings.gpu_worker is not None:
        return settings.gpu_worker
    devices = split(settings.device)
    if all(device == "cpu" for device in devices):
        return False
    from .devices import resolve

    return any(resolve(device) != "cpu" for device in devices)


def merged_stats(stats: list[dict[str, Any] | None]) -> dict[str, Any]:
    """The work of several GPU workers as one summary, each one's own under `per_device`."""
    answered = [s for s in stats if s is not None]
    summary: dict[str, Any] = {key: sum(s[key] for s in answered)
                               for key in ("batches", "items", "shared_batches", "requests", "out_of_memory")}
    summary["device"] = ",".join(s["device"] for s in answered)
    summary["batch_size"] = min((s["batch_size"] for s in answered), default=0)
    summary["per_device"] = answered
    return summary
