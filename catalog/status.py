"""What the catalogue holds: `muscat status`, `muscat stats`, `muscat extractors`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .extractor_state import read_in_step, sync_extractors
from .scan_state import last_checked

if TYPE_CHECKING:
    from .config import Settings
    from .database import Database


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
            for name, done, pending, stale, failed in con.execute(
                """
                WITH shown AS (
                    SELECT extractor,
                           count(DISTINCT run_subject(scope, file_id, audio_id)) FILTER (WHERE current) AS done,
                           count(DISTINCT run_subject(scope, file_id, audio_id)) FILTER (WHERE NOT current) AS stale
                    FROM shown_file_runs GROUP BY extractor
                ),
                waiting AS (SELECT extractor, count(*) AS pending FROM pending GROUP BY extractor),
                failing AS (SELECT extractor, count(*) AS failed FROM failed GROUP BY extractor)
                SELECT c.extractor, coalesce(s.done, 0), coalesce(w.pending, 0), coalesce(s.stale, 0),
                       coalesce(f.failed, 0)
                FROM extractor_current c
                LEFT JOIN shown s USING (extractor) LEFT JOIN waiting w USING (extractor)
                LEFT JOIN failing f USING (extractor)
                ORDER BY c.extractor <> 'probe', c.extractor
                """
            ).fetchall()
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
