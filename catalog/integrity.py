"""Invariants of a catalogue: what holds after anything happens (a crash, a kill, a full disk).

The tests check them after every kind of change and after kill -9 campaigns; `muscat doctor`
checks them on a user's catalogue. Each check is a query returning offending rows (empty: it
holds), except the artifact check, which also looks at the files on disk.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

# Each check is a query returning offending rows; an empty result means it holds.
CHECKS: dict[str, str] = {
    "a path is catalogued twice": """
        SELECT root_id, dir, name, count(*) FROM files GROUP BY ALL HAVING count(*) > 1
    """,
    "a file belongs to no root": """
        SELECT file_id FROM files WHERE root_id NOT IN (SELECT root_id FROM roots)
    """,
    "a file has an unknown status": """
        SELECT file_id, status FROM files WHERE status NOT IN ('present', 'missing')
    """,
    "a missing file has no missing_since, or a present one has": """
        SELECT file_id FROM files
        WHERE (status = 'missing') <> (missing_since IS NOT NULL)
    """,
    "a folder fingerprint does not match its present files": """
        SELECT d.root_id, d.dir, d.files, count(f.file_id)
        FROM dirs d LEFT JOIN files f
          ON f.root_id = d.root_id AND f.dir = d.dir AND f.status = 'present'
        GROUP BY ALL HAVING d.files <> count(f.file_id)
    """,
    "present files in a folder with no fingerprint": """
        SELECT DISTINCT f.root_id, f.dir FROM files f
        WHERE f.status = 'present'
          AND NOT EXISTS (SELECT 1 FROM dirs d WHERE d.root_id = f.root_id AND d.dir = f.dir)
    """,
    "a folder is recorded twice": """
        SELECT root_id, dir FROM dirs GROUP BY ALL HAVING count(*) > 1
    """,
    # Runs are written once finished, in the same transaction as their values: there is no
    # 'running' state, and a killed job leaves nothing behind.
    "a run has a status other than ok or failed": """
        SELECT run_id, status FROM runs WHERE status NOT IN ('ok', 'failed')
    """,
    "the same result is recorded twice": """
        SELECT r.extractor, r.version, r.params_hash,
               run_subject(c.scope, r.file_id, r.audio_id) AS subject,
               count(*)
        FROM runs r LEFT JOIN extractor_current c USING (extractor)
        GROUP BY ALL HAVING count(*) > 1
    """,
    "a feature value is recorded twice for one run": """
        SELECT run_id, feature, count(*) FROM (
            SELECT run_id, feature FROM feature_values
            UNION ALL SELECT run_id, feature FROM feature_vector_values
        ) GROUP BY ALL HAVING count(*) > 1
    """,
    "a feature value or artifact belongs to no ok run": """
        SELECT run_id FROM (
            SELECT run_id FROM feature_values UNION ALL SELECT run_id FROM feature_vector_values
            UNION ALL SELECT run_id FROM run_artifacts
        ) WHERE run_id NOT IN (SELECT run_id FROM runs WHERE status = 'ok')
    """,
    "an ok run lacks some of its extractor's features": """
        SELECT r.run_id, r.extractor, count(DISTINCT v.feature) AS has, o.declared
        FROM runs r JOIN extractor_current c USING (extractor, version, params_hash)
        JOIN (SELECT extractor, count(*) AS declared FROM extractor_outputs GROUP BY ALL) o
          USING (extractor)
        LEFT JOIN (
            SELECT run_id, feature FROM feature_values
            UNION ALL SELECT run_id, feature FROM feature_vector_values
        ) v USING (run_id)
        WHERE r.status = 'ok'
        GROUP BY r.run_id, r.extractor, o.declared
        HAVING count(DISTINCT v.feature) <> o.declared
    """,
    "a run of audio the catalogue does not know": """
        SELECT run_id, audio_id FROM runs
        WHERE audio_id IS NOT NULL AND audio_id NOT IN (SELECT audio_id FROM audio)
    """,
    "a file refers to audio the catalogue does not know": """
        SELECT file_id, audio_id FROM files
        WHERE audio_id IS NOT NULL AND audio_id NOT IN (SELECT audio_id FROM audio)
    """,
    "tags of a file the catalogue does not know": """
        SELECT DISTINCT file_id FROM file_tags WHERE file_id NOT IN (SELECT file_id FROM files)
    """,
    "a tag value is recorded twice, or its ordinals have a gap": """
        SELECT file_id, key, count(*), max(ordinal) FROM file_tags
        GROUP BY ALL HAVING count(*) <> max(ordinal) + 1 OR count(DISTINCT ordinal) <> count(*)
    """,
    "a file's tag columns differ from its first tags": """
        SELECT f.file_id FROM files f LEFT JOIN (
            SELECT file_id,
                   any_value(value) FILTER (WHERE key = 'artist') AS artist,
                   any_value(value) FILTER (WHERE key = 'album') AS album,
                   any_value(value) FILTER (WHERE key = 'title') AS title,
                   any_value(value) FILTER (WHERE key = 'genre') AS genre
            FROM file_tags WHERE ordinal = 0 GROUP BY file_id
        ) t USING (file_id)
        WHERE f.artist IS DISTINCT FROM t.artist OR f.album IS DISTINCT FROM t.album
           OR f.title IS DISTINCT FROM t.title OR f.genre IS DISTINCT FROM t.genre
    """,
}


def violations(con: duckdb.DuckDBPyConnection, files: bool = True) -> dict[str, list[tuple]]:
    """The invariants that do not hold, each with a few offending rows; with `files`, also
    whether every recorded artifact is on disk, whole."""
    found = {}
    for name, sql in CHECKS.items():
        rows = con.execute(sql + " LIMIT 5").fetchall()
        if rows:
            found[name] = rows
    if files:
        broken = artifact_problems(con)
        if broken:
            found["a recorded artifact is missing, of another size, or a temporary file"] = broken[:5]
    return found


def artifact_problems(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    """(path, problem) for artifacts of ok runs that are not on disk as recorded.

    Files are written to a temporary name and renamed before their run is recorded, so a listed
    artifact is complete; one that is gone since (deleted by hand) shows up here too."""
    problems = []
    for path, size in con.execute("SELECT path, bytes FROM run_artifacts").fetchall():
        if os.path.basename(path).startswith("."):
            problems.append((path, "a temporary name is recorded"))
            continue
        try:
            actual = os.stat(path).st_size
        except OSError as exc:
            problems.append((path, exc.strerror or "cannot be read"))
            continue
        if actual != size:
            problems.append((path, f"{actual} bytes on disk, {size} recorded"))
    return problems
