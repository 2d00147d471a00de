"""Walking a library root: one listing per directory, with a fingerprint of its audio files.

The walker is the only part of a scan that touches the file system, and it reads no file
contents: one `lstat`/`stat` per entry, the way `find -printf '%s %T@'` does.

Each directory's audio files are summarised as a *listing*: the sorted records
`name, size, mtime_ns, dev, inode` packed into one bytes blob, and a 64-bit fingerprint of
that blob. The scanner stores the fingerprints; on a rescan it only unpacks the listings of
directories whose fingerprint changed. A rescan of an unchanged library therefore compares
one number per directory and never builds per-file Python objects.

The walk can run in a forked child process (`start_walk`) so that it overlaps the parent's
start-up work (importing duckdb, opening the catalogue). It must not import duckdb itself.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import pickle
import stat as stat_module
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

# Records inside a listing blob are NUL-separated fields: NUL is the one byte that cannot occur
# in a file name, so names with newlines, quotes or invalid UTF-8 round-trip exactly.
_FIELDS_PER_RECORD = 5


@dataclass(frozen=True)
class FileStat:
    name: bytes
    size: int
    mtime_ns: int
    dev: int
    inode: int


@dataclass(frozen=True)
class Listing:
    """The audio files directly inside one directory."""

    dir: bytes  # path relative to the root, b"" for the root itself, b"/"-separated
    fingerprint: int  # signed 64-bit, to fit a DuckDB BIGINT
    count: int
    blob: bytes
    key: tuple[int, int] = (0, 0)  # the folder's (dev, inode): one folder, one listing

    def files(self) -> list[FileStat]:
        fields = self.blob.split(b"\0")
        return [
            FileStat(fields[i], int(fields[i + 1]), int(fields[i + 2]), int(fields[i + 3]), int(fields[i + 4]))
            for i in range(0, len(fields) - 1, _FIELDS_PER_RECORD)
        ]


@dataclass(frozen=True)
class Problem:
    path: bytes  # relative to the root
    reason: str


@dataclass
class Walk:
    """Everything one walk of one root found."""

    root: str
    listings: list[Listing] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    # Directories that could not be listed: nothing below them may be marked missing.
    unreadable: list[bytes] = field(default_factory=list)
    # Set when the root itself could not be walked (absent, not a folder, unreadable).
    offline_reason: str | None = None
    # False when only the root folder's own files were listed, not its subfolders.
    recursive: bool = True
    # Files left out because they may still be being written: neither new nor gone yet.
    deferred: list[bytes] = field(default_factory=list)

    @property
    def file_count(self) -> int:
        return sum(listing.count for listing in self.listings)


def fingerprint(blob: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "little", signed=True)


def pack_listing(
    dir_rel: bytes, records: list[tuple[bytes, int, int, int, int]], key: tuple[int, int] = (0, 0)
) -> Listing:
    records.sort()
    blob = b"".join(b"%s\0%d\0%d\0%d\0%d\0" % record for record in records)
    return Listing(dir_rel, fingerprint(blob), len(records), blob, key)


def walk(
    root: str,
    extensions: Iterable[str],
    skip_dirs: Iterable[str] = (),
    progress: Callable[[int, int], None] | None = None,
    top_folders: set[bytes] | None = None,
    root_files: bool = True,
    defer: Callable[[bytes, os.stat_result], bool] | None = None,
) -> Walk:
    """List every audio file under `root`.

    A split walk gives each process a share of the root's subfolders (`top_folders`), and
    one of them the root's own files (`root_files`); `top_folders=set()` lists the root folder
    alone. `defer(path, stat)` says which files may still be being written: they are listed in
    `deferred` instead.

    Follows symbolic links (a library assembled from links is common) but enters each
    directory once, so link loops end. Hidden files and folders are skipped, and so are
    `skip_dirs` (the catalogue's own artifacts folder when it lies inside a root).
    `progress(files, folders)` is called every 0.2 s or so.
    """
    result = Walk(root=root, recursive=top_folders is None or bool(top_folders))
    wanted = {e.lower().lstrip(".").encode() for e in extensions}
    root_b = os.fsencode(root)
    try:
        root_st = os.stat(root_b)
    except FileNotFoundError:
        result.offline_reason = "does not exist (unmounted or removed?)"
        return result
    except OSError as exc:
        result.offline_reason = f"cannot be read ({exc.strerror})"
        return result
    if not stat_module.S_ISDIR(root_st.st_mode):
        result.offline_reason = "is not a folder"
        return result

    skipped = set()
    for d in skip_dirs:
        try:
            st = os.stat(d)
            skipped.add((st.st_dev, st.st_ino))
        except OSError:
            pass
    seen_dirs = {(root_st.st_dev, root_st.st_ino)}
    stack: list[bytes] = [b""]
    keys = {b"": (root_st.st_dev, root_st.st_ino)}
    files_seen = 0
    next_report = time.monotonic() + 0.2
    while stack:
        rel = stack.pop()
        path = root_b + b"/" + rel if rel else root_b
        records: list[tuple[bytes, int, int, int, int]] = []
        try:
            entries = os.scandir(path)
        except FileNotFoundError:
            if not rel:
                result.offline_reason = "vanished during the scan"
                return result
            # The folder vanished after its parent was listed: its files are gone too.
            result.problems.append(Problem(rel, "folder vanished during the scan"))
            continue
        except OSError as exc:
            if not rel:
                result.offline_reason = f"cannot be read ({exc.strerror})"
                return result
            result.problems.append(Problem(rel, f"folder cannot be read: {exc.strerror}"))
            result.unreadable.append(rel)
            continue
        with entries:
            for entry in entries:
                name = entry.name
                if name[:1] == b".":
                    continue
                child = rel + b"/" + name if rel else name
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                if not rel and (top_folders is not None and is_dir and name not in top_folders
                                or not root_files and not is_dir):
                    continue  # another process's share of a split walk
                if is_dir:
                    try:
                        st = entry.stat()
                    except OSError as exc:
                        result.problems.append(Problem(child, f"folder cannot be read: {exc.strerror}"))
                        result.unreadable.append(child)
                        continue
                    key = (st.st_dev, st.st_ino)
                    if key in seen_dirs:
                        if entry.is_symlink():
                            result.problems.append(Problem(child, "symbolic link to a folder already scanned (loop?), skipped"))
                        continue
                    if key in skipped:
                        continue
                    seen_dirs.add(key)
                    keys[child] = key
                    stack.append(child)
                    continue
                if name.rpartition(b".")[2].lower() not in wanted:
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    if entry.is_symlink():
                        result.problems.append(Problem(child, "broken symbolic link"))
                    # else: deleted between listing and stat; absent is the truth now.
                    continue
                except OSError as exc:
                    result.problems.append(Problem(child, f"cannot stat: {exc.strerror}"))
                    continue
                if not stat_module.S_ISREG(st.st_mode):
                    continue
                if defer is not None and defer(entry.path, st):
                    result.deferred.append(child)
                    continue
                records.append((name, st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino))
        if records:
            result.listings.append(pack_listing(rel, records, keys.get(rel, (0, 0))))
            files_seen += len(records)
        if progress is not None and time.monotonic() >= next_report:
            progress(files_seen, len(seen_dirs))
            next_report = time.monotonic() + 0.2
    return result


class _SharedCounts:
    """Files and folders found by each walker process, in shared memory, for one progress line."""

    def __init__(self, slots: int) -> None:
        self._buf = mmap.mmap(-1, 16 * slots)
        self._slots = slots

    def set(self, slot: int, files: int, folders: int) -> None:
        struct.pack_into("qq", self._buf, 16 * slot, files, folders)

    def total(self) -> tuple[int, int]:
        counts = [struct.unpack_from("qq", self._buf, 16 * i) for i in range(self._slots)]
        return sum(c[0] for c in counts), sum(c[1] for c in counts)


class BackgroundWalk:
    """Walks running in forked children; `result()` collects and merges them."""

    def __init__(self, roots: list[str], children: list[tuple[int, int]]) -> None:
        self._roots = roots
        self._children = children  # (pid, read end of its pipe)

    def result(self) -> list[Walk]:
        parts: list[list[Walk]] = []
        for pid, fd in self._children:
            with os.fdopen(fd, "rb") as pipe:
                data = pipe.read()
            _, status = os.waitpid(pid, 0)
            if not data or os.waitstatus_to_exitcode(status) != 0:
                raise RuntimeError(f"a folder walker process failed (exit status {status})")
            outcome = pickle.loads(data)
            if isinstance(outcome, BaseException):
                raise outcome
            parts.append(outcome)
        return [_merge(root, [part[i] for part in parts]) for i, root in enumerate(self._roots)]


class _InlineWalk:
    def __init__(self, walks: list[Walk]) -> None:
        self._walks = walks

    def result(self) -> list[Walk]:
        return self._walks


def _merge(root: str, parts: list[Walk]) -> Walk:
    """One root's walk from its parts; a folder reached by two paths keeps the first in order."""
    merged = Walk(root=root)
    for part in parts:
        if part.offline_reason is not None:
            merged.offline_reason = part.offline_reason
        merged.problems += part.problems
        merged.unreadable += part.unreadable
        merged.deferred += part.deferred
    keys: set[tuple[int, int]] = set()
    for listing in sorted((x for part in parts for x in part.listings), key=lambda x: x.dir):
        if listing.key in keys and listing.key != (0, 0):
            merged.problems.append(Problem(listing.dir, "folder already scanned under another path (link?), skipped"))
            continue
        keys.add(listing.key)
        merged.listings.append(listing)
    return merged


def _top_folders(root: str) -> list[bytes]:
    try:
        with os.scandir(os.fsencode(root)) as entries:
            return sorted(e.name for e in entries if e.name[:1] != b"." and e.is_dir())
    except OSError:
        return []


def start_walk(
    roots: list[str],
    extensions: Iterable[str],
    skip_dirs: Iterable[str] = (),
    progress: Callable[[int, int], None] | None = None,
    processes: int | None = None,
    recursive: bool = True,
    defer: Callable[[bytes, os.stat_result], bool] | None = None,
) -> BackgroundWalk | _InlineWalk:
    """Walk `roots` in forked children (one per core, up to 4), or in this process.

    Each child takes every n-th top-level folder of each root; the first also lists the
    roots' own files. The children's results are merged per root. Shallow walks
    (`recursive=False`) and deferring walks run in this process.
    """
    extensions = list(extensions)
    skip_dirs = list(skip_dirs)
    # Forking a process that may run native threads (duckdb's, torch's) risks a child stuck on
    # a lock another thread held: only fork while neither is loaded, as in a fresh CLI process.
    if (not hasattr(os, "fork") or "duckdb" in sys.modules or "torch" in sys.modules
            or not recursive or defer is not None):
        top = None if recursive else set()
        return _InlineWalk([walk(r, extensions, skip_dirs, progress, top_folders=top, defer=defer) for r in roots])
    n = processes or max(1, min(4, os.cpu_count() or 1))
    tops = [_top_folders(r) for r in roots]
    counts = _SharedCounts(n)
    children = []
    for slot in range(n):
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            os.close(reader)
            _walk_in_child(slot, n, roots, tops, extensions, skip_dirs, counts, progress, writer)
        os.close(writer)
        children.append((pid, reader))
    return BackgroundWalk(roots, children)


def _walk_in_child(  # type: ignore[no-untyped-def]
    slot, n, roots, tops, extensions, skip_dirs, counts, progress, writer
) -> None:
    code = 0
    try:
        def report(files: int, folders: int) -> None:
            counts.set(slot, files, folders)
            if progress is not None and slot == 0:
                progress(*counts.total())

        try:
            walks = [
                walk(root, extensions, skip_dirs, report, top_folders=set(top[slot::n]), root_files=slot == 0)
                for root, top in zip(roots, tops)
            ]
            payload = pickle.dumps(walks, protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException as exc:  # hand the error to the parent
            payload = pickle.dumps(RuntimeError(f"walking failed: {exc!r}"))
        with os.fdopen(writer, "wb") as pipe:
            pipe.write(payload)
    except BaseException:
        code = 1
    finally:
        os._exit(code)
