"""Near-duplicates: the same recording in another encoding (`muscat duplicates`).

Two audio are one recording when their Chromaprint fingerprints (extractors/chromaprint.py)
agree: aligned at the best offset within a few seconds (encoders add delay and padding), at
most MAX_BIT_ERROR of their bits differ. Measured here: a FLAC and a 128 kbps MP3 of one
master differ in 0 % of the bits, a 48 kbps MP3 at 22 kHz in 6 %; two different noises (the
closest unrelated pair found: stationary sound hashes alike) in 17 %, different melodies in 28 %
and more. Only audio of about equal length is compared (within DURATION_SLACK), so the work
is one pass over the audio sorted by duration, not every pair.

Files holding the same audio (exact copies; a WAV and a FLAC of the same PCM) are one group
too. Groups are connected components: a ~ b and b ~ c put a, b and c together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb
    import numpy as np

    from .config import Settings
    from .database import Database

MAX_BIT_ERROR = 0.10
MAX_SHIFT_ITEMS = 24  # about 3 s of Chromaprint items (~8 per second)
MIN_OVERLAP_ITEMS = 24
DURATION_SLACK_S = 1.0
DURATION_SLACK_SHARE = 0.02


@dataclass
class DuplicateGroup:
    """Present files that hold one recording: their paths and their distinct audio."""

    paths: list[str]
    audio_ids: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"paths": self.paths, "audio_ids": self.audio_ids}


def bit_error(a: np.ndarray, b: np.ndarray) -> float:
    """The share of differing bits of two raw fingerprints (uint32 items) at their best
    alignment within MAX_SHIFT_ITEMS; 1.0 when they overlap too little to say."""
    import numpy as np

    best = 1.0
    for offset in range(-MAX_SHIFT_ITEMS, MAX_SHIFT_ITEMS + 1):
        x, y = a[max(0, offset):], b[max(0, -offset):]
        n = min(len(x), len(y))
        if n < MIN_OVERLAP_ITEMS:
            continue
        best = min(best, float(np.unpackbits((x[:n] ^ y[:n]).view(np.uint8)).sum()) / (32 * n))
    return best


def _decode(text: str) -> np.ndarray:
    import chromaprint
    import numpy as np

    items, _ = chromaprint.decode_fingerprint(text.encode("ascii"))
    return np.asarray(items, dtype=np.uint32)


def near_duplicate_pairs(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    """Pairs of distinct audio (present in the library) that are one recording."""
    found = con.execute(
        """
        SELECT f.audio_id, any_value(f.text), any_value(l.duration_s)
        FROM features f JOIN library l USING (path)
        WHERE f.extractor = 'chromaprint' AND f.feature = 'chromaprint' AND f.text IS NOT NULL
          AND l.duration_s IS NOT NULL
        GROUP BY f.audio_id
        ORDER BY 3, 1
        """
    ).fetchall()
    if len(found) < 2:
        return []
    prints = {audio_id: _decode(text) for audio_id, text, _ in found}
    pairs = []
    for i, (a, _, duration) in enumerate(found):
        slack = max(DURATION_SLACK_S, DURATION_SLACK_SHARE * duration)
        for b, _, other in found[i + 1:]:
            if other - duration > slack:
                break
            if bit_error(prints[a], prints[b]) <= MAX_BIT_ERROR:
                pairs.append((a, b))
    return pairs


class Components:
    """Union-find over hashable items."""

    def __init__(self) -> None:
        self.parent: dict[Any, Any] = {}

    def find(self, item: Any) -> Any:
        self.parent.setdefault(item, item)
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:  # path compression
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: Any, b: Any) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def recording_of(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Each audio that has a near-duplicate -> one audio id standing for its recording (the
    smallest of its group). Audio alone in its recording is not in the mapping."""
    components = Components()
    for a, b in near_duplicate_pairs(con):
        components.union(a, b)
    return {audio_id: components.find(audio_id) for audio_id in list(components.parent)}


def duplicates(db: Database, settings: Settings | None = None) -> list[DuplicateGroup]:
    """Groups of present files that hold one recording (two or more files), ordered by their
    first path; within a group paths and audio ids are sorted."""
    if settings is not None:
        from .extractor_state import sync_extractors

        sync_extractors(db, settings)
    with db.read() as con:
        recording = recording_of(con)
        files = con.execute("SELECT path, audio_id FROM library WHERE audio_id IS NOT NULL ORDER BY path").fetchall()
    groups: dict[str, list[tuple[str, str]]] = {}
    for path, audio_id in files:
        groups.setdefault(recording.get(audio_id, audio_id), []).append((path, audio_id))
    found = [
        DuplicateGroup(paths=sorted(p for p, _ in members), audio_ids=sorted({a for _, a in members}))
        for members in groups.values() if len(members) > 1
    ]
    return sorted(found, key=lambda g: g.paths[0])
