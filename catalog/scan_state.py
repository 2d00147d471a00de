"""The scan state: what the last complete scan saw, kept beside the catalogue, so that a rescan
that finds nothing changed does not open the catalogue at all (no duckdb import, no attach).

A rescan of an unchanged library compares each folder's listing fingerprint with the one the
catalogue holds (`dirs`, see catalog/scanner.py) and finds them all equal. The same comparison
can be made without the catalogue, against a copy of those fingerprints taken when the last scan
wrote them, as long as the catalogue is still the file that scan left: then its `dirs` rows are
still those fingerprints, and the normal path would do nothing but stamp the roots' last scan.

The state file (`CATALOGUE.scan-state`, JSON, written atomically after a scan has finished all
its writes) holds:

- `key`: what decides what a walk sees and what a scan does with it: the state's format,
  muscat's version and schema migrations, the roots as scanned (in order), the audio extensions
  and the folders skipped. Any difference: the normal path.
- `catalogue`: the catalogue file as that scan left it: device, inode, size, mtime_ns,
  ctime_ns, a hash of its first 12 KiB (DuckDB's file header and its two database headers: each
  checkpoint rewrites one, with an iteration count that only grows, so a write in the same
  clock tick as ours still shows), and the write-ahead log's size and mtime (or its absence):
  every committed write either is in the log or was checkpointed into the headers.
- `walk`: per root, the number of audio files and a hash of its folders' (path, fingerprint,
  count), sorted: equal hashes mean equal fingerprints, folder for folder.
- `checked_at`: when a scan last found it all so (shown as the roots' last scan by `muscat
  status`, since the fast path writes nothing to the catalogue's `roots.last_scan_at`).

Only a scan without problems saves a state (no offline root, no unreadable folder, no broken
link, no file deferred, every due tag read): a problem is reported and recorded by the normal
path, each time. A state that is missing, unreadable, of another format, for other roots or
settings, or for a catalogue that was written since (watch, extract, forget, a migration, any
other scan): the normal path, which then replaces or removes the state.

What this cannot see: a write by another process in the instant between this scan's last
detach from the catalogue and its reading of the file's identity would be taken as this scan's.
The normal path's own comparison (a file edited within the same clock tick as its walk, with the
same size) is what the fast path compares, no less.

This module must stay light: it is what a no-change rescan imports besides the walker.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

TYPE_CHECKING = False  # typing's, without importing typing (a no-change rescan does not: console.py)

from .blake2 import blake2b

if TYPE_CHECKING:
    from datetime import datetime
    from typing import Any, Sequence

    from .config import Settings
    from .walker import Walk

FORMAT = 1
# DuckDB's main file header and its two alternating database headers.
HEADER_BYTES = 3 * 4096
_MIGRATIONS = Path(__file__).resolve().parent.parent / "schema" / "migrations"


def stamp(when: datetime | None = None) -> str:
    """A time as `muscat status` shows it (UTC, to the second); now by default, without
    importing datetime (a no-change rescan does not otherwise need it)."""
    if when is not None:
        return when.isoformat(sep=" ", timespec="seconds")
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())


def state_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".scan-state")


def catalogue_identity(db_path: Path) -> list[Any] | None:
    """What tells this catalogue file from any later version of it; None when there is none."""
    try:
        fd = os.open(db_path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        head = os.pread(fd, HEADER_BYTES, 0)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        w = os.stat(str(db_path) + ".wal")
        wal: list[int] | None = [w.st_ino, w.st_size, w.st_mtime_ns]
    except FileNotFoundError:
        wal = None
    except OSError:
        return None
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
            blake2b(head, digest_size=16).hexdigest(), wal]


def key(roots: Sequence[str], settings: Settings) -> dict[str, Any]:
    """What must be the same for a walk to mean what the saved one meant."""
    from . import __version__

    try:
        migrations = sorted(os.listdir(_MIGRATIONS))
    except OSError:
        migrations = []
    return {
        "format": FORMAT,
        "muscat": __version__,
        "migrations": migrations,
        "roots": list(roots),
        "extensions": sorted({e.lower().lstrip(".") for e in settings.audio_extensions}),
        "skip": [str(settings.artifacts_dir)],
    }


def walk_summary(walks: Sequence[Walk]) -> list[list[Any]] | None:
    """Per root: [files, hash of its folders' fingerprints]; None when a walk had anything to
    report (offline, problems, unreadable or deferred), which only the normal path handles."""
    out: list[list[Any]] = []
    for walk in walks:
        if walk.offline_reason is not None or walk.problems or walk.unreadable or walk.deferred:
            return None
        h = blake2b(digest_size=16)
        files = 0
        for listing in sorted(walk.listings, key=lambda x: x.dir):
            h.update(b"%d %d %d\0%s\0" % (len(listing.dir), listing.fingerprint, listing.count, listing.dir))
            files += listing.count
        out.append([files, h.hexdigest()])
    return out


def load(db_path: Path, want: dict[str, Any]) -> dict[str, Any] | None:
    """The saved state when it is for `want` and the catalogue is as that scan left it, else None."""
    try:
        state = json.loads(state_path(db_path).read_bytes())
    except (OSError, ValueError):
        return None
    if (not isinstance(state, dict) or state.get("key") != want or not isinstance(state.get("walk"), list)
            or len(state["walk"]) != len(want["roots"])):
        return None
    if state.get("catalogue") != catalogue_identity(db_path):
        return None
    return state


def save(db_path: Path, want: dict[str, Any], summary: list[list[Any]], roots: list[str],
         checked_at: str, identity: list[Any] | None = None) -> None:
    """Write the state of a finished scan (after its last write to the catalogue). `roots`: the
    registered roots whose last scan it was."""
    from .artifacts import write_atomically

    identity = identity or catalogue_identity(db_path)
    if identity is None:
        return
    state = {"key": want, "catalogue": identity, "walk": summary, "roots": roots, "checked_at": checked_at}
    try:
        write_atomically(state_path(db_path), json.dumps(state).encode())
    except OSError:
        discard(db_path)  # no state is always safe: the next rescan takes the normal path


def discard(db_path: Path) -> None:
    try:
        os.unlink(state_path(db_path))
    except OSError:
        pass


def last_checked(db_path: Path) -> dict[str, str]:
    """{registered root: when a scan last found it unchanged}, from a state that still holds."""
    try:
        state = json.loads(state_path(db_path).read_bytes())
        if state.get("catalogue") != catalogue_identity(db_path):
            return {}
        return {str(root): str(state["checked_at"]) for root in state["roots"]}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
