"""Time as the catalogue stores it.

A module of its own so that the modules below the database (migrations, the workers) can take
the catalogue's clock without importing catalog/database.py.
"""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> datetime:
    """Now, as the catalogue stores times: UTC, without a time zone (TIMESTAMP columns)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)
