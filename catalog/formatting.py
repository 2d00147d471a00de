"""Turning results into text for a terminal, CSV or JSON (used by the CLI).

One rule for every output: NULL is NULL (empty in CSV, null in JSON); BLOBs are hexadecimal
(`deadbeef`); NaN and infinities print as `nan`, `inf`, `-inf` in tables and CSV and are null in
JSON, which has no such numbers; DECIMAL and HUGEINT keep every digit (also in JSON); nested
values (LIST, ARRAY, STRUCT, MAP) are JSON text in CSV, and JSON arrays and objects in JSON.
"""

from __future__ import annotations

import io
import json
import math
import sys
from datetime import date, datetime, time, timedelta
from typing import Any, Sequence

# csv is imported where CSV is written, and decimal not by this module (_decimal_type): `muscat
# status` prints tables of ints and strings, and the two cost ~2 ms of its start-up.


def _decimal_type() -> type | None:
    """decimal.Decimal, if the module is loaded: no Decimal value exists before it is (DuckDB
    imports it to make one), so without it nothing needs telling apart."""
    module = sys.modules.get("decimal")
    return module.Decimal if module is not None else None


def _json_key(key: Any) -> str:
    # A MAP's keys may be numbers, dates, ...: JSON's keys are strings, so their text.
    if isinstance(key, str):
        return key
    if key is None:
        return "null"
    return repr(key) if isinstance(key, float) else _text(key)


def _json_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "null"
    decimal = _decimal_type()
    if decimal is not None and isinstance(value, decimal):
        return str(value) if value.is_finite() else "null"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return json.dumps(bytes(value).hex())
    if isinstance(value, (datetime, date, time)):
        return json.dumps(value.isoformat())
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(str(value), ensure_ascii=False)  # UUID, timedelta, ...


def _json(value: Any, indent: str | None, level: int = 0) -> str:
    """JSON text of `value`, written here rather than by json.dumps so that a DECIMAL or a
    HUGEINT keeps its digits (json.dumps knows no Decimal, and a float has 17 digits)."""
    if isinstance(value, dict):
        items = [(json.dumps(_json_key(k), ensure_ascii=False), _json(v, indent, level + 1)) for k, v in value.items()]
        pairs = [f"{k}: {v}" for k, v in items]
    elif isinstance(value, (list, tuple, set, frozenset)):
        values = sorted(value) if isinstance(value, (set, frozenset)) else value
        pairs = [_json(v, indent, level + 1) for v in values]
    else:
        return _json_scalar(value)
    opening, closing = ("{", "}") if isinstance(value, dict) else ("[", "]")
    if not pairs:
        return opening + closing
    if indent is None:
        return opening + ", ".join(pairs) + closing
    inner, outer = "\n" + indent * (level + 1), "\n" + indent * level
    return opening + inner + ("," + inner).join(pairs) + outer + closing


def to_json(data: Any) -> str:
    return _json(data, "  ")


def rows_to_json(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    return to_json([dict(zip(columns, row)) for row in rows])


def _text(value: Any) -> str:
    """A value as text, the same in tables and CSV: DuckDB's spelling where Python's differs."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (datetime, time)):
        return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    return str(value)


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_cell(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_cell(k)}: {_cell(v)}" for k, v in value.items()) + "}"
    text = _text(value)
    return text.replace("\n", "\\n").replace("\t", "\\t")


def _csv_cell(value: Any) -> str:
    # Data for programs: text exactly as stored (the csv module quotes newlines), numbers whole.
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple, dict)):
        return _json(value, None)
    return _text(value)


def rows_to_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    import csv

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(v) for v in row])
    return out.getvalue()


def rows_to_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], numeric_right: bool = True) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(c) for c in columns]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    decimal = _decimal_type()
    numbers = (int, float) if decimal is None else (int, float, decimal)
    right = [
        numeric_right and bool(rows)
        and all(isinstance(r[i], numbers) and not isinstance(r[i], bool) or r[i] is None for r in rows)
        for i in range(len(columns))
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)).rstrip()

    out = [line(columns), line(["-" * w for w in widths])]
    out.extend(line(row) for row in cells)
    return "\n".join(out)
