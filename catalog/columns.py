"""Arrow columns built from their buffers, for the tables a scan hands to DuckDB.

`pyarrow.array()` of a Python list (or of a numpy array) first asks whether pandas is installed,
and importing pandas costs a scan about half a second of CPU it never uses. Built here from
`array` module buffers and byte strings instead: no pandas, and for the large columns (one row
per file of a first scan) no Python object per row on Arrow's side either.

Imported only where pyarrow is wanted (it imports pyarrow).
"""

from __future__ import annotations

from array import array
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
    encoded = [v.encode("utf-8", "replace") if isinstance(v, str) else (v or b"") for v in values]
    valid = pa.py_buffer(_bitmap([v is not None for v in values])) if nulls else None
    return texts_from(encoded, large, valid)


def texts_from(parts: Sequence[bytes], kind: Any = None, valid: Any = None) -> Any:
    """A large string column of `parts` (UTF-8 already; pa.large_binary() for bytes)."""
    offsets = array("q", accumulate(map(len, parts), initial=0))
    return pa.Array.from_buffers(kind or pa.large_string(), len(parts),
                                 [valid, pa.py_buffer(offsets), pa.py_buffer(b"".join(parts))])
