"""What the catalogue holds: `muscat status`, `muscat stats`, `muscat extractors`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .extractor_state import read_in_step, sync_extractors
from .scan_state import last_checked

if TYPE_CHECKING:
    from .config import Settings
    from .database import Database


# Per extractor: done, pending, stale, failed; the numbers that counting the rows of
# `shown_file_runs` (distinct subjects, current or not), `pending` and `failed`
# (schema/views/20_extractors.sql) gives, in a form DuckDB plans in half the time (~15 ms less of
# `muscat status`, most of it binding and optimizing: those views join the 19-column `library`
# view six times). Each part says what it stands for; tests/test_status.py checks the numbers
# against the views' on catalogues made to hold every case.
EXTRACTOR_COUNTS = """
WITH present AS (  -- library's rows (present files under a root), only the columns used here
    SELECT f.file_id, f.audio_id, f.probed_at, f.changed_at
    FROM files f JOIN roots r USING (root_id)
    WHERE f.status = 'present'
),
shown AS (  -- shown_file_runs: shown_runs has one row per subject, so its subjects with a present file
    SELECT extractor, count(*) FILTER (WHERE current) AS done, count(*) FILTER (WHERE NOT current) AS stale
    FROM shown_runs
    WHERE (scope = 'audio' AND audio_id IN (SELECT audio_id FROM present))
       OR (scope = 'file' AND file_id IN (SELECT file_id FROM present))
    GROUP BY extractor
),
waiting AS (  -- pending: present files to probe, then audio x enabled and available extractors with no run
    SELECT extractor, sum(n) AS pending FROM (
        SELECT 'probe' AS extractor, count(*) AS n FROM present
        WHERE probed_at IS NULL OR changed_at > probed_at
        UNION ALL
        SELECT c.extractor, count(*)
        FROM (SELECT DISTINCT audio_id FROM present
              WHERE audio_id IS NOT NULL AND changed_at <= probed_at) a
        CROSS JOIN extractor_current c
        WHERE c.scope = 'audio' AND c.enabled AND c.available
          AND NOT has_counted_run(a.audio_id, c.extractor, c.version, c.params_hash)
        GROUP BY c.extractor
    )
    GROUP BY extractor
),
failing AS (  -- failed: failed runs of the current identities x the present files they describe
    SELECT extractor, count(*) AS failed FROM (
        SELECT r.extractor FROM runs r
        JOIN extractor_current c USING (extractor, version, params_hash)
        JOIN present p ON p.audio_id = r.audio_id
        WHERE r.status = 'failed' AND c.scope = 'audio'
        UNION ALL
        SELECT r.extractor FROM runs r
        JOIN extractor_current c USING (extractor, version, params_hash)
        JOIN present p ON p.file_id = r.file_id
        WHERE r.status = 'failed' AND c.scope = 'file'
    )
    GROUP BY extractor
)
SELECT c.extractor, coalesce(s.done, 0), coalesce(w.pending, 0)::BIGINT, coalesce(s.stale, 0),
       coalesce(f.failed, 0)
FROM extractor_current c
LEFT JOIN shown s USING (extractor) LEFT JOIN waiting w USING (extractor)
LEFT JOIN failing f USING (extractor)
ORDER BY c.extractor <> 'probe', c.extractor
"""


def status(db: Database, settings: Settings | None = None) -> dict[str, Any]:
    """Counts in the shape of `muscat status --json` (contract), plus the roots."""
    with db.read() if settings is None else read_in_step(db, settings) as con:
        present, missing, audio = con.execute(
            "SELECT count(*) FILTER (WHERE status = 'present'), count(*) FILTER (WHERE status = 'missing'), "
            "count(DISTINCT audio_id) FILTER (WHERE status = 'present') FROM files"
        ).fetchone()
        roots = [
            {
                "path": path,
                "files": files,
                "last_scan_at": last.isoformat(sep=" ", timespec="seconds") if last else None,
                "last_scan_status": state,
            }
            for path, files, last, state in con.execute(
                "SELECT r.path, count(f.file_id) FILTER (WHERE f.status = 'present'), r.last_scan_at, "
                "r.last_scan_status FROM roots r LEFT JOIN files f USING (root_id) "
                "GROUP BY ALL ORDER BY r.path"
            ).fetchall()
        ]
        extractors = {
            name: {"done": done, "pending": pending, "stale": stale, "failed": failed}
            for name, done, pending, stale, failed in con.execute(EXTRACTOR_COUNTS).fetchall()
        }
    # A rescan that found nothing changed did not write the catalogue; the scan state holds
    # when it looked (catalog/scan_state.py).
    for root, checked in last_checked(db.path).items():
        for row in roots:
            if row["path"] == root and (row["last_scan_at"] is None or checked > row["last_scan_at"]):
                row["last_scan_at"] = checked
    return {
        "files": {"present": present, "missing": missing},
        "audio": audio,
        "extractors": extractors,
        "roots": roots,
    }


def stats(db: Database, settings: Settings, features: list[str] | None = None) -> list[dict[str, Any]]:
    """Rows of `feature_stats`, optionally only the named features (a vector's name selects
    all its elements)."""
    sync_extractors(db, settings)
    with db.read() as con:
        rows = con.execute(
            """
            SELECT feature, unit, count, mean, std, min, max FROM feature_stats
            WHERE len(?) = 0 OR list_contains(?, feature) OR list_contains(?, split_part(feature, '[', 1))
            """,
            [features or [], features or [], features or []],
        ).fetchall()
    keys = ("feature", "unit", "count", "mean", "std", "min", "max")
    return [dict(zip(keys, row)) for row in rows]


def extractors(settings: Settings) -> list[dict[str, Any]]:
    """The `muscat extractors --json` list (contract), with `enabled` added."""
    from .registry import load_extractors

    return [
        {
            "name": e.name,
            "version": e.version,
            "device": e.device,
            "params_hash": e.params_hash,
            "available": e.available,
            "reason": e.unavailable_reason,
            "enabled": e.enabled,
            "off_reason": e.off_reason,
            "params": e.params,
            "outputs": len(e.declaration.outputs),
        }
        for e in load_extractors(settings)
    ]
