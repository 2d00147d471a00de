"""muscat's library API: everything the CLI does, callable from Python.

    import catalog
    settings = catalog.load_settings(db="music.duckdb")
    db = catalog.Database(settings.db_path)
    report = catalog.scan(db, ["~/Music"], settings)
    print(catalog.status(db))
    columns, rows = catalog.query(db, "SELECT * FROM library LIMIT 5")
    nearest = catalog.similar(db, settings, "~/Music/track.flac", k=5, using="timbre")
    catalog.plot(db, settings, ["bpm"], "bpm.png")
    catalog.report(db, settings, "report.html")

Submodules are imported on first use so that `muscat status` stays fast and never loads the
heavy parts (torch, essentia) it does not need.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing's, without importing typing (a no-change rescan does not: console.py)
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Database": "catalog.database",
    "load_settings": "catalog.config",
    "Settings": "catalog.config",
    "MuscatError": "catalog.errors",
    "ConfigError": "catalog.errors",
    "DatabaseError": "catalog.errors",
    "CatalogLocked": "catalog.errors",
    "ReadOnlyViolation": "catalog.errors",
    "QueryError": "catalog.errors",
    "scan": "catalog.scanner",
    "ScanReport": "catalog.scanner",
    "status": "catalog.status",
    "stats": "catalog.status",
    "extractors": "catalog.status",
    "sync_extractors": "catalog.extractor_state",
    "extract": "catalog.extraction",
    "Engine": "catalog.extraction",
    "Watcher": "catalog.watcher",
    "stale_summary": "catalog.maintenance",
    "gc": "catalog.maintenance",
    "GcReport": "catalog.maintenance",
    "ExtractReport": "catalog.extraction",
    "query": "catalog.query",
    "similar": "catalog.similarity",
    "plot": "catalog.plots",
    "report": "catalog.reports",
    "UsageError": "catalog.errors",
    "split": "catalog.splits",
    "SplitReport": "catalog.splits",
    "duplicates": "catalog.duplicates",
    "DuplicateGroup": "catalog.duplicates",
    "export": "catalog.export",
    "feature_columns": "catalog.export",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'catalog' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    # Importing catalog.query (or catalog.status) binds the submodule under the same name as
    # the function it exports: the function wins, so that the second call works too.
    globals()[name] = value
    return value
