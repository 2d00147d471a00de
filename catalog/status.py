"""What the catalogue holds: `muscat status`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .database import Database


def status(db: Database) -> dict[str, Any]:
    """Counts in the shape of `muscat status --json` (contract), plus the roots."""
    with db.read() as con:
        present, missing = con.execute(
            "SELECT count(*) FILTER (WHERE status = 'present'), count(*) FILTER (WHERE status = 'missing') "
            "FROM files"
        ).fetchone()
        audio = con.execute(
            "SELECT count(DISTINCT audio_id) FROM files WHERE status = 'present' AND audio_id IS NOT NULL"
        ).fetchone()[0]
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
    return {
        "files": {"present": present, "missing": missing},
        "audio": audio,
        "extractors": {},
        "roots": roots,
    }
