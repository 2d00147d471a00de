"""Helpers shared by extractors that report levels in decibels."""

from __future__ import annotations

import math

# Digital silence has no finite level: levels are floored here (and documented as such).
DB_FLOOR = -120.0
LUFS_FLOOR = -70.0  # EBU R128's absolute gate: nothing quieter counts


def to_db(amplitude: float, floor: float = DB_FLOOR) -> float:
    if amplitude <= 0:
        return floor
    return max(floor, 20.0 * math.log10(amplitude))


def power_to_db(power: float, floor: float = DB_FLOOR) -> float:
    if power <= 0:
        return floor
    return max(floor, 10.0 * math.log10(power))
