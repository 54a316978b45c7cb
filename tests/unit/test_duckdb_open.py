"""Threads of one process opening the same DuckDB file at once must all be able to scan Arrow data.

Without the lock in `open_duckdb`, DuckDB's Python package hands a shared instance to a thread before
its Arrow scan function is registered ("python_arrow_scan does not exist"): in-process worker slots
publishing into one warehouse failed that way now and then.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow as pa

from queryforge.libs.duckdb_open import open_duckdb


def test_concurrent_opens_of_one_file_can_all_scan_arrow(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.duckdb")
    with open_duckdb(path) as con:
        con.execute("CREATE TABLE t (a INTEGER)")
    rows = pa.table({"a": [1, 2, 3]})
    errors: list[str] = []
    rounds, threads = 150, 3

    def work() -> None:
        for _ in range(rounds):
            try:
                con = open_duckdb(path)
                con.register("rows", rows)
                con.execute("INSERT INTO t SELECT * FROM rows")
                con.close()
            except Exception as exc:  # collected: the assertion below shows them all
                errors.append(str(exc).splitlines()[0])

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    with open_duckdb(path, read_only=True) as con:
        assert con.execute("SELECT count(*), sum(a) FROM t").fetchone() == (
            rounds * threads * 3,
            rounds * threads * 6,
        )
