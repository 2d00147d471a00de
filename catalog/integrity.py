"""Invariants of a catalogue, checked by the tests after every kind of change."""

from __future__ import annotations

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
}


def violations(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple]]:
    """The invariants that do not hold, each with a few offending rows."""
    found = {}
    for name, sql in CHECKS.items():
        rows = con.execute(sql + " LIMIT 5").fetchall()
        if rows:
            found[name] = rows
    return found
