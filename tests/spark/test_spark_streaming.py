"""Streaming pipelines on the Spark engine: Structured Streaming, `foreachBatch`, a checkpoint.

A file-drop folder and Spark's rate source feed micro-batches into SQLite, DuckDB and PostgreSQL.
Every sink is read back with the database's own driver and compared with what this test computes
from the input files in Python; the committed batches in `_qf_stream_batches` with Spark's batch ids.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
import yaml

from queryforge.errors import ChecksFailed, UserError
from queryforge.libs.spark import shared_session
from queryforge.runs.stream import StreamStatus
from queryforge.workspace import Workspace
from tests.services import postgres_database

Rows = list[dict[str, Any]]
DOUBLED = "SELECT id, upper(shop) AS shop, amount * 2 AS amount, ts FROM incoming"
TYPES = {"id": "BIGINT", "shop": "VARCHAR", "amount": "DOUBLE", "ts": "TIMESTAMP"}
APPEND = {"mode": "append"}
LITE = {"lite": {"url": "sqlite:data/sink.sqlite", "writable": True}}


# ---------------------------------------------------------------- helpers
@pytest.fixture(scope="module", autouse=True)
def spark_started() -> None:
    """The process's Spark session, started before the first test (its JVM takes seconds)."""
    shared_session()


@pytest.fixture
def build(tmp_path: Path) -> Iterator[Callable[..., Workspace]]:
    """build(connections, *pipelines) -> an open Workspace on the Spark engine (`engine: spark` in
    queryforge.yaml) with a `warehouse` DuckDB connection plus `connections`, and its pipelines."""
    opened: list[Workspace] = []

    def make(connections: dict[str, dict[str, Any]], *pipelines: dict[str, Any]) -> Workspace:
        root = tmp_path / "ws"
        Workspace.init(root, bare=True).close()
        config = {
            "name": "ws",
            "target": "warehouse",
            "engine": "spark",
            "connections": {
                "warehouse": {"url": "duckdb:.queryforge/warehouse.duckdb", "writable": True},
                **connections,
            },
        }
        (root / "queryforge.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        for pipeline in pipelines:
            text = yaml.safe_dump(pipeline, sort_keys=False)
            (root / "pipelines" / f"{pipeline['name']}.yaml").write_text(text)
        (root / "inbox").mkdir()
        ws = Workspace(root)
        opened.append(ws)
        return ws

    yield make
    for ws in opened:
        ws.close()


def folder_pipeline(name: str, load: dict[str, Any], *, max_rows: int = 2, **extra: Any) -> dict[str, Any]:
    """inbox/*.json -> `doubled` (a SQL transform) -> a unique-id check -> `load`."""
    return {
        "name": name,
        "mode": "streaming",
        "trigger": {"max_rows": max_rows, "max_wait_s": 0.2},
        **extra,
        "steps": [
            {"id": "incoming", "extract": {"path": "inbox/*.json", "types": TYPES}},
            {"id": "doubled", "sql": DOUBLED},
            {"id": "ok", "check": {"input": "doubled", "rules": [{"unique": ["id"]}, {"not_null": ["id"]}]}},
            {"id": "sink", "load": {"input": "doubled", **load}},
        ],
    }


def drop(ws: Workspace, name: str, rows: Rows, mtime: int) -> None:
    """Write elsewhere, then rename into the folder (as the docs ask), oldest first by mtime."""
    outside = ws.root / "outside"
    outside.mkdir(exist_ok=True)
    path = outside / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.utime(path, (mtime, mtime))
    os.replace(path, ws.root / "inbox" / name)


def shop_rows(n: int, count: int) -> Rows:
    return [
        {"id": n * 100 + i, "shop": f"shop{n}", "amount": n + i / 4, "ts": f"2024-03-0{1 + n} 10:0{i}:00"}
        for i in range(count)
    ]


def expected(files: dict[str, Rows], names: list[str]) -> list[tuple[Any, ...]]:
    """What `doubled` makes of the files, computed here: (id, SHOP, amount * 2, ts as text)."""
    return sorted(
        (r["id"], r["shop"].upper(), r["amount"] * 2, r["ts"].replace(" ", "T"))
        for n in names
        for r in files[n]
    )


def stream(
    ws: Workspace, pipeline: str, max_batches: int, timeout: float = 90, **kwargs: Any
) -> tuple[str, StreamStatus]:
    """`ws.stream` that gives up after `timeout` s (a stream waiting for data that never comes)."""
    stop = threading.Event()
    timer = threading.Timer(timeout, stop.set)
    timer.start()
    try:
        return ws.stream(pipeline, stop=stop, max_batches=max_batches, **kwargs)
    finally:
        timer.cancel()


def lite(ws: Workspace, sql: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(ws.root / "data" / "sink.sqlite")) as con:
        return con.execute(sql).fetchall()


def lite_sales(ws: Workspace) -> list[tuple[Any, ...]]:
    return sorted(lite(ws, "SELECT id, shop, amount, substr(ts, 1, 19) FROM sales"))


def lite_batches(ws: Workspace) -> list[tuple[Any, ...]]:
    return lite(ws, "SELECT batch, position FROM _qf_staging___qf_stream_batches ORDER BY batch")


def duck(ws: Workspace, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(ws.root / ".queryforge" / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(sql).fetchall()


# ---------------------------------------------------------------- 1. folder -> SQLite, restart, replay
def test_file_drop_into_sqlite_resumes_and_skips_a_replayed_batch(build: Callable[..., Workspace]) -> None:
    ws = build(LITE, folder_pipeline("drops", {"connection": "lite", "table": "sales", "mode": "append"}))
    files = {f"{n}.json": shop_rows(n, 3 + n) for n in range(3)}
    for n, (name, rows) in enumerate(files.items()):
        drop(ws, name, rows, mtime=1_700_000_000 + n)
    (ws.root / "inbox" / "notes.txt").write_text("not matched by the pattern\n")

    run_id, status = stream(ws, "drops", 2)

    assert (status.batches, status.rows, status.published_rows) == (2, 3, 12)  # rows: files, as on DuckDB
    assert lite_sales(ws) == [(i, s, a, t[:19]) for i, s, a, t in expected(files, list(files))]
    assert lite_batches(ws) == [(1, "spark-batch:0"), (2, "spark-batch:1")]
    run = ws.get_run(run_id)
    assert run.status == "succeeded" and run.trigger == "stream"
    assert (run.result or {})["batches"] == 2 and (run.result or {})["position"] == "spark-batch:1"
    checkpoint = ws.root / ".queryforge" / "streams" / "drops" / "checkpoint"
    commits = sorted(p.name for p in (checkpoint / "commits").iterdir() if not p.name.startswith("."))
    assert commits == ["0", "1"]

    # A restart reads only what came since: exactly the union, each row once. Before it, the
    # checkpoint loses its last commit, as a crash after our commit and before Spark's would leave
    # it: Spark runs batch id 1 again, and the sink, which holds batch 2, has it skipped.
    (checkpoint / "commits" / "1").unlink()
    (checkpoint / "commits" / ".1.crc").unlink(missing_ok=True)
    files["3.json"] = shop_rows(3, 2)
    drop(ws, "3.json", files["3.json"], mtime=1_700_000_100)
    _, later = stream(ws, "drops", 1)
    assert (later.batches, later.rows, later.last_batch) == (1, 1, 3)
    assert (checkpoint / "commits" / "1").is_file()  # Spark did run batch id 1 again
    assert lite_sales(ws) == [(i, s, a, t[:19]) for i, s, a, t in expected(files, list(files))]
    assert lite_batches(ws) == [(1, "spark-batch:0"), (2, "spark-batch:1"), (3, "spark-batch:2")]

    # Without its checkpoint the stream would read the folder from the start: refused.
    for path in sorted(checkpoint.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    with pytest.raises(UserError) as lost:
        stream(ws, "drops", 1)
    assert "checkpoint" in lost.value.message and "is gone" in lost.value.message


# ---------------------------------------------------------------- 2. folder -> PostgreSQL (merge)
def test_file_drop_into_postgres_merges_on_keys(build: Callable[..., Workspace]) -> None:
    with postgres_database() as url:
        pipeline = folder_pipeline(
            "pg_drops", {"connection": "pg", "table": "sales", "mode": "merge", "keys": ["id"]}, max_rows=10
        )
        ws = build({"pg": {"url": url, "writable": True}}, pipeline)
        files = {"a.json": shop_rows(1, 4), "b.json": shop_rows(2, 3)}
        drop(ws, "a.json", files["a.json"], mtime=1_700_000_000)
        drop(ws, "b.json", files["b.json"], mtime=1_700_000_001)

        _, status = stream(ws, "pg_drops", 1)

        assert (status.batches, status.rows, status.published_rows) == (1, 2, 7)
        with psycopg.connect(url) as con:
            rows = con.execute("SELECT id, shop, amount, ts FROM sales").fetchall()
            marks = con.execute(
                "SELECT stream, batch, position FROM _qf_staging._qf_stream_batches"
            ).fetchall()
        assert sorted((i, s, a, t.isoformat()) for i, s, a, t in rows) == expected(files, list(files))
        assert marks == [("pg_drops.incoming", 1, "spark-batch:0")]


# ---------------------------------------------------------------- 3. rate -> DuckDB
def test_rate_source_publishes_max_rows_per_batch(build: Callable[..., Workspace]) -> None:
    pipeline = {
        "name": "ticks",
        "mode": "streaming",
        "trigger": {"max_rows": 5, "max_wait_s": 0.2},
        "steps": [
            {"id": "incoming", "extract": {"connection": "gen", "stream": "ticks"}},
            {
                "id": "sink",
                "load": {"input": "incoming", "connection": "warehouse", "table": "ticks", **APPEND},
            },
        ],
    }
    ws = build({"gen": {"url": "rate://"}}, pipeline)

    _, status = stream(ws, "ticks", 3)

    assert (status.batches, status.rows, status.published_rows) == (3, 15, 15)
    assert duck(ws, "SELECT value FROM ticks ORDER BY value") == [(v,) for v in range(15)]
    assert duck(ws, 'SELECT typeof("timestamp") FROM ticks LIMIT 1') == [("TIMESTAMP",)]

    ws.use_engine("duckdb")  # the rate source exists only in Spark: DuckDB says so before it starts
    with pytest.raises(UserError) as refused:
        stream(ws, "ticks", 1)
    assert "only the Spark engine streams" in refused.value.message
    assert len(ws.list_runs(pipeline="ticks")) == 1


# ---------------------------------------------------------------- 4. checks: stop, quarantine
def test_failing_check_stops_or_quarantines(build: Callable[..., Workspace]) -> None:
    stop = folder_pipeline("strict", {"connection": "lite", "table": "sales", "mode": "append"}, max_rows=2)
    lenient = folder_pipeline(
        "lenient", {"connection": "lite", "table": "lenient", "mode": "append"}, max_rows=1,
        on_check_failure="quarantine",
    )  # fmt: skip
    ws = build(LITE, stop, lenient)
    clean = shop_rows(1, 3)
    dup = [*shop_rows(2, 2), shop_rows(2, 1)[0]]  # id 200 twice
    drop(ws, "a.json", clean, mtime=1_700_000_000)
    drop(ws, "b.json", dup, mtime=1_700_000_001)

    with pytest.raises(ChecksFailed) as failed:  # one batch of both files
        stream(ws, "strict", 1)
    assert "Batch 1 of stream 'strict.incoming'" in failed.value.message
    assert "unique" in failed.value.message and "nothing of it was published" in failed.value.message
    assert lite(ws, "SELECT name FROM sqlite_master WHERE name = 'sales'") == []
    runs = ws.list_runs(pipeline="strict")
    assert runs[0].status == "failed" and "unique" in (runs[0].error_message or "")

    _, status = stream(ws, "lenient", 2)  # its own stream and checkpoint: reads both files
    assert (status.batches, status.quarantined_batches) == (2, 1)
    assert status.last_error is not None and "batch 2 quarantined" in status.last_error
    quarantined = sorted(lite(ws, "SELECT id, shop FROM lenient__quarantine"))
    assert quarantined == sorted((r["id"], r["shop"].upper()) for r in dup)


# ---------------------------------------------------------------- 5. refusals (no Spark needed)
def test_spark_refuses_a_broker_stream(build: Callable[..., Workspace]) -> None:
    pipeline = {
        "name": "bus_events",
        "mode": "streaming",
        "steps": [
            {"id": "incoming", "extract": {"connection": "bus", "stream": "x", "types": {"id": "BIGINT"}}},
            {"id": "sink", "load": {"input": "incoming", "connection": "warehouse", "table": "t", **APPEND}},
        ],
    }
    ws = build({"bus": {"url": "nats://127.0.0.1:4222"}}, pipeline)
    with pytest.raises(UserError) as refused:
        stream(ws, "bus_events", 1)
    assert "On the Spark engine a stream reads a file-drop folder" in refused.value.message
    assert ws.list_runs(pipeline="bus_events") == []
