"""Dataset splits without leakage: `muscat split`.

Files are put in groups that must not be split up: all files of one key (an artist; an album,
named with its album artist; or with `--by audio` nothing but the audio), all files of one
audio, and all audio that is one recording in other encodings (near-duplicates,
catalog/duplicates.py). A group with no key of its own (no artist tag) is its audio. Groups
joined by any of these are one group, named by the smallest of their keys.

Where a group goes:
- a group the split placed before keeps its part (stored in `split_files`), so files added
  later never move those already placed; files new to a placed group join it;
- new groups are taken in the order of a hash of (seed, key), and each goes to the part the
  same hash points to (a number in [0, 1) against the cumulative ratios) when that part is not
  above its share of the files, else to the part furthest below its share. A pure hash would
  do without the second rule, but with 30 artists it lands 7 points off 80 % on average; this
  keeps every part within about one group's size of its ratio, deterministically.
Asking for another key, seed, ratios or names under the same name makes the split afresh.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .clock import utc_now
from .duplicates import Components, recording_of
from .errors import UsageError

if TYPE_CHECKING:
    from .config import Settings
    from .database import Database

DEFAULT_NAME = "default"  # the split `track_features.split` shows
BY = ("artist", "album", "audio")
DEFAULT_NAMES = {2: ["train", "test"], 3: ["train", "validation", "test"]}  # Hugging Face's names


@dataclass
class SplitReport:
    """What `muscat split` did: files per part, and how many kept, joined or changed places."""

    name: str
    by: str
    seed: int
    counts: dict[str, int]
    groups: int = 0
    kept: int = 0  # files whose stored place stayed
    placed: int = 0  # files placed now (new, or the split made afresh)
    moved: int = 0  # stored files that changed part (a new duplicate joined two groups)
    fresh: bool = False  # made afresh: a new name, or another definition under it
    shares: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The `muscat split --json` object (contract)."""
        return {"name": self.name, "by": self.by, "seed": self.seed, "splits": dict(self.counts)}


def parse_ratios(text: str) -> list[float]:
    """'80,10,10' -> [0.8, 0.1, 0.1]. Percentages summing to 100, or fractions summing to 1."""
    parts = [p.strip() for p in text.split(",")]
    values = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise UsageError(f"--ratios: {part!r} is not a number (give e.g. 80,10,10)") from None
        if not math.isfinite(value) or value <= 0:
            raise UsageError(f"--ratios: every part must be a positive number, not {part!r}")
        values.append(value)
    if len(values) < 2:
        raise UsageError(f"--ratios: give two parts or more (e.g. 80,10,10), not {text!r}")
    total = sum(values)
    if not (math.isclose(total, 100, abs_tol=1e-6) or math.isclose(total, 1, abs_tol=1e-9)):
        raise UsageError(f"--ratios must sum to 100 (or to 1), not {total:g} ({text})")
    return [v / total for v in values]


def parse_names(text: str | None, count: int) -> list[str]:
    """The parts' names: given, or train/test, train/validation/test."""
    if text is None:
        if count not in DEFAULT_NAMES:
            raise UsageError(f"--names: {count} ratios need {count} names (e.g. --names a,b,c,d); "
                             "only two or three have default names")
        return list(DEFAULT_NAMES[count])
    names = [n.strip() for n in text.split(",")]
    if len(names) != count:
        raise UsageError(f"--names: {len(names)} names for {count} ratios ({text!r})")
    if any(not n for n in names):
        raise UsageError(f"--names: a name is empty ({text!r})")
    if len(set(names)) != len(names):
        raise UsageError(f"--names: a name is given twice ({text!r})")
    return names


def _norm(value: str | None) -> str | None:
    """Tags as people type them: case and runs of spaces do not make another artist."""
    if value is None or not value.strip():
        return None
    return " ".join(value.casefold().split())


def group_key(by: str, artist: str | None, album: str | None, albumartist: str | None) -> str | None:
    """The key `by` names for a file, or None when it has none (then its audio is its group)."""
    if by == "artist":
        name = _norm(artist)
        return f"artist:{name}" if name else None
    if by == "album":
        name = _norm(album)
        return f"album:{_norm(albumartist) or _norm(artist) or ''}\x1f{name}" if name else None
    return None


def unit_hash(seed: int, key: str) -> float:
    """A number in [0, 1) from the key and the seed, the same on every machine and run."""
    digest = hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _hashed_part(u: float, ratios: list[float]) -> int:
    edge = 0.0
    for i, ratio in enumerate(ratios):
        edge += ratio
        if u < edge:
            return i
    return len(ratios) - 1


def split(db: Database, settings: Settings | None, by: str, ratios: list[float], seed: int = 0,
          name: str = DEFAULT_NAME, names: list[str] | None = None) -> SplitReport:
    """Split the present files (see the module's docstring) and store it under `name`."""
    if by not in BY:
        raise UsageError(f"--by must be one of {', '.join(BY)}, not {by!r}")
    if not name or not name.strip():
        raise UsageError("--name: the split's name is empty")
    names = names or parse_names(None, len(ratios))
    if len(names) != len(ratios):
        raise UsageError(f"--names: {len(names)} names for {len(ratios)} ratios")
    if settings is not None:
        from .extractor_state import sync_extractors

        sync_extractors(db, settings)  # the features view knows the fingerprint extractor
    with db.read() as con:
        recording = recording_of(con)
        files = con.execute(
            "SELECT file_id, audio_id, artist, album, albumartist FROM library ORDER BY file_id"
        ).fetchall()
        definition = con.execute(
            "SELECT by_key, seed, ratios, names, created_at FROM split_definitions WHERE name = ?", [name]
        ).fetchone()
        same = definition is not None and definition[0] == by and definition[1] == seed and \
            list(definition[3]) == names and all(math.isclose(a, b) for a, b in zip(definition[2], ratios)) \
            and len(definition[2]) == len(ratios)
        stored = dict(con.execute("SELECT file_id, split FROM split_files WHERE name = ?", [name]).fetchall()) \
            if same else {}

    # Groups: a file is joined to its key and to its recording (its audio, or the audio it is
    # a near-duplicate of); files without a key or an audio yet stand alone.
    components = Components()
    keys: dict[int, str] = {}
    for file_id, audio_id, artist, album, albumartist in files:
        key = group_key(by, artist, album, albumartist)
        own = key or (f"audio:{audio_id}" if audio_id else f"file:{file_id}")
        keys[file_id] = own
        components.union(("file", file_id), ("key", own))
        if audio_id is not None:
            components.union(("file", file_id), ("audio", recording.get(audio_id, audio_id)))
    members: dict[Any, list[int]] = {}
    for file_id in keys:
        members.setdefault(components.find(("file", file_id)), []).append(file_id)
    groups = [(min(keys[f] for f in fs), fs) for fs in members.values()]

    index = {n: i for i, n in enumerate(names)}
    counts = [0] * len(names)
    assignment: dict[int, tuple[str, str]] = {}  # file_id -> (split, group key)
    report = SplitReport(name=name, by=by, seed=seed, counts={}, groups=len(groups), fresh=not same)
    new = []
    for key, fs in groups:
        placed = Counter(stored[f] for f in fs if stored.get(f) in index)
        if not placed:
            new.append((unit_hash(seed, key), key, fs))
            continue
        part = min(placed, key=lambda p: (-placed[p], index[p]))
        report.kept += placed[part]
        report.moved += sum(n for p, n in placed.items() if p != part)
        report.placed += len(fs) - sum(placed.values())
        counts[index[part]] += len(fs)
        for f in fs:
            assignment[f] = (part, key)
    for u, key, fs in sorted(new):
        total = sum(counts) + len(fs)
        preferred = _hashed_part(u, ratios)
        if counts[preferred] + len(fs) <= ratios[preferred] * total + 1e-9:
            part = preferred
        else:
            part = max(range(len(names)), key=lambda i: (ratios[i] * total - counts[i], i == preferred, -i))
        counts[part] += len(fs)
        report.placed += len(fs)
        for f in fs:
            assignment[f] = (names[part], key)
    report.counts = {n: counts[i] for i, n in enumerate(names)}
    report.shares = {n: (counts[i] / sum(counts) if sum(counts) else 0.0) for i, n in enumerate(names)}
    _store(db, name, by, seed, ratios, names, definition[4] if same else None, assignment)
    return report


def _store(db: Database, name: str, by: str, seed: int, ratios: list[float], names: list[str],
           created_at: Any, assignment: dict[int, tuple[str, str]]) -> None:
    import pyarrow as pa

    from .columns import column

    now = utc_now()
    placed = pa.table({
        "name": column([name] * len(assignment), pa.string()),
        "file_id": column(list(assignment), pa.int64()),
        "split": column([part for part, _ in assignment.values()], pa.string()),
        "group_key": column([key for _, key in assignment.values()], pa.string()),
    })
    with db.write() as con:
        con.register("placed", placed)
        try:
            con.execute("DELETE FROM split_definitions WHERE name = ?", [name])
            con.execute("INSERT INTO split_definitions VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [name, by, seed, ratios, names, created_at or now, now])
            # Files missing now keep their place (a drive that comes back); rows of files gc
            # removed, and every row of a split made afresh, go.
            con.execute(
                "DELETE FROM split_files WHERE name = ? AND (file_id IN (SELECT file_id FROM placed) "
                "OR file_id NOT IN (SELECT file_id FROM files) OR ?)", [name, created_at is None])
            con.execute("INSERT INTO split_files SELECT name, file_id, split, group_key FROM placed")
        finally:
            con.unregister("placed")
