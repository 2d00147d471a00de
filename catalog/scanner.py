"""Reconciling library roots with the catalogue: `muscat scan`.

A scan walks each root (catalog/walker.py), then in one write batch compares what it found
with the catalogue:

1. Folders whose listing fingerprint is unchanged are done: a rescan of an unchanged library
   reads no file contents and handles no per-file rows.
2. In changed folders, each file is unchanged, changed (size, mtime or inode differ),
   new, or gone.
3. A new file may be a gone (or earlier missing) file under another name: matched first by
   `dev, inode, size, mtime_ns`, then by size plus a hash of its first and last MiB, computed
   only for new files whose size matches a candidate with a known hash. A moved file keeps its
   row, and so its audio and features.
4. Remaining new files are added; remaining gone files are marked missing, never deleted.
5. Tags (catalog/tags.py) are read for the present files of the scanned folders that are new or
   changed since their tags were last read, not inside a write transaction (unless the caller
   asks for that for a few files: `watch`, for the change it hands over). On the first
   scan of a root, where every file is new, the walker processes read them once they have
   walked their share, while this process is still starting (catalog/walker.py), and they are
   written with the files, in the reconciliation's transaction: stored as read at its time,
   as the files' `changed_at` is. All others (and those beyond the walkers' budget) are read
   after the reconciliation's transaction and written in short batches of their own. An
   unchanged folder's files are not read: a rescan of an unchanged library still reads no
   file contents.

A root that is absent, unreadable or suddenly empty is reported as offline and left alone:
its files are not marked missing. Folders that cannot be read are reported, and the files
below them keep their state.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing's, without importing typing (a no-change rescan does not: console.py)

# Only what a no-change rescan needs is imported here (it opens no catalogue: see
# catalog/scan_state.py); tags, identity hashing, the clock and the database come when used.
from . import scan_state, walker

if TYPE_CHECKING:
    from datetime import datetime
    from pathlib import Path
    from typing import Any, Callable, Iterable

    import duckdb

    from .config import Settings
    from .database import Database


class ScanReport:
    """What a scan found and did. A plain class, as the walker's results are (a no-change rescan
    makes one, and does not import dataclasses: see catalog/walker.py)."""

    def __init__(self, unchanged: int = 0, scanned_at: datetime | None = None, from_state: bool = False) -> None:
        self.added = 0
        self.changed = 0
        self.moved = 0
        self.missing = 0
        self.unchanged = unchanged
        # (absolute path, reason) for everything the scan could not handle.
        self.problems: list[tuple[str, str]] = []
        # (root, reason) for roots left alone because they look offline.
        self.offline: list[tuple[str, str]] = []
        # When the scan wrote: files it added or changed (moved with a new stat) have `changed_at`
        # equal to it. None when it wrote nothing (from_state).
        self.scanned_at = scanned_at
        # Absolute paths of files left out as possibly still being written.
        self.deferred: list[str] = []
        # True when the walk matched the scan state and the catalogue was as the last scan left it:
        # nothing was written and the catalogue was not opened (catalog/scan_state.py).
        self.from_state = from_state

    def __repr__(self) -> str:
        return f"ScanReport({self.summary()}, from_state={self.from_state})"

    @property
    def errors(self) -> int:
        return len(self.problems) + len(self.offline)

    def summary(self) -> str:
        """The counts as `muscat scan` prints them: "3 added, 0 changed, ..."."""
        return ", ".join(f"{n:,} {name}" for name, n in self.to_json().items())

    def to_json(self) -> dict[str, int]:
        return {
            "added": self.added,
            "changed": self.changed,
            "moved": self.moved,
            "missing": self.missing,
            "unchanged": self.unchanged,
            "errors": self.errors,
        }


def normalise_root(path: str | os.PathLike[str]) -> str:
    """Absolute, without `..` or a trailing slash; symlinks are kept as the user named them
    (and the same folder reached by another name is recognised: see _Reconcile._locate)."""
    return os.path.normpath(os.path.abspath(os.path.expanduser(os.fspath(path))))


# Below this many files (as the scan state counts them) a no-change rescan walks in this process.
INLINE_WALK_FILES = 5_000


def scan(
    db: Database,
    paths: Iterable[str | os.PathLike[str]],
    settings: Settings,
    progress: Callable[[int, int], None] | None = None,
    allow_empty: bool = False,
    recursive: bool = True,
    defer: Callable[[bytes, os.stat_result], bool] | None = None,
    inline_tags: int = 0,
) -> ScanReport:
    """Add `paths` as roots (or rescan them, or a folder inside a root) and reconcile them.

    A root that is empty although the catalogue holds files from it is left alone, as an
    unmounted drive would be, unless `allow_empty` says it was emptied on purpose; a folder
    inside a present root that no longer exists was deleted, and its files are missing.
    `recursive=False` looks at the folders' own files only; `defer(path, stat)` names files
    that may still be being written, which are neither added nor marked missing yet. Up to
    `inline_tags` files' tags are read and written in the reconciliation's transaction (a kill
    while reading them undoes that transaction; the next scan does it again).
    """
    roots = list(dict.fromkeys(normalise_root(p) for p in paths))
    # The scan state can stand for the catalogue only for a whole, plain scan, as the CLI's.
    stateful = recursive and defer is None and inline_tags == 0
    state_key = scan_state.key(roots, settings) if stateful else None
    walks = None
    if state_key is not None:
        report, walks = _against_state(db.path, roots, settings, state_key, progress)
        if report is not None:
            return report
    return _scan(db, roots, settings, progress, allow_empty, recursive, defer, inline_tags, walks, state_key)


def answer_from_state(paths: Iterable[str | os.PathLike[str]], settings: Settings) -> ScanReport | None:
    """A plain rescan (as `muscat scan PATH...`) of a small library, answered from the scan
    state alone when the walk finds nothing changed: the catalogue is not opened, as in `scan`.
    None when the scan must run (no state for these roots and settings, a change, a library of
    INLINE_WALK_FILES or more). The console script asks this before it loads the command line
    (console.py)."""
    roots = list(dict.fromkeys(normalise_root(p) for p in paths))
    report, _ = _against_state(settings.db_path, roots, settings, scan_state.key(roots, settings), None,
                               small_only=True)
    return report


def _against_state(
    db_path: Path,
    roots: list[str],
    settings: Settings,
    state_key: dict[str, Any],
    progress: Callable[[int, int], None] | None,
    small_only: bool = False,
) -> tuple[ScanReport | None, list[walker.Walk] | None]:
    """Walk and compare with the scan state: (the report, the walks) when nothing changed,
    (None, the walks) for the normal path to reconcile, (None, None) when there is no state
    (or, with `small_only`, the library is not small)."""
    state = scan_state.load(db_path, state_key)
    if state is None:
        return None, None
    # The roots are all known to the catalogue (the state's scan registered them): no tags to
    # read in the walk. Walked as a rescan would be, in this process when the library is small
    # (forking walkers costs more than they save there).
    skip = [str(settings.artifacts_dir)]
    if sum(files for files, _ in state["walk"]) < INLINE_WALK_FILES:
        walks = [walker.walk(r, settings.audio_extensions, skip, progress) for r in roots]
    elif small_only:
        return None, None
    else:
        walks = walker.start_walk(roots, settings.audio_extensions, skip, progress,
                                  processes=min(4, os.cpu_count() or 1), read_tags=[False] * len(roots)).result()
    summary = scan_state.walk_summary(walks)
    if summary is None or summary != state["walk"]:
        return None, walks
    scan_state.save(db_path, state_key, summary, state["roots"], scan_state.stamp(), state["catalogue"])
    return ScanReport(unchanged=sum(files for files, _ in summary), from_state=True), walks


def _scan(
    db: Database,
    roots: list[str],
    settings: Settings,
    progress: Callable[[int, int], None] | None,
    allow_empty: bool,
    recursive: bool,
    defer: Callable[[bytes, os.stat_result], bool] | None,
    inline_tags: int,
    walks: list[walker.Walk] | None,
    state_key: dict[str, Any] | None,
) -> ScanReport:
    """The normal path: walk (unless `walks` were walked already), reconcile in the catalogue,
    read the due tags; then save the scan state (`state_key`) when all went cleanly, or remove
    the one there is, which no longer holds."""
    from . import tags

    # One walker per core, up to 4, also while this process creates a catalogue: the walkers
    # then read every file's tags, more work than creating it (with a core left to this process
    # the scan ended later); and for that, up to as many as the pool that reads tags after the
    # walk would start (`workers`, 8 at most).
    cores = os.cpu_count() or 1
    created = not db.path.exists()
    walkers = min(4, cores)
    if created:
        walkers = max(walkers, min(8, cores, settings.workers or cores))
    # The walkers read the tags of roots new to the catalogue: for a new catalogue that is known
    # now, else once the catalogue has said which roots it knows (`decide`, below).
    if walks is None:
        walking = walker.start_walk(
            roots, settings.audio_extensions, [str(settings.artifacts_dir)], progress, processes=walkers,
            recursive=recursive, defer=defer,
            read_tags=[not _inside(r, [o for o in roots if o != r]) for r in roots] if created else None,
        )
    else:
        walking = walker.InlineWalk(walks)
    # While the child walks: load duckdb, create or upgrade the catalogue, and load pyarrow when
    # the roots are new to it, since a first scan needs it (a rescan of an unchanged library
    # does not).
    try:
        # A walk in this process (the watcher's rescans) reads no tags and has nothing to wait
        # for: asking which roots are known would only hold the catalogue once more, which a
        # change's way into `library` waits for while readers come and go.
        if created or not walking.inline:
            covered, new = _known(db, roots)
            walking.decide(new)
            if not all(covered):
                load_arrow()
        walks = walking.result()
    except BaseException:  # a catalogue that is locked, Ctrl-C: the walkers' work is not wanted
        walking.abandon()
        raise
    if state_key is not None:
        scan_state.discard(db.path)  # from here on it does not hold, whatever happens
    with db.write() as con:
        reconcile = _Reconcile(con, allow_empty)
        report = reconcile.run(walks)
        untagged = tags.pending(con, reconcile.tag_scopes)
        if 0 < len(untagged) <= inline_tags:
            tags.update_in(con, untagged, on_problem=lambda path, reason: report.problems.append((path, reason)))
            untagged = []
        scanned_roots = reconcile.scanned_roots()
    written = len(untagged)
    if untagged:
        written = tags.update(db, untagged, workers=settings.workers,
                              on_problem=lambda path, reason: report.problems.append((path, reason)))
    summary = scan_state.walk_summary(walks) if state_key is not None else None
    if summary is not None and written == len(untagged) and not (report.problems or report.offline or report.deferred):
        scan_state.save(db.path, state_key, summary, scanned_roots, scan_state.stamp(report.scanned_at))
    return report


def load_arrow() -> None:
    """Import what the reconciliation's Arrow tables need, before the catalogue is held (the
    watcher's first change would otherwise hold it while pyarrow loads). Its tables are built
    by catalog/columns.py, never by pa.array, whose first call imports pandas (0.4 s of CPU)."""
    from . import columns  # noqa: F401  (imports pyarrow)


def _inside(path: str, others: Iterable[str]) -> bool:
    """Whether `path` is one of `others` or lies inside one, by name or by where it really is."""
    others = list(others)
    for resolve in (lambda p: p, os.path.realpath):
        target = resolve(path)
        for other in others:
            other = resolve(other).rstrip("/")
            if target == other or target.startswith(other + "/"):
                return True
    return False


def _known(db: Database, roots: list[str]) -> tuple[list[bool], list[bool]]:
    """For each root: whether the catalogue knows it (it or a root above it is registered),
    and whether it is new: unknown, holding no registered root, inside no other of `roots`:
    all its files are new. Creates the catalogue when there is none."""
    if not db.path.exists():
        with db.write():  # creates the catalogue
            known: list[str] = []
    else:
        with db.read() as con:
            known = [path for (path,) in con.execute("SELECT path FROM roots").fetchall()]
    covered = [_inside(r, known) for r in roots]
    new = [
        not c and not any(_inside(k, [r]) for k in known) and not _inside(r, [o for o in roots if o != r])
        for r, c in zip(roots, covered)
    ]
    return covered, new


def _decode(raw: bytes) -> tuple[str, bool]:
    """Display text for a path part, and whether it was valid UTF-8."""
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("utf-8", "backslashreplace"), False


def _join(prefix: str, rel: str) -> str:
    if not prefix:
        return rel
    return f"{prefix}/{rel}" if rel else prefix


def _under(path: str, prefix: str) -> bool:
    return not prefix or path == prefix or path.startswith(prefix + "/")


class _ChangedFolder:
    def __init__(self, root_id: int, dir: str, dir_raw: bytes, dir_abs: bytes, dir_ok: bool,
                 listing: walker.Listing) -> None:
        self.root_id = root_id
        self.dir = dir  # display text, relative to the root
        self.dir_raw = dir_raw  # relative to the root, exact bytes
        self.dir_abs = dir_abs  # absolute, exact bytes
        self.dir_ok = dir_ok  # whether dir_raw is valid UTF-8
        self.listing = listing


class _Reconcile:
    """One reconciliation, inside one write transaction.

    Folder fingerprints are compared in Python (one per folder); the files of changed folders
    go to DuckDB as one Arrow table, `seen`, and are compared with `files` there, so the
    Python work grows with the number of moves, not with the number of files.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, allow_empty: bool = False) -> None:
        from .clock import utc_now

        self.con = con
        self.allow_empty = allow_empty
        self.now = utc_now()
        self.report = ScanReport(scanned_at=self.now)
        self.changed: list[_ChangedFolder] = []
        self.gone_dirs: list[tuple[int, str]] = []  # folders that no longer hold audio files
        self.deferred: list[tuple[int, str]] = []  # (root_id, relpath) of files not settled yet
        self.problem_rows: list[tuple[int, str, str]] = []
        self.scanned: list[tuple[int, str]] = []  # (root_id, prefix) whose problems are replaced
        self.tag_scopes: list[tuple[int, str, bool]] = []  # (root_id, prefix, recursive) walked
        self.fresh_roots: set[int] = set()  # registered now, holding no file row yet
        # For each row of `seen` (by seen_id): its folder's index in `changed`, and its name.
        self.seen_folder: list[int] = []
        self.seen_names: list[bytes] = []
        # Tags the walkers read: (seen_id of the folder's first file, tags.Block), and as Arrow.
        self.walk_tags: list[tuple[int, Any]] = []
        self.walk_tag_rows: Any = None

    def scanned_roots(self) -> list[str]:
        """The registered roots this reconciliation stamped as scanned."""
        ids = sorted({root_id for root_id, _ in self.scanned})
        return [path for (path,) in self.con.execute(
            "SELECT path FROM roots WHERE list_contains(?, root_id) ORDER BY path", [ids]).fetchall()]

    def run(self, walks: list[walker.Walk]) -> ScanReport:
        for walk in walks:
            self._compare_folders(walk)
        if self.changed or self.gone_dirs:
            self._diff_files()
        self._record_problems()
        return self.report

    # -- roots -----------------------------------------------------------------------------

    def _locate(self, path: str) -> tuple[int | None, str]:
        """(root_id, prefix) for a scanned path: a registered root or a folder inside one,
        by name, or else by where it really is (a root named through a symbolic link, scanned
        by its real path, is the same library)."""
        known = self.con.execute("SELECT root_id, path FROM roots").fetchall()
        for resolve in (lambda p: p, os.path.realpath):
            target = resolve(path)
            for root_id, root_path in known:
                root_path = resolve(root_path).rstrip("/")
                if target == root_path:
                    return root_id, ""
                if target.startswith(root_path + "/"):
                    return root_id, target[len(root_path) + 1 :]
        return None, ""

    def _register(self, path: str) -> int:
        root_id = self.con.execute(
            "INSERT INTO roots (path, added_at) VALUES (?, ?) RETURNING root_id", [path, self.now]
        ).fetchone()[0]
        # Roots inside the new one become part of it: their files keep their rows.
        inner = self.con.execute(
            "SELECT root_id, path FROM roots WHERE starts_with(path, ?)", [path.rstrip("/") + "/"]
        ).fetchall()
        if not inner:
            self.fresh_roots.add(root_id)
        for inner_id, inner_path in inner:
            prefix = inner_path[len(path.rstrip("/")) + 1 :]
            for table in ("files", "dirs"):
                self.con.execute(
                    f"UPDATE {table} SET root_id = ?, dir = CASE WHEN dir = '' THEN ? ELSE ? || '/' || dir END "
                    "WHERE root_id = ?",
                    [root_id, prefix, prefix, inner_id],
                )
            self.con.execute("UPDATE scan_problems SET root_id = ? WHERE root_id = ?", [root_id, inner_id])
            self.con.execute("DELETE FROM roots WHERE root_id = ?", [inner_id])
        return root_id

    def _offline(self, root_id: int | None, path: str, reason: str) -> None:
        self.report.offline.append((path, reason))
        if root_id is not None:
            self.con.execute(
                "UPDATE roots SET last_scan_at = ?, last_scan_status = ? WHERE root_id = ?",
                [self.now, f"offline: {reason}", root_id],
            )

    # -- folders -----------------------------------------------------------------------------

    def _compare_folders(self, walk: walker.Walk) -> None:
        root_id, prefix = self._locate(walk.root)
        root_path = walk.root[: len(walk.root) - len(prefix)].rstrip("/") if prefix else walk.root
        if walk.offline_reason is not None:
            if not (prefix and root_id is not None and os.path.isdir(root_path) and not os.path.exists(walk.root)):
                self._offline(root_id, walk.root, walk.offline_reason)
                return
            # A folder inside a present root is gone: deleted or moved away, not unmounted.
            walk = walker.Walk(root=walk.root, recursive=True)
        if root_id is None:
            root_id = self._register(walk.root)
        scope = "(? = '' OR dir = ? OR starts_with(dir, ? || '/'))" if walk.recursive else "(? = ? AND dir = ?)"
        stored = {
            d: (fp, n)
            for d, fp, n in self.con.execute(
                f"SELECT dir, fingerprint, files FROM dirs WHERE root_id = ? AND {scope}",
                [root_id, prefix, prefix, prefix],
            ).fetchall()
        }
        stored_files = sum(n for _, n in stored.values())
        if (not prefix and walk.recursive and walk.file_count == 0 and stored_files > 0
                and not walk.deferred and not self.allow_empty):
            self._offline(
                root_id,
                walk.root,
                f"is empty but the catalogue holds {stored_files} files from it (unmounted? "
                "if it was emptied on purpose, scan it with --allow-empty)",
            )
            return

        unreadable = [_join(prefix, _decode(u)[0]) for u in walk.unreadable]
        deferred = [_join(prefix, _decode(d)[0]) for d in walk.deferred]
        self.deferred += [(root_id, rel) for rel in deferred]
        self.report.deferred += [f"{root_path}/{rel}" for rel in deferred]
        for problem in walk.problems:
            path = f"{root_path}/{_join(prefix, _decode(problem.path)[0])}"
            self.report.problems.append((path, problem.reason))
            self.problem_rows.append((root_id, path, problem.reason))
        self.scanned.append((root_id, prefix))
        self.tag_scopes.append((root_id, prefix, walk.recursive))

        walked: set[str] = set()
        root_b = os.fsencode(root_path)
        prefix_b = os.fsencode(prefix)
        for listing in walk.listings:
            dir_raw = prefix_b + b"/" + listing.dir if prefix_b and listing.dir else prefix_b or listing.dir
            dir_text, dir_ok = _decode(dir_raw)
            walked.add(dir_text)
            old = stored.get(dir_text)
            if old is not None and old[0] == listing.fingerprint:
                self.report.unchanged += old[1]
                continue
            dir_abs = root_b + b"/" + dir_raw if dir_raw else root_b
            self.changed.append(_ChangedFolder(root_id, dir_text, dir_raw, dir_abs, dir_ok, listing))
        for dir_text in stored:
            if dir_text not in walked and not any(_under(dir_text, u) for u in unreadable):
                self.gone_dirs.append((root_id, dir_text))
        self.con.execute(
            "UPDATE roots SET last_scan_at = ?, last_scan_status = 'ok' WHERE root_id = ?", [self.now, root_id]
        )

    # -- files -------------------------------------------------------------------------------

    def _seen_table(self) -> Any:
        """The files of changed folders as an Arrow table, one row per file, `seen_id` first.

        Built column-wise with C-level list operations and from buffers (catalog/columns.py):
        a first scan of a large library passes every file through here. Where the walkers read
        tags, `tags_read` says whose they read (all but those gone first) and `tags_error` their
        problem.
        """
        from array import array

        import pyarrow as pa

        from . import columns, tags

        walked_tags = any(folder.listing.tags is not None for folder in self.changed)
        root_ids = array("i")
        dirs: list[bytes] = []
        names: list[bytes] = []  # display text, as UTF-8
        raw: list[bytes | None] = []
        sizes, mtimes, devs, inodes = array("Q"), array("q"), array("Q"), array("Q")
        tags_read: list[bool] = []
        tags_error: list[str | None] = []
        for index, folder in enumerate(self.changed):
            listed = folder.listing.columns()
            names_b = listed.names
            n = len(names_b)
            try:
                b"\0".join(names_b).decode("utf-8")
                shown, all_utf8 = names_b, folder.dir_ok
            except UnicodeDecodeError:
                shown = [_decode(name_b)[0].encode("utf-8") for name_b in names_b]
                all_utf8 = False
            if all_utf8:
                raw += [None] * n
            else:  # keep the exact bytes where the display text has \xNN escapes
                raw += [
                    None if folder.dir_ok and _decode(name_b)[1]
                    else (folder.dir_raw + b"/" + name_b if folder.dir_raw else name_b)
                    for name_b in names_b
                ]
            if folder.listing.tags is not None:
                self.walk_tags.append((len(self.seen_names), folder.listing.tags))
                read, problems = tags.block_files(folder.listing.tags)
                tags_read += read
                tags_error += problems
            elif walked_tags:
                tags_read += [False] * n
                tags_error += [None] * n
            root_ids.extend([folder.root_id] * n)
            dirs += [folder.dir.encode("utf-8")] * n
            names += shown
            sizes.extend(listed.sizes)
            mtimes.extend(listed.mtimes_ns)
            devs.extend(listed.devs)
            inodes.extend(listed.inodes)
            self.seen_folder += [index] * n
            self.seen_names += names_b
        table = {
            "seen_id": columns.ints(range(len(names))),
            "root_id": columns.ints(root_ids, pa.int32()),
            "dir": columns.texts_from(dirs),
            "name": columns.texts_from(names),
            "raw_path": columns.texts(raw, pa.binary()),
            "size": columns.ints(sizes, pa.uint64()),
            "mtime_ns": columns.ints(mtimes),
            "dev": columns.ints(devs, pa.uint64()),
            "inode": columns.ints(inodes, pa.uint64()),
        }
        if walked_tags:
            table["tags_read"] = columns.bools(tags_read)
            table["tags_error"] = columns.texts(tags_error)
        return pa.table(table)

    def _seen_path(self, seen_id: int) -> bytes:
        return self.changed[self.seen_folder[seen_id]].dir_abs + b"/" + self.seen_names[seen_id]

    def _diff_files(self) -> None:
        import pyarrow as pa

        from . import tags
        from .columns import ints, texts

        con = self.con
        folders = [(f.root_id, f.dir) for f in self.changed] + self.gone_dirs
        con.register("changed_dirs_arrow", pa.table({
            "root_id": ints([r for r, _ in folders], pa.int32()),
            "dir": texts([d for _, d in folders]),
        }))
        con.register("seen_arrow", self._seen_table())
        # Each file found in a changed folder, with the row it already has at that path (if any).
        # In the folders of roots new to the catalogue no file has one: there, as on a first
        # scan, `seen` is a view of the Arrow table, not a copy of it joined with `files`.
        fresh = not self.gone_dirs and all(f.root_id in self.fresh_roots for f in self.changed)
        if fresh:
            con.execute(
                """
                CREATE OR REPLACE TEMP VIEW seen AS
                SELECT s.*, NULL::BIGINT AS file_id, NULL::VARCHAR AS old_status, false AS same_stat
                FROM seen_arrow s
                """
            )
        else:
            con.execute(
                """
                CREATE OR REPLACE TEMP TABLE seen AS
                SELECT s.*, f.file_id, f.status AS old_status,
                       coalesce(f.size = s.size AND f.mtime_ns = s.mtime_ns
                                AND f.dev = s.dev AND f.inode = s.inode, false) AS same_stat
                FROM seen_arrow s
                LEFT JOIN files f ON f.root_id = s.root_id AND f.dir = s.dir AND f.name = s.name
                """
            )
        # Files present in a changed folder before, and not found there now (a file still being
        # written was left out of the listing, but is not gone).
        con.register("deferred_arrow", pa.table({
            "root_id": ints([r for r, _ in self.deferred], pa.int32()),
            "relpath": texts([p for _, p in self.deferred]),
        }))
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE gone AS
            SELECT f.file_id FROM files f JOIN changed_dirs_arrow c USING (root_id, dir)
            WHERE f.status = 'present' AND f.file_id NOT IN (SELECT file_id FROM seen WHERE file_id IS NOT NULL)
              AND (f.root_id, CASE WHEN f.dir = '' THEN f.name ELSE f.dir || '/' || f.name END)
                  NOT IN (SELECT (root_id, relpath) FROM deferred_arrow)
            """
        )
        # What each statement below would touch is counted first, and one that would touch
        # nothing is not run: in the watcher's rescans (one new file, say) most would not, and
        # each costs a few milliseconds of the time before the change is in `library`.
        unchanged, changed, reappeared, unknown = con.execute(
            """
            SELECT count(*) FILTER (WHERE old_status = 'present' AND same_stat),
                   count(*) FILTER (WHERE old_status = 'present' AND NOT same_stat),
                   count(*) FILTER (WHERE old_status = 'missing'),
                   count(*) FILTER (WHERE file_id IS NULL)
            FROM seen
            """
        ).fetchall()[0]  # all: a result left unfinished would refuse the register() below
        moves = self._match_moves() if unknown else []
        con.register("moves_arrow", pa.table({
            "seen_id": ints([m[0] for m in moves]),
            "file_id": ints([m[1] for m in moves]),
            "head_tail_hash": texts([m[2] for m in moves]),
        }))
        (added,), = con.execute(
            "SELECT count(*) FROM seen WHERE file_id IS NULL AND seen_id NOT IN (SELECT seen_id FROM moves_arrow)"
        ).fetchall()
        (missing,), = con.execute(
            "SELECT count(*) FROM gone WHERE file_id NOT IN (SELECT file_id FROM moves_arrow)"
        ).fetchall()
        self.report.unchanged += unchanged
        self.report.changed += changed
        self.report.added += reappeared + added
        self.report.moved += len(moves)
        self.report.missing += missing

        # Rows whose stat changed or which reappeared: same path, present again. A content hash
        # only stays valid while size and mtime do.
        if changed or reappeared:
            con.execute(
                """
                UPDATE files SET size = s.size, mtime_ns = s.mtime_ns, dev = s.dev, inode = s.inode,
                       head_tail_hash = CASE WHEN files.size = s.size AND files.mtime_ns = s.mtime_ns
                                             THEN files.head_tail_hash END,
                       status = 'present', missing_since = NULL, changed_at = ?
                FROM seen s
                WHERE files.file_id = s.file_id AND NOT (s.old_status = 'present' AND s.same_stat)
                """,
                [self.now],
            )
        # Moved rows: new path and stat; the row, and so its audio, stays. A move that kept
        # size and mtime is not a change: its probe stays valid and nothing is redone.
        if moves:
            con.execute(
                """
                UPDATE files SET root_id = s.root_id, dir = s.dir, name = s.name, raw_path = s.raw_path,
                       size = s.size, mtime_ns = s.mtime_ns, dev = s.dev, inode = s.inode,
                       head_tail_hash = coalesce(m.head_tail_hash, files.head_tail_hash),
                       status = 'present', missing_since = NULL,
                       changed_at = CASE WHEN files.size = s.size AND files.mtime_ns = s.mtime_ns
                                         THEN files.changed_at ELSE ? END
                FROM moves_arrow m JOIN seen s USING (seen_id)
                WHERE files.file_id = m.file_id
                """,
                [self.now],
            )
        # New rows, with the tags the walkers read (of a root new to the catalogue) if they did.
        columns, values, join, params = "", "", "", [self.now, self.now]
        if self.walk_tags:
            any_tags = self._prepare_walk_tags()
            tag_columns = list(tags.TEXT_COLUMNS) + list(tags.NUMBER_COLUMNS) if any_tags else []
            columns = ", tags_read_at, tags_error" + "".join(f", {c}" for c in tag_columns)
            values = ", CASE WHEN s.tags_read THEN ?::TIMESTAMP END, s.tags_error" + "".join(
                f", t.{c}" for c in tag_columns)
            join = "LEFT JOIN walk_first t ON t.id = s.seen_id" if any_tags else ""
            params.append(self.now)
        if added:
            con.execute(
                f"""
                INSERT INTO files (root_id, dir, name, raw_path, size, mtime_ns, dev, inode,
                                   status, first_seen, changed_at{columns})
                SELECT s.root_id, s.dir, s.name, s.raw_path, s.size, s.mtime_ns, s.dev, s.inode, 'present',
                       ?, ?{values}
                FROM seen s {join}
                WHERE s.file_id IS NULL AND s.seen_id NOT IN (SELECT seen_id FROM moves_arrow)
                ORDER BY s.seen_id
                """,
                params,
            )
        if missing:
            con.execute(
                """
                UPDATE files SET status = 'missing', missing_since = ?
                WHERE file_id IN (SELECT file_id FROM gone)
                  AND file_id NOT IN (SELECT file_id FROM moves_arrow)
                """,
                [self.now],
            )
        con.execute("DELETE FROM dirs USING changed_dirs_arrow c WHERE dirs.root_id = c.root_id AND dirs.dir = c.dir")
        con.register("new_dirs_arrow", pa.table({
            "root_id": ints([f.root_id for f in self.changed], pa.int32()),
            "dir": texts([f.dir for f in self.changed]),
            "fingerprint": ints([f.listing.fingerprint for f in self.changed]),
            "files": ints([f.listing.count for f in self.changed], pa.int32()),
        }))
        con.execute("INSERT INTO dirs SELECT root_id, dir, fingerprint, files FROM new_dirs_arrow")
        if self.walk_tags:
            self._store_walk_tags()
        for name in ("changed_dirs_arrow", "seen_arrow", "moves_arrow", "new_dirs_arrow", "deferred_arrow"):
            con.unregister(name)
        con.execute("DROP VIEW temp.seen" if fresh else "DROP TABLE temp.seen")
        con.execute("DROP TABLE temp.gone")

    def _prepare_walk_tags(self) -> bool:
        """The tags the walkers read, as `walk_tags_arrow` (id, key, ordinal, value), id being
        seen_id, and `walk_first` (id, the library's tag columns) for the new rows. Returns
        whether any file had tags."""
        from . import tags
        self.walk_tag_rows = tags.block_tables(self.walk_tags)
        self.con.register("walk_tags_arrow", self.walk_tag_rows)
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE walk_first AS {tags.first_values('walk_tags_arrow')}")
        return self.walk_tag_rows.num_rows > 0

    def _store_walk_tags(self) -> None:
        """Write the rest of the tags the walkers read: the `file_tags` rows of the new files
        (whose columns the INSERT set), and the tags of files that had a row, where they are due
        (changed, or never read) and the stat is still the one the walk saw. All count as read
        at the scan's time, since the files' last change; tag problems are scan problems
        (see _record_problems)."""
        from . import tags
        con = self.con
        new = "s.file_id IS NULL AND s.seen_id NOT IN (SELECT seen_id FROM moves_arrow)"
        con.execute(
            f"""
            INSERT INTO file_tags
            SELECT f.file_id, t.key, t.ordinal, t.value
            FROM walk_tags_arrow t
            JOIN seen s ON s.seen_id = t.id
            JOIN files f ON f.root_id = s.root_id AND f.dir = s.dir AND f.name = s.name
            WHERE {new}
            """
        )
        problems = con.execute(
            f"SELECT s.seen_id, s.tags_error FROM seen s WHERE s.tags_error IS NOT NULL AND {new}"
        ).fetchall()
        _, more = tags.store(
            con, self.walk_tag_rows,
            """
            SELECT s.seen_id AS id, f.file_id, s.tags_error AS error,
                   r.path || '/' || CASE WHEN f.dir = '' THEN f.name ELSE f.dir || '/' || f.name END AS path,
                   f.root_id
            FROM seen s
            LEFT JOIN moves_arrow m ON m.seen_id = s.seen_id
            JOIN files f ON f.file_id = coalesce(s.file_id, m.file_id)
            JOIN roots r ON r.root_id = f.root_id
            WHERE s.tags_read AND (s.file_id IS NOT NULL OR m.file_id IS NOT NULL)
              AND f.status = 'present' AND (f.tags_read_at IS NULL OR f.tags_read_at < f.changed_at)
              AND f.size = s.size AND f.mtime_ns = s.mtime_ns AND f.dev = s.dev AND f.inode = s.inode
            """,
            [], self.now,
        )
        for seen_id, error in sorted(problems + more):
            self.report.problems.append((os.fsdecode(self._seen_path(seen_id)), error))
        con.execute("DROP TABLE temp.walk_first")
        con.unregister("walk_tags_arrow")

    def _match_moves(self) -> list[tuple[int, int, str | None]]:
        """Pair new files with gone or missing files holding the same bytes.

        Returns (seen_id, file_id, head_tail_hash computed for it or None), one-to-one.
        """
        from .identity import head_tail_hash
        con = self.con
        by_inode = con.execute(
            """
            SELECT n.seen_id, f.file_id
            FROM seen n
            JOIN files f ON f.dev = n.dev AND f.inode = n.inode AND f.size = n.size AND f.mtime_ns = n.mtime_ns
            WHERE n.file_id IS NULL AND (f.status = 'missing' OR f.file_id IN (SELECT file_id FROM gone))
            ORDER BY n.seen_id, f.file_id
            """
        ).fetchall()
        moves: list[tuple[int, int, str | None]] = []
        used_seen: set[int] = set()
        used_files: set[int] = set()
        for seen_id, file_id in by_inode:
            if seen_id not in used_seen and file_id not in used_files:
                used_seen.add(seen_id)
                used_files.add(file_id)
                moves.append((seen_id, file_id, None))
        # Same size as a candidate whose content hash is known: hash the new file to compare.
        by_size = con.execute(
            """
            SELECT n.seen_id, n.size, f.file_id, f.head_tail_hash
            FROM seen n
            JOIN files f ON f.size = n.size AND f.head_tail_hash IS NOT NULL
            WHERE n.file_id IS NULL AND (f.status = 'missing' OR f.file_id IN (SELECT file_id FROM gone))
            ORDER BY n.seen_id, f.file_id
            """
        ).fetchall()
        hashes: dict[int, str | None] = {}
        for seen_id, size, file_id, candidate_hash in by_size:
            if seen_id in used_seen or file_id in used_files:
                continue
            if seen_id not in hashes:
                path = self._seen_path(seen_id)
                try:
                    hashes[seen_id] = head_tail_hash(path, size)
                except OSError as exc:
                    hashes[seen_id] = None
                    self.report.problems.append((os.fsdecode(path), f"cannot read: {exc.strerror}"))
            if hashes[seen_id] == candidate_hash:
                used_seen.add(seen_id)
                used_files.add(file_id)
                moves.append((seen_id, file_id, candidate_hash))
        return moves

    def _record_problems(self) -> None:
        """Replace the problems of each scanned folder (and below it) with this scan's.

        Tag problems are found only when a file's tags are read, not by every scan: those of
        files whose tags are current come back from `files.tags_error`, so that they stay
        until the file changes (its tags are then read again, after this)."""
        from . import tags
        for root_id, prefix in self.scanned:
            root_path = self.con.execute("SELECT path FROM roots WHERE root_id = ?", [root_id]).fetchone()[0]
            top = _join(root_path.rstrip("/"), prefix) if prefix else root_path.rstrip("/")
            self.con.execute(
                "DELETE FROM scan_problems WHERE root_id = ? AND (path = ? OR starts_with(path, ? || '/'))",
                [root_id, top, top],
            )
            self.con.execute(
                tags.record_problems_sql("f.root_id = ? AND (? = '' OR f.dir = ? OR starts_with(f.dir, ? || '/'))"),
                [root_id, prefix, prefix, prefix],
            )
        if self.problem_rows:
            self.con.executemany(
                "INSERT INTO scan_problems VALUES (?, ?, ?, ?)",
                [(root_id, path, reason, self.now) for root_id, path, reason in self.problem_rows],
            )
