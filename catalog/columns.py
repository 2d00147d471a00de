"""Arrow columns built from their buffers, for the tables muscat hands to DuckDB (a scan's
reconciliation, the writer's batches of results, tag writes, splits).

`pyarrow.array()` of a Python list (or of a numpy array) first asks whether pandas is installed,
and importing pandas costs each scan, extract and watch about half a second of CPU it never
uses. Built here from `array` module buffers and byte strings instead: no pandas, and for the
large columns (one row per file of a first scan) no Python object per row on Arrow's side
either. `column()` is the general form; `ints`, `bools` and `texts` take the scanner's buffers
as they are.

Imported only where pyarrow is wanted (it imports pyarrow).
"""

from __future__ import annotations

from array import array
from datetime import datetime, timedelta, timezone
from itertools import accumulate
from typing import Any, Iterable, Sequence

import pyarrow as pa

_INT_CODES = {pa.int32(): "i", pa.int64(): "q", pa.uint64(): "Q", pa.uint32(): "I"}


def ints(values: Iterable[int], kind: Any = None) -> Any:
    """An integer column without nulls (int64 unless `kind` says otherwise)."""
    kind = kind or pa.int64()
    data = values if isinstance(values, array) else array(_INT_CODES[kind], values)
    return pa.Array.from_buffers(kind, len(data), [None, pa.py_buffer(data)])


def _bitmap(flags: Sequence[bool]) -> bytes:
    bits = bytearray((len(flags) + 7) // 8)
    for i, flag in enumerate(flags):
        if flag:
            bits[i >> 3] |= 1 << (i & 7)
    return bytes(bits)


def bools(values: Sequence[bool]) -> Any:
    """A boolean column without nulls."""
    n = len(values)
    if all(values):
        data = b"\xff" * ((n + 7) // 8)
    elif not any(values):
        data = bytes((n + 7) // 8)
    else:
        data = _bitmap(values)
    return pa.Array.from_buffers(pa.bool_(), n, [None, pa.py_buffer(data)])


def texts(values: Sequence[str | bytes | None], kind: Any = None) -> Any:
    """A string (or, with `kind` pa.binary(), a binary) column; None is null. str is stored
    as UTF-8 (a lone surrogate as '?'). Large offsets: any total length fits."""
    kind = kind or pa.string()
    large = pa.large_binary() if kind == pa.binary() else pa.large_string()
    n = len(values)
    nulls = list(values).count(None)
    if nulls == n:
        return pa.nulls(n, large)
    valid = pa.py_buffer(_bitmap([v is not None for v in values])) if nulls else None
    return texts_from(_encoded(values), large, valid)


def _encoded(values: Sequence[str | bytes | None]) -> list[bytes]:
    return [v.encode("utf-8", "replace") if isinstance(v, str) else (v or b"") for v in values]


def texts_from(parts: Sequence[bytes], kind: Any = None, valid: Any = None) -> Any:
    """A string column of `parts` (UTF-8 already; a binary `kind` for bytes): large unless
    `kind` is pa.string() or pa.binary(), whose 32-bit offsets raise OverflowError past 2 GiB."""
    kind = kind or pa.large_string()
    offsets = array("i" if kind in (pa.string(), pa.binary()) else "q", accumulate(map(len, parts), initial=0))
    return pa.Array.from_buffers(kind, len(parts), [valid, pa.py_buffer(offsets), pa.py_buffer(b"".join(parts))])


_FLOAT_CODES = {pa.float64(): "d", pa.float32(): "f"}
_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


def column(values: Sequence[Any], kind: Any) -> Any:
    """What `pa.array(values, kind)` gives for the catalogue's column types (integers, floats,
    strings, timestamp("us") from datetimes, lists of float32), None as null, without the pandas
    import pa.array makes. Other types go to pa.array."""
    n = len(values)
    nulls = sum(v is None for v in values)
    valid = pa.py_buffer(_bitmap([v is not None for v in values])) if nulls else None
    if kind == pa.string():
        # Built with 32-bit offsets, as pa.array makes it, not cast from a large column: a cast's
        # first call imports pyarrow.compute (0.2 s of CPU in each extract's planning).
        return pa.nulls(n, kind) if nulls == n else texts_from(_encoded(values), kind, valid)
    if nulls == n:
        return pa.nulls(n, kind)
    try:
        return _from_buffers(values, kind, n, valid)
    except TypeError:  # what these buffers cannot hold (a None inside a vector): as pyarrow makes it
        return pa.array(values, kind)


def _from_buffers(values: Sequence[Any], kind: Any, n: int, valid: Any) -> Any:
    if kind in _INT_CODES:
        data = array(_INT_CODES[kind], [0 if v is None else int(v) for v in values])
    elif kind in _FLOAT_CODES:
        data = array(_FLOAT_CODES[kind], [0.0 if v is None else float(v) for v in values])
    elif kind == pa.timestamp("us"):
        data = array("q", [0 if v is None else _microseconds(v) for v in values])
    elif pa.types.is_list(kind) and kind.value_type in _FLOAT_CODES:
        lengths = [0 if v is None else len(v) for v in values]
        flat = array(_FLOAT_CODES[kind.value_type], [float(x) for v in values if v is not None for x in v])
        offsets = array("i", accumulate(lengths, initial=0))
        items = pa.Array.from_buffers(kind.value_type, len(flat), [None, pa.py_buffer(flat)])
        return pa.ListArray.from_buffers(kind, n, [valid, pa.py_buffer(offsets)], children=[items])
    else:
        return pa.array(values, kind)
    return pa.Array.from_buffers(kind, n, [valid, pa.py_buffer(data)])


def _microseconds(moment: datetime) -> int:
    """As pyarrow stores a datetime in timestamp("us"): an aware one in UTC, a naive one as it is."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return (moment - _EPOCH) // _MICROSECOND
