"""DuckDB's engine for the read paths, without the duckdb package's Python layer.

`import duckdb` (2.x) also loads its relational and expression APIs, the Arrow and polars
sources and importlib.metadata: about 0.1 s of CPU, a third of what `muscat status` and
`muscat sql` may take in all. Reading needs only connections, results and exceptions, which are
the C extension `_duckdb` itself (the very objects `duckdb` re-exports, so `except duckdb.Error`
catches what this raises). Writers import `duckdb` in full: registering Arrow tables needs the
sources its Python layer installs.
"""

from __future__ import annotations

try:
    import _duckdb as duckdb
except ImportError:  # a duckdb laid out otherwise: the whole package, slower to import
    import duckdb  # type: ignore[no-redef]

__all__ = ["duckdb"]
