"""After upgrades: what is stale and what redoing it costs (`reindex`), and clearing out what
has been superseded (`gc`)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .clock import utc_now

if TYPE_CHECKING:
    import duckdb

    from .config import Settings
    from .database import Database

# Before an extractor has run anywhere, the cost of a second of audio is taken as this many
# seconds of one worker (CPU: our CPU set runs about 50x realtime per core on a 2020s machine).
FALLBACK_SECONDS_PER_AUDIO_SECOND = {"cpu": 0.02, "gpu": 0.01}


def stale_summary(db: Database, settings: Settings, only: list[str] | None = None,
                  workers: int | None = None) -> dict[str, Any]:
    """What `muscat reindex --dry-run --json` prints (contract), with reasons and the basis of
    each estimate. Seconds are wall time with `workers` CPU processes."""
    from .extractor_state import sync_extractors

    sync_extractors(db, settings)
    workers = workers or settings.workers
    with db.read() as con:
        rows = con.execute(
            """
            WITH items AS (  -- one per audio (or file, for file-scoped extractors) and extractor
                SELECT s.extractor, any_value(s.reason) AS reason,
                       coalesce(any_value(a.duration_s), 0) AS duration
                FROM stale s LEFT JOIN audio a USING (audio_id)
                JOIN extractor_current c USING (extractor)
                GROUP BY s.extractor, run_subject(c.scope, s.path, s.audio_id)
            ),
            rates AS (  -- seconds of work per second of audio, from past runs
                SELECT extractor, device, sum(seconds) / nullif(sum(audio_seconds), 0) AS rate
                FROM runs WHERE status = 'ok' AND audio_seconds > 0
                GROUP BY extractor, device
            )
            SELECT i.extractor, c.device, count(*) AS stale, sum(i.duration) AS audio_seconds,
                   list(i.reason) AS reasons,
                   (SELECT max(rate) FROM rates r WHERE r.extractor = i.extractor
                      AND (r.device = c.device OR (c.device = 'gpu' AND r.device LIKE 'cuda%'))) AS rate
            FROM items i JOIN extractor_current c USING (extractor)
            WHERE len(?) = 0 OR list_contains(?, i.extractor)
            GROUP BY i.extractor, c.device
            ORDER BY i.extractor
            """,
            [only or [], only or []],
        ).fetchall()
    extractors: dict[str, dict[str, Any]] = {}
    for name, device, count, audio_seconds, reasons, rate in rows:
        basis = "measured" if rate is not None else "fallback"
        rate = rate if rate is not None else FALLBACK_SECONDS_PER_AUDIO_SECOND.get(device, 0.02)
        parallel = workers if device == "cpu" else 1
        extractors[name] = {
            "stale": count,
            "estimated_seconds": round(audio_seconds * rate / parallel, 1),
            "reasons": {r: reasons.count(r) for r in sorted(set(reasons))},
            "basis": basis,
        }
    return {
        "stale": sum(e["stale"] for e in extractors.values()),
        "estimated_seconds": round(sum(e["estimated_seconds"] for e in extractors.values()), 1),
        "extractors": extractors,
    }


@dataclass
class GcReport:
    superseded_runs: int = 0  # results whose replacement exists
    missing_files: int = 0  # file rows missing for longer than the limit
    orphaned_audio: int = 0  # audio no file holds any more, with its results
    values: int = 0  # feature rows freed with the runs above
    artifact_bytes: int = 0  # files (stems) removed with them
    temporary_files: int = 0  # leftovers of artifact writes that were killed
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"superseded_runs": self.superseded_runs, "missing_files": self.missing_files,
                "orphaned_audio": self.orphaned_audio, "values": self.values,
                "artifact_bytes": self.artifact_bytes, "temporary_files": self.temporary_files,
                "dry_run": self.dry_run}


def gc(db: Database, settings: Settings, older_than_days: float = 30.0, dry_run: bool = False) -> GcReport:
    """Drop superseded results (once their replacement exists), files missing for longer than
    `older_than_days`, and audio no file holds any more, and temporary files that killed
    artifact writes left behind. Stale results without a replacement are kept: they are what
    `features` shows until `reindex` has run."""
    from .extractor_state import sync_extractors

    sync_extractors(db, settings)
    cutoff = utc_now() - timedelta(days=older_than_days)
    report = GcReport(dry_run=dry_run)
    with db.write() as con:
        _mark_garbage(con, cutoff)
        report.superseded_runs = _count(con, "SELECT count(*) FROM gc_runs WHERE why = 'superseded'")
        report.missing_files = _count(con, "SELECT count(*) FROM gc_files")
        report.orphaned_audio = _count(con, "SELECT count(*) FROM gc_audio")
        # A newer result may have rewritten the same file (stems keep their path): only files
        # that no surviving result lists are removed.
        con.execute(
            """
            CREATE OR REPLACE TEMP TABLE gc_artifacts AS
            SELECT DISTINCT path, bytes FROM run_artifacts
            WHERE run_id IN (SELECT run_id FROM gc_runs)
              AND path NOT IN (SELECT path FROM run_artifacts WHERE run_id NOT IN (SELECT run_id FROM gc_runs))
            """
        )
        report.artifact_bytes = _count(con, "SELECT coalesce(sum(bytes), 0) FROM gc_artifacts")
        report.values = _count(
            con,
            "SELECT (SELECT count(*) FROM feature_values WHERE run_id IN (SELECT run_id FROM gc_runs)) "
            "+ (SELECT count(*) FROM feature_vector_values WHERE run_id IN (SELECT run_id FROM gc_runs))",
        )
        if not dry_run:
            for (path,) in con.execute("SELECT path FROM gc_artifacts").fetchall():
                _remove_file(path)
            for table in ("feature_values", "feature_vector_values", "run_artifacts", "runs"):
                con.execute(f"DELETE FROM {table} WHERE run_id IN (SELECT run_id FROM gc_runs)")
            con.execute("DELETE FROM file_tags WHERE file_id IN (SELECT file_id FROM gc_files)")
            con.execute("DELETE FROM files WHERE file_id IN (SELECT file_id FROM gc_files)")
            con.execute("DELETE FROM audio WHERE audio_id IN (SELECT audio_id FROM gc_audio)")
        for table in ("gc_runs", "gc_files", "gc_audio", "gc_artifacts"):
            con.execute(f"DROP TABLE temp.{table}")
    leftovers = leftover_temporaries(settings.artifacts_dir)
    report.temporary_files = len(leftovers)
    if not dry_run:
        for path in leftovers:
            _remove_file(str(path))
    return report


# A temporary artifact older than this was left by a write that was killed (a live write renames
# its file within seconds).
STALE_TEMPORARY_S = 3600.0


def leftover_temporaries(artifacts_dir: Path, older_than_s: float = STALE_TEMPORARY_S) -> list[Path]:
    """Temporary files of artifact writes that never finished (a killed process, a full disk)."""
    if not artifacts_dir.is_dir():
        return []
    cutoff = time.time() - older_than_s
    found = []
    for folder, _, names in os.walk(artifacts_dir):
        for name in names:
            if name.startswith(".") and ".tmp" in name:
                path = Path(folder) / name
                try:
                    if path.stat().st_mtime < cutoff:
                        found.append(path)
                except OSError:
                    pass
    return found


def _remove_file(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _count(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    return con.execute(sql).fetchone()[0]


def _mark_garbage(con: duckdb.DuckDBPyConnection, cutoff: datetime) -> None:
    con.execute(
        "CREATE OR REPLACE TEMP TABLE gc_files AS "
        "SELECT file_id FROM files WHERE status = 'missing' AND missing_since < ?",
        [cutoff],
    )
    # Audio that no file will hold once those are gone.
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE gc_audio AS
        SELECT audio_id FROM audio
        WHERE audio_id NOT IN (
            SELECT audio_id FROM files
            WHERE audio_id IS NOT NULL AND file_id NOT IN (SELECT file_id FROM gc_files)
        )
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE gc_runs AS
        -- Runs of an older identity (or failed ones) whose subject has a current ok result.
        -- The subject is a column, so that the match is a hash join (comparing per pair of
        -- runs grew with the square of an extractor's runs).
        WITH subjects AS (
            SELECT r.run_id, r.extractor, run_subject(c.scope, r.file_id, r.audio_id) AS subject,
                   r.version = c.version AND r.params_hash = c.params_hash AND r.status = 'ok' AS current_ok
            FROM runs r JOIN extractor_current c USING (extractor)
        )
        SELECT s.run_id, 'superseded' AS why
        FROM subjects s
        WHERE NOT s.current_ok
          AND EXISTS (
              SELECT 1 FROM subjects n
              WHERE n.extractor = s.extractor AND n.subject = s.subject AND n.current_ok
          )
        UNION ALL
        -- Results of files and audio that are being removed.
        SELECT r.run_id, 'removed' FROM runs r
        WHERE r.audio_id IN (SELECT audio_id FROM gc_audio)
           OR (r.audio_id IS NULL AND r.file_id IN (SELECT file_id FROM gc_files))
        """
    )
