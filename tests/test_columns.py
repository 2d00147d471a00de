"""catalog/columns.py builds the Arrow columns the catalogue's writes register, as pa.array would,
without pyarrow's pandas import (0.4 s of CPU at every scan, extract and watch start) or its
compute functions (0.2 s)."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest

from catalog.columns import column

CASES = [
    ([1, None, 3], pa.int64()), ([7, 8], pa.int32()), ([], pa.int64()), ([None, None], pa.int32()),
    ([1.5, None, math.nan, np.float32(2.5), 3, True, -math.inf], pa.float64()),
    (["a", None, "é", ""], pa.string()), ([], pa.string()), ([None], pa.string()),
    ([datetime(2026, 1, 2, 3, 4, 5, 678901), None, datetime(1969, 12, 31, 23, 59, 59),
      datetime(2020, 1, 1, tzinfo=timezone(timedelta(hours=5)))], pa.timestamp("us")),
    ([[1.0, 2.5], [], None, np.array([3, 4], np.float32)], pa.list_(pa.float32())),
    ([[0.1]], pa.list_(pa.float32())), ([[1.0, None]], pa.list_(pa.float32())),
]


@pytest.mark.parametrize("values,kind", CASES, ids=[f"{k}-{i}" for i, (_, k) in enumerate(CASES)])
def test_a_column_is_what_pa_array_makes(values, kind):
    made, expected = column(values, kind), pa.array(values, kind)
    assert made.type == kind and made.is_null().equals(expected.is_null())
    nan_safe = [("nan" if isinstance(v, float) and math.isnan(v) else v) for v in made.to_pylist()]
    assert nan_safe == [("nan" if isinstance(v, float) and math.isnan(v) else v) for v in expected.to_pylist()]


def test_the_writers_columns_do_not_import_pandas_or_arrows_compute_functions():
    code = ("import sys, datetime, pyarrow as pa; from catalog.columns import column; "
            "column([1, None], pa.int64()); column(['x'], pa.string()); column([1.5], pa.float64()); "
            "column([datetime.datetime(2026, 1, 1)], pa.timestamp('us')); column([[1.0]], pa.list_(pa.float32())); "
            "print('pandas' in sys.modules, 'pyarrow.compute' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False False"
