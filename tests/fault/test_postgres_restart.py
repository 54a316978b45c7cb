"""A run survives its PostgreSQL server being restarted mid-run.

The data source and the target are a PRIVATE PostgreSQL server (tests/private_postgres.py) that the
test stops and starts; the metadata store is a fresh database on the shared server, which is never
touched. Runs are executed by `queryforge worker` subprocesses.

1. The server goes down while the run is inside its extract step (a fault point holds the step at
   its start, so the stop lands there and not in the claim-time validation): the read fails with a
   TRANSIENT error, the step's retry policy tries it again once the server is back, the run
   succeeds, and the target equals the source (compared by PostgreSQL itself, EXCEPT ALL both ways,
   and with rows computed in Python).
2. The server restarts while the run sleeps inside the publish transaction: the transaction dies
   (TRANSIENT), the worker gives the run back to the queue with a backoff, and a second worker
   (without the fault) resumes it: the staged data is still there, so it is published exactly once.
   Append mode into a table that already has rows, so a double publish would show as duplicates.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from queryforge.config import Settings
from queryforge.store import RunRecord
from queryforge.workspace import Workspace
from tests.fault.test_publish_crash import QF
from tests.private_postgres import PrivatePostgres, private_postgres
from tests.services import postgres_database

pytestmark = pytest.mark.slow

SOURCE_ROWS = 50_000
NEW_ROWS = 5_000
OLD_ROWS = 100

SRC_STEP = """
  - id: src
    extract: {connection: prod, table: source_events}
"""
REGIONS_STEP = """
  - id: regions
    extract: {connection: prod, table: regions}
"""
EXTRACT_PIPELINE = """
name: copy_events
retry: {attempts: 5, delays: [1, 2]}
steps:%s
  - id: priced
    sql: |
      SELECT s.id, s.amount, s.note, CAST(s.amount * 100 AS BIGINT) AS amount_cents, r.label AS region
      FROM src s JOIN regions r ON r.k = s.id %% 3
  - id: out
    load: {input: priced, connection: prod, table: events_copy, mode: replace}
"""
# `src` first: the restart hits a connector that has not connected yet. `regions` first: the
# connector holds a connection opened before the restart, which the retry has to replace.
ORDERS = {"first-step": SRC_STEP + REGIONS_STEP, "after-earlier-read": REGIONS_STEP + SRC_STEP}


APPEND_PIPELINE = """
name: append_events
retry: {attempts: 5, delays: [1, 2]}
steps:
  - id: src
    extract: {connection: prod, query: "SELECT id, amount, note FROM new_events"}
  - id: priced
    derive: {input: src, columns: {amount_cents: "CAST(amount * 100 AS BIGINT)"}}
  - id: out
    load: {input: priced, connection: prod, table: events_out, mode: append}
"""

Row = tuple[int, float, str, int]


def amount(i: int) -> float:
    return (i * 7 % 1000) / 10.0


def expected(ids: range, note: str = "note") -> list[Row]:
    """Rows as the pipeline should produce them, computed in Python."""
    return [(i, amount(i), f"{note} {i}", round(amount(i) * 100)) for i in ids]


@pytest.fixture
def meta() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture
def pg() -> Iterator[PrivatePostgres]:
    with private_postgres() as server:
        yield server


def sql(url: str, statement: str, args: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as con:
        cur = con.execute(statement, args)
        return cur.fetchall() if cur.description else []


def make_ws(root: Path, pg: PrivatePostgres, name: str, pipeline: str) -> Path:
    Workspace.init(root, bare=True).close()
    config = yaml.safe_load((root / "queryforge.yaml").read_text())
    config["connections"]["prod"] = {"url": pg.url, "writable": True}
    config["target"] = "prod"
    (root / "queryforge.yaml").write_text(yaml.safe_dump(config))
    (root / "pipelines" / f"{name}.yaml").write_text(pipeline)
    return root


def env(meta: str, faults: str | None = None) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k != "QUERYFORGE_FAULTS"}
    base.update(
        {
            "QUERYFORGE_DATABASE_URL": meta,
            "QUERYFORGE_LEASE_S": "10",
            "QUERYFORGE_HEARTBEAT_S": "0.5",
        }
    )
    if faults:
        base["QUERYFORGE_FAULTS"] = faults
    return base


def start_worker(root: Path, meta: str, faults: str | None = None, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [QF, "worker", "--drain", *args, "-w", str(root)],
        env=env(meta, faults),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(worker: subprocess.Popen[str], timeout: float = 60) -> str:
    """Wait for a `worker --drain` to exit; its output, for failure messages."""
    try:
        out, err = worker.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        worker.kill()
        out, err = worker.communicate()
        pytest.fail(f"the worker did not exit within {timeout} s:\n{out}\n{err}")
    return f"worker exit {worker.returncode}\nstdout:\n{out}\nstderr:\n{err}"


def wait_for(
    what: str, ready: Callable[[], bool], worker: subprocess.Popen[str], timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if worker.poll() is not None:
            pytest.fail(f"the worker exited before {what}:\n{finish(worker)}")
        time.sleep(0.02)
    worker.kill()
    pytest.fail(f"timed out waiting for {what}:\n{finish(worker)}")


def describe(ws: Workspace, run: RunRecord) -> str:
    steps = [
        (s.step_id, s.status, s.retry_count, s.failure_class, s.message) for s in ws.repo.list_steps(run.id)
    ]
    return f"run {run.id}: {run.status} {run.error_class}: {run.error_message}\nsteps: {steps}"


def step(ws: Workspace, run_id: str, step_id: str) -> Any:
    return next((s for s in ws.repo.list_steps(run_id) if s.step_id == step_id), None)


def failed_tries(ws: Workspace, run_id: str, step_id: str) -> list[str | None]:
    """The failure class of every failed try of a step, from the run's events."""
    return [
        e["detail"]
        for e in ws.repo.list_events(run_id)
        if e["kind"] == "step" and e["step_id"] == step_id and e["status"] == "failed"
    ]


def staging_tables(url: str) -> list[str]:
    return [
        r[0]
        for r in sql(
            url,
            "SELECT n.nspname || '.' || c.relname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'r' AND n.nspname NOT IN ('public', 'pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg\\_%' AND c.relname <> '_qf_published'",
        )
    ]


def differences(url: str, left: str, right: str) -> int:
    """Rows of `left` that `right` lacks, with multiplicity (EXCEPT ALL), computed by PostgreSQL."""
    rows = sql(url, f"SELECT count(*) FROM ({left} EXCEPT ALL {right}) d")
    return int(rows[0][0])


@pytest.mark.parametrize("order", list(ORDERS))
def test_server_down_during_extract_is_retried(
    tmp_path: Path, meta: str, pg: PrivatePostgres, order: str
) -> None:
    sql(pg.url, "CREATE TABLE regions (k INT, label TEXT)")
    sql(pg.url, "INSERT INTO regions VALUES (0, 'region-0'), (1, 'region-1'), (2, 'region-2')")
    sql(pg.url, "CREATE TABLE source_events (id BIGINT PRIMARY KEY, amount DOUBLE PRECISION, note TEXT)")
    sql(
        pg.url,
        "INSERT INTO source_events SELECT g, (g * 7 %% 1000) / 10.0, 'note ' || g "
        "FROM generate_series(1, %s::int) g",
        [SOURCE_ROWS],
    )
    root = make_ws(tmp_path / "ws", pg, "copy_events", EXTRACT_PIPELINE % ORDERS[order])
    with Workspace(root, Settings(database_url=meta)) as ws:
        run_id = ws.submit("copy_events").run_id  # validation reads the source's schema: the server is up

        # Each try of `src` sleeps 1.5 s at its start; the server is stopped during the first one.
        worker = start_worker(root, meta, faults="step.src=sleep:1.5")
        try:
            wait_for(
                "the extract step to start",
                lambda: getattr(step(ws, run_id, "src"), "status", None) == "running",
                worker,
            )
            pg.stop()
            stopped = time.monotonic()
            wait_for(
                "the extract's first try to fail",
                lambda: getattr(step(ws, run_id, "src"), "status", None) == "failed",
                worker,
            )
            seen = step(ws, run_id, "src")
            time.sleep(max(0.0, 2.0 - (time.monotonic() - stopped)))
        finally:
            if not pg.running():
                pg.start()
        output = finish(worker)

        run = ws.get_run(run_id)
        assert run.status == "succeeded", f"{describe(ws, run)}\n{output}"
        assert seen.failure_class == "TRANSIENT", (seen.failure_class, seen.message)
        src = step(ws, run_id, "src")
        assert src.status == "succeeded" and src.retry_count >= 1, describe(ws, run)
        assert src.rows_out == SOURCE_ROWS
        assert failed_tries(ws, run_id, "src")[:1] == ["TRANSIENT"], failed_tries(ws, run_id, "src")
        assert run.attempt == 1, "the step retry, not a second run attempt, should have recovered"

    # Production equals the source: compared by PostgreSQL, and with rows computed in Python.
    copied = (
        "SELECT id, amount, note, CAST(round(amount * 100) AS BIGINT), 'region-' || (id % 3) "
        "FROM source_events"
    )
    target = "SELECT id, amount, note, amount_cents, region FROM events_copy"
    assert differences(pg.url, copied, target) == 0
    assert differences(pg.url, target, copied) == 0
    rows = sql(pg.url, "SELECT id, amount, note, amount_cents, region FROM events_copy ORDER BY id")
    assert rows == [(*r, f"region-{r[0] % 3}") for r in expected(range(1, SOURCE_ROWS + 1))]
    assert staging_tables(pg.url) == []


def test_restart_inside_publish_transaction_requeues_and_publishes_once(
    tmp_path: Path, meta: str, pg: PrivatePostgres
) -> None:
    sql(pg.url, "CREATE TABLE new_events (id BIGINT PRIMARY KEY, amount DOUBLE PRECISION, note TEXT)")
    sql(
        pg.url,
        "INSERT INTO new_events SELECT g, (g * 7 %% 1000) / 10.0, 'new ' || g "
        "FROM generate_series(%s::int, %s::int) g",
        [1001, 1000 + NEW_ROWS],
    )
    sql(
        pg.url,
        "CREATE TABLE events_out (id BIGINT, amount DOUBLE PRECISION, note TEXT, amount_cents BIGINT)",
    )
    sql(
        pg.url,
        "INSERT INTO events_out SELECT g, (g * 7 %% 1000) / 10.0, 'old ' || g, "
        "CAST(round((g * 7 %% 1000) / 10.0 * 100) AS BIGINT) FROM generate_series(1, %s::int) g",
        [OLD_ROWS],
    )
    old = expected(range(1, OLD_ROWS + 1), "old")
    new = expected(range(1001, 1001 + NEW_ROWS), "new")
    production = "SELECT id, amount, note, amount_cents FROM events_out ORDER BY id"
    assert sql(pg.url, production) == old

    root = make_ws(tmp_path / "ws", pg, "append_events", APPEND_PIPELINE)
    with Workspace(root, Settings(database_url=meta)) as ws:
        run_id = ws.submit("append_events").run_id

        def in_publish_transaction() -> bool:
            """The run's connection sits idle inside the publish transaction, after its INSERT."""
            return bool(
                sql(
                    pg.url,
                    "SELECT 1 FROM pg_stat_activity WHERE datname = 'qf' AND state = 'idle in transaction' "
                    "AND query ILIKE 'INSERT INTO%events_out%'",
                )
            )

        # First worker: the publish sleeps 3 s inside its transaction; the server restarts meanwhile.
        # `--max-runs 1`: it must not claim the run again once its backoff has passed.
        first = start_worker(root, meta, "publish.in_transaction=sleep:3", "--max-runs", "1")
        try:
            wait_for("the publish transaction", in_publish_transaction, first)
            pg.restart()
        finally:
            if not pg.running():
                pg.start()
        output = finish(first)

        # The transaction died: nothing was published, the run is back in the queue with a backoff.
        run = ws.get_run(run_id)
        assert run.status == "queued", f"{describe(ws, run)}\n{output}"
        assert run.error_class == "TRANSIENT", describe(ws, run)
        assert run.not_before is not None, describe(ws, run)
        publish = step(ws, run_id, "publish:prod")
        assert publish.status == "failed" and publish.failure_class == "TRANSIENT", describe(ws, run)
        assert sql(pg.url, production) == old
        assert len(staging_tables(pg.url)) == 1, "the staged data must survive for the resume"

        # Second worker, without the fault: it claims the run once its backoff has passed.
        outputs = [output]
        deadline = time.monotonic() + 60
        while ws.get_run(run_id).status == "queued" and time.monotonic() < deadline:
            outputs.append(finish(start_worker(root, meta)))
            time.sleep(0.3)

        run = ws.get_run(run_id)
        assert run.status == "succeeded", describe(ws, run) + "\n" + "\n".join(outputs)
        assert run.attempt == 2, describe(ws, run)
        publish = step(ws, run_id, "publish:prod")
        assert publish.status == "succeeded" and publish.retry_count >= 1, describe(ws, run)
        assert failed_tries(ws, run_id, "publish:prod") == ["TRANSIENT"]

    rows = sql(pg.url, production)
    assert len(rows) == len(set(rows)) == OLD_ROWS + NEW_ROWS, "a publish was applied twice (or lost rows)"
    assert rows == sorted(old + new)
    assert staging_tables(pg.url) == []
