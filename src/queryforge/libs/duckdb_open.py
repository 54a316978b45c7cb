"""Opening DuckDB database files safely from several threads of one process.

DuckDB's Python package shares one database instance per file within a process. When two threads
open the same file at the same moment, one of them can get the instance before the Python scan
functions are registered on it, and its next query over an Arrow table fails with "Table Function
with name python_arrow_scan does not exist". In-process worker slots and threaded tests open the
warehouse concurrently, so every file-backed connection is opened under one process-wide lock.
Opening takes milliseconds; queries are not serialised.
"""

from __future__ import annotations

import threading

import duckdb

_OPENING = threading.Lock()


def open_duckdb(path: str, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """`duckdb.connect(path)`, serialised with every other open in this process."""
    with _OPENING:
        return duckdb.connect(path, read_only=read_only)
