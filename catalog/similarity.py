"""Nearest tracks: `muscat similar`.

What is compared, and how each feature is standardised, is SQL in schema/views/30_similar.sql
(`similarity_features`, `similarity_elements`, `similarity_vectors`); here the vectors of one
aspect are cast to a fixed-size array (its size comes from the data) and ranked by DuckDB's
`array_cosine_distance` against the track's own.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .errors import MuscatError

if TYPE_CHECKING:
    from .config import Settings
    from .database import Database

ASPECTS = ("timbre", "harmony", "rhythm", "all")


class SimilarError(MuscatError):
    """A track that cannot be compared: not in the catalogue, or without the features."""


def _lookup(con: Any, path: str) -> tuple[str, str | None]:
    """The library path and audio id of `path`, named as the user gave it or by where it is."""
    from .scanner import normalise_root

    named = normalise_root(path)
    for candidate in dict.fromkeys([named, os.path.realpath(named)]):
        row = con.execute("SELECT path, audio_id FROM library WHERE path = ?", [candidate]).fetchone()
        if row:
            return row[0], row[1]
    raise SimilarError(f"{path}: not in the catalogue (scan its folder first: muscat scan FOLDER)")


def similar(db: Database, settings: Settings, path: str, k: int = 10, using: str = "all") -> list[dict[str, Any]]:
    """The `k` present files nearest to `path` on `using` (timbre, harmony, rhythm or all),
    nearest first: `{"path", "audio_id", "distance"}` (cosine distance, 0 to 2). Files of the
    track's own audio (copies, retagged files) are left out."""
    if using not in ASPECTS:
        raise SimilarError(f"--using {using!r}: choose one of {', '.join(ASPECTS)}")
    from .database import require_catalogue
    from .extractor_state import sync_extractors

    require_catalogue(db)
    sync_extractors(db, settings)
    with db.read() as con:
        own_path, audio_id = _lookup(con, path)
        if audio_id is None:
            failure = con.execute("SELECT error FROM failed WHERE path = ? LIMIT 1", [own_path]).fetchone()
            if failure:
                raise SimilarError(f"{own_path}: cannot be compared: it failed to decode ({failure[0]})")
            raise SimilarError(f"{own_path}: not analysed yet (run muscat extract)")
        row = con.execute("SELECT len(vector) FROM similarity_vectors WHERE aspect = ? AND audio_id = ?",
                          [using, audio_id]).fetchone()
        if row is None:
            needed = [name for (name,) in con.execute(
                "SELECT DISTINCT extractor FROM similarity_features WHERE ? = 'all' OR aspect = ? ORDER BY 1",
                [using, using]).fetchall()]
            raise SimilarError(f"{own_path}: no {using} features yet: it needs results of "
                               f"{', '.join(needed)} (muscat extract --only {','.join(needed)})")
        size = int(row[0])
        rows = con.execute(
            f"""
            WITH vectors AS (
                SELECT audio_id, vector::DOUBLE[{size}] AS vector
                FROM similarity_vectors WHERE aspect = $aspect
            ),
            own AS (SELECT vector FROM vectors WHERE audio_id = $audio)
            SELECT l.path, l.audio_id, array_cosine_distance(v.vector, own.vector) AS distance
            FROM vectors v CROSS JOIN own
            JOIN library l ON l.audio_id = v.audio_id
            WHERE v.audio_id <> $audio
              -- a vector of zeros (a track exactly at the mean of everything) has no direction
              AND NOT isnan(array_cosine_distance(v.vector, own.vector))
            ORDER BY distance, l.path
            LIMIT $k
            """,
            {"aspect": using, "audio": audio_id, "k": k},
        ).fetchall()
    return [{"path": p, "audio_id": a, "distance": float(d)} for p, a, d in rows]
