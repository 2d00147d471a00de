"""Walking a library root: one listing per directory, with a fingerprint of its audio files.

The walker is the only part of a scan that lists the file system: one `lstat`/`stat` per
entry, the way `find -printf '%s %T@'` does. It reads no file contents, except the tags of
the files of a root new to the catalogue (below).

Each directory's audio files are summarised as a *listing*: the sorted records
`name, size, mtime_ns, dev, inode` packed into one bytes blob, and a 64-bit fingerprint of
that blob. The scanner stores the fingerprints; on a rescan it only unpacks the listings of
directories whose fingerprint changed. A rescan of an unchanged library therefore compares
one number per directory and never builds per-file Python objects.

The walk can run in a forked child process (`start_walk`) so that it overlaps the parent's
start-up work (importing duckdb, opening the catalogue). It must not import duckdb itself.

On the first scan of a root every file is new, and its tags are to be read: the forked walkers
then also read them (catalog/tags.py), each for its share of the folders, while the parent is
still starting, and hand them over with the listings (`Listing.tags`), packed, up to a budget of
TAG_BUDGET bytes in all; the scanner reads those of the folders beyond it after the walk. Told
so when they start (a new catalogue), they read them in the walk, opening each file once for
its stat and its tags; otherwise once the parent has said which roots are new. On a rescan the
walkers read no file.
"""

from __future__ import annotations

import os
import stat as stat_module
import sys
import time

from .blake2 import blake2b

TYPE_CHECKING = False  # typing's, without importing typing (a no-change rescan does not: console.py)
if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, Sequence

# Records inside a listing blob are NUL-separated fields: NUL is the one byte that cannot occur
# in a file name, so names with newlines, quotes or invalid UTF-8 round-trip exactly.
_FIELDS_PER_RECORD = 5
# Bytes of packed tags the walkers of one scan carry with their listings, all together (a few
# hundred bytes a tagged file): beyond it, folders are left for the scanner to read.
TAG_BUDGET = 64 * 2**20
_DIR_OPEN = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
# A file opened to be stat'ed and have its tags read: never wait on it (a FIFO put in its place).
_FILE_OPEN = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)


# The walker's results are plain classes, not dataclasses: a no-change rescan imports this module,
# and `import dataclasses` (which imports inspect, ast, dis, tokenize) took a third of that
# command's 60 ms. They are still messages, typed and named: a walker process pickles them.


class Listing:
    """The audio files directly inside one directory. Not changed once made (`with_tags` gives
    a copy); equal when their folder and files are, whatever tags they carry."""

    def __init__(self, dir: bytes, fingerprint: int, count: int, blob: bytes, key: tuple[int, int] = (0, 0),
                 tags: Any = None, parsed: ListingColumns | None = None) -> None:
        self.dir = dir  # path relative to the root, b"" for the root itself, b"/"-separated
        self.fingerprint = fingerprint  # signed 64-bit, to fit a DuckDB BIGINT
        self.count = count
        self.blob = blob
        self.key = key  # the folder's (dev, inode): one folder, one listing
        # The files' tags, read by the walker (a tags.Block), or None when they were not read.
        self.tags = tags
        # columns(), parsed by the walker: where it reads the tags, every file is new, and the
        # scanner, which would parse them after the walk, has all of them to handle.
        self.parsed = parsed

    def with_tags(self, tags: Any, parsed: ListingColumns) -> Listing:
        return Listing(self.dir, self.fingerprint, self.count, self.blob, self.key, tags, parsed)

    def _compared(self) -> tuple[Any, ...]:
        return self.dir, self.fingerprint, self.count, self.blob, self.key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Listing) and self._compared() == other._compared()

    def __hash__(self) -> int:
        return hash(self._compared())

    def __repr__(self) -> str:
        return f"Listing(dir={self.dir!r}, fingerprint={self.fingerprint}, count={self.count}, key={self.key})"

    def names(self) -> list[bytes]:
        return self.blob.split(b"\0")[0:-1:_FIELDS_PER_RECORD]

    def columns(self) -> ListingColumns:
        """The records column by column: one list or array per field, no object per file."""
        if self.parsed is not None:
            return self.parsed
        from array import array

        fields = self.blob.split(b"\0")[:-1]
        step = _FIELDS_PER_RECORD
        return ListingColumns(
            fields[0::step], *(array(code, map(int, fields[i::step])) for i, code in enumerate("QqQQ", 1))
        )


class ListingColumns:
    """A listing's files, field by field, in the listing's order."""

    def __init__(self, names: list[bytes], sizes: Any, mtimes_ns: Any, devs: Any, inodes: Any) -> None:
        self.names = names
        self.sizes = sizes  # array('Q')
        self.mtimes_ns = mtimes_ns  # array('q')
        self.devs = devs  # array('Q')
        self.inodes = inodes  # array('Q')

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ListingColumns) and vars(self) == vars(other)

    __hash__ = None  # type: ignore[assignment]  # lists and arrays: not hashable


class Problem:
    """A file or folder below the root that the walk could not take as it is."""

    def __init__(self, path: bytes, reason: str) -> None:
        self.path = path  # relative to the root
        self.reason = reason

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Problem) and (self.path, self.reason) == (other.path, other.reason)

    def __hash__(self) -> int:
        return hash((self.path, self.reason))

    def __repr__(self) -> str:
        return f"Problem({self.path!r}, {self.reason!r})"


class Walk:
    """Everything one walk of one root found."""

    def __init__(self, root: str, recursive: bool = True) -> None:
        self.root = root
        self.listings: list[Listing] = []
        self.problems: list[Problem] = []
        # Directories that could not be listed: nothing below them may be marked missing.
        self.unreadable: list[bytes] = []
        # Set when the root itself could not be walked (absent, not a folder, unreadable).
        self.offline_reason: str | None = None
        # False when only the root folder's own files were listed, not its subfolders.
        self.recursive = recursive
        # Files left out because they may still be being written: neither new nor gone yet.
        self.deferred: list[bytes] = []
        # Bytes of packed tags its listings carry (see walk()'s `tag_budget`).
        self.tag_bytes = 0

    def __repr__(self) -> str:
        return (f"Walk({self.root!r}, {len(self.listings)} folders, {len(self.problems)} problems, "
                f"offline_reason={self.offline_reason!r})")

    @property
    def file_count(self) -> int:
        return sum(listing.count for listing in self.listings)


def fingerprint(blob: bytes) -> int:
    return int.from_bytes(blake2b(blob, digest_size=8).digest(), "little", signed=True)


def pack_listing(
    dir_rel: bytes, records: list[tuple[bytes, int, int, int, int]], key: tuple[int, int] = (0, 0)
) -> Listing:
    records.sort()
    blob = b"".join(b"%s\0%d\0%d\0%d\0%d\0" % record for record in records)
    return Listing(dir_rel, fingerprint(blob), len(records), blob, key)


def _pack_tagged_listing(dir_rel: bytes, records: list[tuple[Any, ...]], key: tuple[int, int]) -> Listing:
    """pack_listing() of records that end with each file's tags, read in the walk: the listing
    carries them as a Block, and its columns parsed."""
    from array import array
    from operator import itemgetter

    from .tags import pack_block

    records.sort(key=itemgetter(0))  # the name: unique in a folder
    names, sizes, mtimes, devs, inodes, tags = zip(*records)
    listing = pack_listing(dir_rel, list(zip(names, sizes, mtimes, devs, inodes)), key)
    parsed = ListingColumns(list(names), array("Q", sizes), array("q", mtimes), array("Q", devs), array("Q", inodes))
    return listing.with_tags(pack_block(tags), parsed)


def _stat_and_tags(entry: os.DirEntry, name: bytes, dir_fd: int, tags: Any) -> tuple[os.stat_result, Any] | None:
    """A regular file's stat and tags (tags.read_open's result; `tags` is catalog.tags),
    through one open of it instead of a stat and then an open: None when it is gone. One that
    cannot be opened is stat'ed, its tags a problem saying why."""
    try:
        fd = os.open(name, _FILE_OPEN, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return entry.stat(), ([], tags.unreadable(exc))
    try:
        st = os.fstat(fd)
        return st, tags.read_open(fd, name, st.st_size) if stat_module.S_ISREG(st.st_mode) else None
    finally:
        os.close(fd)


def walk(
    root: str,
    extensions: Iterable[str],
    skip_dirs: Iterable[str] = (),
    progress: Callable[[int, int], None] | None = None,
    top_folders: set[bytes] | None = None,
    root_files: bool = True,
    defer: Callable[[bytes, os.stat_result], bool] | None = None,
    tag_budget: int | None = None,
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

    With `tag_budget`, the walk also reads the files' tags (for a root new to the catalogue),
    folder by folder while the packed tags stay within that many bytes: its listings then carry
    them (as read_tags_of() would have them) and their columns parsed. A file seen in its
    folder as a regular file (not a link) is opened once, for its stat and its tags.
    """
    result = Walk(root=root, recursive=top_folders is None or bool(top_folders))
    if tag_budget is not None:
        from . import tags
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
    fsencode = os.fsencode
    seen_dirs = {(root_st.st_dev, root_st.st_ino)}
    stack: list[bytes] = [b""]
    keys = {b"": (root_st.st_dev, root_st.st_ino)}
    files_seen = 0
    next_report = time.monotonic() + 0.2
    while stack:
        rel = stack.pop()
        path = root_b + b"/" + rel if rel else root_b
        records: list[tuple[Any, ...]] = []
        reading = tag_budget is not None and result.tag_bytes < tag_budget
        # Listed through an open descriptor: each entry's stat then looks up one name relative
        # to it, not the whole path again (entries come as str, encoded back exactly below).
        try:
            dir_fd = os.open(path, _DIR_OPEN)
            try:
                entries = os.scandir(dir_fd)
            except BaseException:
                os.close(dir_fd)
                raise
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
        try:
            with entries:
                for entry in entries:
                    if entry.name[:1] == ".":
                        continue
                    name = fsencode(entry.name)
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
                    tagged = None
                    try:
                        if reading and entry.is_file(follow_symlinks=False):
                            found = _stat_and_tags(entry, name, dir_fd, tags)
                            if found is None:
                                continue  # deleted since it was listed
                            st, tagged = found
                        else:
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
                    if defer is not None and defer(path + b"/" + name, st):
                        result.deferred.append(child)
                        continue
                    if not reading:
                        records.append((name, st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino))
                        continue
                    if tagged is None:  # a link, opened by its name
                        try:
                            tagged = tags.read(name, dir_fd)
                        except tags.Vanished:
                            continue
                    records.append((name, st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino, tagged))
        finally:
            os.close(dir_fd)
        if records:
            key = keys.get(rel, (0, 0))
            if reading:
                listing = _pack_tagged_listing(rel, records, key)
                result.tag_bytes += listing.tags.nbytes
            else:
                listing = pack_listing(rel, records, key)
            result.listings.append(listing)
            files_seen += len(records)
        if progress is not None and time.monotonic() >= next_report:
            progress(files_seen, len(seen_dirs))
            next_report = time.monotonic() + 0.2
    return result


def read_tags_of(walk: Walk, budget: int = TAG_BUDGET) -> int:
    """Read the tags of the files of `walk`'s listings, folder by folder, while the packed
    tags stay within `budget` bytes; the listings read carry them. Returns the bytes used."""
    from . import tags

    root_b = os.fsencode(walk.root)
    used = 0
    for i, listing in enumerate(walk.listings):
        if used >= budget:
            break
        folder = root_b + b"/" + listing.dir if listing.dir else root_b
        parsed = listing.columns()
        block = tags.read_block(folder, parsed.names)
        used += block.nbytes
        walk.listings[i] = listing.with_tags(block, parsed)
    return used


class _SharedCounts:
    """Files and folders found by each walker process, in shared memory, for one progress line."""

    def __init__(self, slots: int) -> None:
        # Imported here, like pickle and signal below: a walk in this process (a no-change
        # rescan of a small library) needs none of the forked walkers' modules.
        import mmap

        self._buf = mmap.mmap(-1, 16 * slots)
        self._slots = slots

    def set(self, slot: int, files: int, folders: int) -> None:
        import struct

        struct.pack_into("qq", self._buf, 16 * slot, files, folders)

    def total(self) -> tuple[int, int]:
        import struct

        counts = [struct.unpack_from("qq", self._buf, 16 * i) for i in range(self._slots)]
        return sum(c[0] for c in counts), sum(c[1] for c in counts)


class BackgroundWalk:
    """Walks running in forked children; `result()` collects and merges them."""

    inline = False

    def __init__(self, roots: list[str], children: list[tuple[int, int, int | None]]) -> None:
        self._roots = roots
        # (pid, read end of its pipe, write end of the pipe that tells it whose tags to read),
        # for each child not yet collected.
        self._children = children

    def decide(self, read_tags: Sequence[bool]) -> None:
        """Tell walkers started without `read_tags` for which roots to read tags (a root new to
        the catalogue), once the caller knows. Until then they wait, their walk done."""
        flags = b"".join(b"1" if r else b"0" for r in read_tags)
        for i, (pid, fd, decision) in enumerate(self._children):
            if decision is None:
                continue
            try:
                os.write(decision, flags)
            except OSError:
                pass  # the walker is gone: result() says so
            os.close(decision)
            self._children[i] = (pid, fd, None)

    def result(self) -> list[Walk]:
        import pickle

        self.decide([False] * len(self._roots))  # walkers still waiting read no tags
        parts: list[list[Walk]] = []
        while self._children:
            pid, fd, _ = self._children[0]
            with os.fdopen(fd, "rb") as pipe:
                data = pipe.read()
            _, status = os.waitpid(pid, 0)
            self._children.pop(0)
            if not data or os.waitstatus_to_exitcode(status) != 0:
                self.abandon()
                raise RuntimeError(f"a folder walker process failed (exit status {status})")
            outcome = pickle.loads(data)
            if isinstance(outcome, BaseException):
                self.abandon()
                raise outcome
            parts.append(outcome)
        return [_merge(root, [part[i] for part in parts]) for i, root in enumerate(self._roots)]

    def abandon(self) -> None:
        """Stop and collect the walkers whose result is not wanted (the scan failed)."""
        import signal

        while self._children:
            pid, fd, decision = self._children.pop()
            for end in (fd, decision):
                if end is not None:
                    os.close(end)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)


class InlineWalk:
    """Walks done in this process (or already done), with BackgroundWalk's interface."""

    inline = True  # done, in this process

    def __init__(self, walks: list[Walk]) -> None:
        self._walks = walks

    def decide(self, read_tags: Sequence[bool]) -> None:
        """An inline walk reads no tags: the scanner reads them after its transaction."""

    def abandon(self) -> None:
        pass

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
    read_tags: Sequence[bool] | None = None,
) -> BackgroundWalk | InlineWalk:
    """Walk `roots` in forked children (`processes`, else one per core up to 4), or in this
    process.

    Each child takes every n-th top-level folder of each root; the first also lists the
    roots' own files. The children's results are merged per root. Shallow walks
    (`recursive=False`) and deferring walks run in this process.

    Forked children also read the tags of the roots for which `read_tags` is true (see
    read_tags_of()); without `read_tags` they wait, their walk done, for the caller's `decide()`
    (or `result()`, which means none). Walks in this process read no tags.
    """
    extensions = list(extensions)
    skip_dirs = list(skip_dirs)
    # Forking a process that may run native threads (duckdb's, torch's) risks a child stuck on
    # a lock another thread held: only fork while neither is loaded, as in a fresh CLI process.
    if (not hasattr(os, "fork") or "duckdb" in sys.modules or "torch" in sys.modules
            or not recursive or defer is not None):
        top = None if recursive else set()
        return InlineWalk([walk(r, extensions, skip_dirs, progress, top_folders=top, defer=defer) for r in roots])
    n = processes or max(1, min(4, os.cpu_count() or 1))
    import pickle  # noqa: F401  (for the children, which hand their walks back pickled, and for result())

    tops = [_top_folders(r) for r in roots]
    counts = _SharedCounts(n)
    children: list[tuple[int, int, int | None]] = []
    for slot in range(n):
        reader, writer = os.pipe()
        decision_reader, decision_writer = os.pipe() if read_tags is None else (None, None)
        pid = os.fork()
        if pid == 0:  # child
            os.close(reader)
            if decision_writer is not None:
                os.close(decision_writer)
            for _, other_reader, other_decision in children:  # the other walkers' pipe ends
                os.close(other_reader)
                if other_decision is not None:
                    os.close(other_decision)
            _walk_in_child(slot, n, roots, tops, extensions, skip_dirs, counts, progress, writer,
                           read_tags, decision_reader)
        os.close(writer)
        if decision_reader is not None:
            os.close(decision_reader)
        children.append((pid, reader, decision_writer))
    return BackgroundWalk(roots, children)


def _walk_in_child(  # type: ignore[no-untyped-def]
    slot, n, roots, tops, extensions, skip_dirs, counts, progress, writer, read_tags, decision
) -> None:
    import gc
    import pickle

    # A walker makes no reference cycles, and lives for one walk: a collection would only walk
    # the parent's objects, copying their pages from the parent's as it touches them.
    gc.disable()
    code = 0
    try:
        def report(files: int, folders: int) -> None:
            counts.set(slot, files, folders)
            if progress is not None and slot == 0:
                progress(*counts.total())

        try:
            budget = TAG_BUDGET // n
            walks = []
            for i, (root, top) in enumerate(zip(roots, tops)):
                # Told whose tags to read: read them in the walk (one open a file, for its stat too).
                reading = read_tags is not None and read_tags[i] and budget > 0
                walks.append(walk(root, extensions, skip_dirs, report, top_folders=set(top[slot::n]),
                                  root_files=slot == 0, tag_budget=budget if reading else None))
                budget -= walks[-1].tag_bytes
            if read_tags is None:  # wait for the parent to say (end of file: read none)
                flags = b""
                while len(flags) < len(roots):
                    chunk = os.read(decision, len(roots) - len(flags))
                    if not chunk:
                        break
                    flags += chunk
                os.close(decision)
                decided = [flags[i : i + 1] == b"1" for i in range(len(roots))]
                for w, wanted in zip(walks, decided):
                    if wanted and budget > 0 and w.offline_reason is None:
                        budget -= read_tags_of(w, budget)
            payload = pickle.dumps(walks, protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException as exc:  # hand the error to the parent
            payload = pickle.dumps(RuntimeError(f"walking failed: {exc!r}"))
        with os.fdopen(writer, "wb") as pipe:
            pipe.write(payload)
    except BaseException:
        code = 1
    finally:
        os._exit(code)
