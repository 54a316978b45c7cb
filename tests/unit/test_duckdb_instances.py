"""Run work files attached to a kept DuckDB instance: reused, isolated, fenced, released.

The engine keeps one fenced in-memory instance per thread and ATTACHes each run's work.duckdb to it
(a fresh instance per run cost ~15 ms of CPU, the queue benchmark's largest item).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from sqlglot import exp

from queryforge.engine.duckdb import DuckDBEngine
from queryforge.errors import PermissionDenied, StepFailed


def select(sql: str) -> exp.Query:
    parsed = exp.maybe_parse(sql, dialect="duckdb")
    assert isinstance(parsed, exp.Query)
    return parsed


def test_runs_reuse_one_instance_but_see_only_their_own_work_file(tmp_path: Path) -> None:
    engine = DuckDBEngine()
    runs = tmp_path / ".queryforge" / "runs"
    first = engine.session(runs / "r1", allowed_dirs=[tmp_path])
    first.create_from_arrow(
        "src",
        pa.RecordBatchReader.from_batches(
            pa.schema([("x", pa.int64())]), [pa.record_batch([pa.array([1, 2, 3])], names=["x"])]
        ),
    )
    first.create("doubled", select("SELECT x * 2 AS y FROM src"), table=False)
    con = first.con
    first.close()

    second = engine.session(runs / "r2", allowed_dirs=[tmp_path])
    assert second.con is con  # the same instance, kept by this thread
    with pytest.raises(Exception, match="src"):
        second.describe("src")  # run r1's tables are not visible to run r2
    second.create("own", select("SELECT 42 AS answer"), table=True)
    second.close()

    # Each work file holds its own run's objects and is released: another instance can open it.
    with duckdb.connect(str(runs / "r1" / "work.duckdb"), read_only=True) as other:
        assert other.execute("SELECT sum(y) FROM doubled").fetchone() == (12,)
        names = {r[0] for r in other.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        assert names == {"src"}
    with duckdb.connect(str(runs / "r2" / "work.duckdb"), read_only=True) as other:
        assert other.execute("SELECT answer FROM own").fetchone() == (42,)

    again = engine.session(runs / "r1", allowed_dirs=[tmp_path])  # a resume reopens its file
    assert again.fetch(select("SELECT sum(y) FROM doubled"))[1] == [(12,)]
    again.close()


def test_a_kept_instance_keeps_its_fence(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("a\n1\n")
    root = tmp_path / "ws"
    engine = DuckDBEngine()
    for run in ("r1", "r2"):  # a fresh instance, then the kept one
        session = engine.session(root / ".queryforge" / "runs" / run, allowed_dirs=[root])
        with pytest.raises(PermissionDenied):
            session.create("leak", select(f"SELECT * FROM read_csv('{outside / 'secret.csv'}')"), table=True)
        with pytest.raises(StepFailed, match="locked"):
            session._run("set", "SET enable_external_access = true")
        session.close()


def test_a_work_file_that_cannot_be_attached_fails_cleanly_and_the_next_run_works(tmp_path: Path) -> None:
    engine = DuckDBEngine()
    runs = tmp_path / ".queryforge" / "runs"
    engine.session(runs / "ok", allowed_dirs=[tmp_path]).close()
    (runs / "bad").mkdir(parents=True)
    (runs / "bad" / "work.duckdb").write_bytes(b"not a database" * 1000)
    with pytest.raises(duckdb.Error):
        engine.session(runs / "bad", allowed_dirs=[tmp_path])
    after = engine.session(runs / "after", allowed_dirs=[tmp_path])
    after.create("v", select("SELECT 2 AS x"), table=True)
    assert after.fetch(select("SELECT x FROM v"))[1] == [(2,)]
    after.close()


def test_a_result_left_half_read_does_not_lock_the_run_out_of_its_work_file(tmp_path: Path) -> None:
    """A load whose target failed before reading its input out (the warehouse was busy) left a
    streamed result open: DuckDB 2.0 then refused every statement on the session, and the instance
    it kept alive held the work file, so the run's own retry could not attach it."""
    engine = DuckDBEngine()
    work = tmp_path / ".queryforge" / "runs" / "r1"
    session = engine.session(work, allowed_dirs=[tmp_path])
    session.create("big", select("SELECT range AS x FROM range(3000000)"), table=True)
    reader = session.read(select("SELECT * FROM big"))
    assert reader.read_next_batch().num_rows > 0  # half read, then abandoned
    assert session.fetch(select("SELECT count(*) FROM big"))[1] == [(3_000_000,)]  # the session goes on
    session.read(select("SELECT * FROM big")).read_next_batch()  # abandoned again
    session.close()

    retry = engine.session(work, allowed_dirs=[tmp_path])  # the run tried again by the same worker
    assert retry.fetch(select("SELECT max(x) FROM big"))[1] == [(2_999_999,)]
    retry.close()
