"""Arrow results of one DuckDB statement, bound once.

DuckDB 2.0's Python relation (`con.sql(text)`) binds its text when it is built, to know its
columns, and binds it again when a reader runs it. Binding a `read_csv` sniffs the file, so
`con.sql(q).to_arrow_reader()` over a CSV sniffs it twice: ~0.15 s of one core for the 629 MB file of
`bench` `pipeline_10m` (decision 0007). The relation runs its text through `duckdb._seam.submit`,
which these helpers call directly: the same statement, the same streamed result, one bind. The
function is internal to the package, so it is used only when it is there with the result methods
the relation itself uses; otherwise the helpers fall back to the relation.

A `con.execute()` result is no way round: its Arrow output copies every row first (it does not
stream) and warns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import duckdb
import pyarrow as pa

DEFAULT_BATCH_ROWS = 131_072  # the relation's default


def _find_submit() -> Callable[..., Any] | None:
    try:
        from duckdb import _seam
    except ImportError:  # pragma: no cover - depends on the installed duckdb
        return None
    submit = getattr(_seam, "submit", None)
    result = getattr(_seam, "Result", None)
    if submit is None or not all(hasattr(result, m) for m in ("arrow_reader", "arrow_table")):
        return None  # pragma: no cover - depends on the installed duckdb
    return submit


_SUBMIT = _find_submit()


def arrow_reader(
    con: duckdb.DuckDBPyConnection, sql: str, batch_size: int = DEFAULT_BATCH_ROWS
) -> pa.RecordBatchReader:
    """Run one SELECT and stream its result; the reader holds `con` until it is read out or closed."""
    if _SUBMIT is None:  # pragma: no cover - depends on the installed duckdb
        return con.sql(sql).to_arrow_reader(batch_size)
    reader: pa.RecordBatchReader = _SUBMIT(con, sql, None, "stream", batch_size).arrow_reader()
    return reader


def arrow_table(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    """Run one SELECT and return its whole result."""
    if _SUBMIT is None:  # pragma: no cover - depends on the installed duckdb
        return con.sql(sql).to_arrow_table()
    table: pa.Table = _SUBMIT(con, sql, None, "arrow", DEFAULT_BATCH_ROWS).arrow_table()
    return table
