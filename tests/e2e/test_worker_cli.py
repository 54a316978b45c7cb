"""End-to-end through the real CLI: submit, worker processes, time limits, hard cancel, schedules.

Slow steps are made with the fault point at the start of every step (`QUERYFORGE_FAULTS=
step.<id>=sleep:N`), set only in the worker's environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from queryforge.workspace import Workspace

QF = str(Path(sys.executable).with_name("queryforge"))
pytestmark = pytest.mark.slow

PIPELINE = """
name: orders_copy
params:
  status: shipped
steps:
  - id: orders
    extract: {path: data/orders.csv}
  - id: wanted
    filter: {input: orders, where: "status = '${status}'"}
  - id: slow
    select: {input: wanted, columns: [order_id, customer_id, amount]}
    timeout_s: 1
  - id: out
    load: {input: slow, table: orders_copy, mode: replace}
"""


def qf(ws: Path, *args: str, env: dict[str, str] | None = None, check: bool = True) -> Any:
    done = subprocess.run(
        [QF, *args, "-w", str(ws)], capture_output=True, text=True, env=env or os.environ.copy(), timeout=120
    )
    if check:
        assert done.returncode == 0, done.stderr + done.stdout
    return done


def qf_json(ws: Path, *args: str) -> Any:
    return json.loads(qf(ws, *args, "--json").stdout)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    Workspace.init(root).close()
    (root / "pipelines" / "orders_copy.yaml").write_text(PIPELINE)
    return root


def faulty(**points: str) -> dict[str, str]:
    return {**os.environ, "QUERYFORGE_FAULTS": ",".join(f"{k}={v}" for k, v in points.items())}


def warehouse_tables(ws: Path) -> set[str]:
    if not (ws / ".queryforge" / "warehouse.duckdb").exists():
        return set()
    with closing(duckdb.connect(str(ws / ".queryforge" / "warehouse.duckdb"), read_only=True)) as con:
        return {
            f"{s}.{n}"
            for s, n in con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall()
        }


def shipped_orders(ws: Path) -> list[tuple[Any, ...]]:
    """What the pipeline should publish, computed by plain DuckDB from the CSV."""
    with closing(duckdb.connect()) as con:
        return sorted(
            con.execute(
                "SELECT order_id, customer_id, amount FROM read_csv_auto(?) WHERE status = 'shipped'",
                [str(ws / "data" / "orders.csv")],
            ).fetchall()
        )


def published(ws: Path) -> list[tuple[Any, ...]]:
    with closing(duckdb.connect(str(ws / ".queryforge" / "warehouse.duckdb"), read_only=True)) as con:
        return sorted(con.execute("SELECT order_id, customer_id, amount FROM orders_copy").fetchall())


def test_submit_then_a_worker_drains_the_queue(ws: Path) -> None:
    first = qf_json(ws, "submit", "orders_copy")
    again = qf_json(ws, "submit", "orders_copy")
    other = qf_json(ws, "submit", "orders_copy", "--param", "status=cancelled")
    assert first["created"] and not again["created"] and again["run_id"] == first["run_id"]
    assert (first["position"], other["position"]) == (1, 2)
    listed = {r["id"]: r["position"] for r in qf_json(ws, "runs", "list", "--status", "queued")}
    assert listed == {first["run_id"]: 1, other["run_id"]: 2}
    text = qf(ws, "submit", "orders_copy").stdout
    assert "already submitted" in text and "--force" in text

    qf(ws, "worker", "--drain", "--concurrency", "2")

    runs = {r["id"]: r["status"] for r in qf_json(ws, "runs", "list")}
    assert runs == {first["run_id"]: "succeeded", other["run_id"]: "succeeded"}
    events = [
        json.loads(line) for line in qf(ws, "runs", "events", first["run_id"], "--json").stdout.splitlines()
    ]
    assert [e["status"] for e in events if e["kind"] == "run"] == ["queued", "running", "succeeded"]


def test_the_in_process_pool_drains_the_queue_with_threads_of_one_process(ws: Path) -> None:
    """The embedded pool of the local default: slots are threads, so every claim names one pid."""
    statuses = ["shipped", "cancelled", "pending", "returned", "delivered", "lost"]
    ids = [qf_json(ws, "submit", "orders_copy", "--param", f"status={s}")["run_id"] for s in statuses]

    qf(ws, "worker", "--drain", "--in-process", "--concurrency", "3")

    runs = qf_json(ws, "runs", "list")
    assert {r["id"]: r["status"] for r in runs} == dict.fromkeys(ids, "succeeded"), [
        (r["id"], r["status"], r["attempt"], r["error_message"]) for r in runs if r["status"] != "succeeded"
    ]
    owners = set()
    for run_id in ids:
        events = [json.loads(line) for line in qf(ws, "runs", "events", run_id, "--json").stdout.splitlines()]
        owners |= {
            e["detail"].removeprefix("claimed by ")
            for e in events
            if (e["detail"] or "").startswith("claimed")
        }
    assert len({o.split(":")[-2] for o in owners}) == 1  # one process ...
    assert {o.split(":")[-1] for o in owners} <= {"0", "1", "2"}  # ... three slots
    for run_id, status in zip(ids, statuses, strict=True):  # each run loaded its own rows
        loads = qf_json(ws, "runs", "show", run_id)["run"]["result"]["loads"]
        assert [load["rows"] for load in loads] == [len(orders_with_status(ws, status))], status


def orders_with_status(ws: Path, status: str) -> list[tuple[Any, ...]]:
    """Computed by plain DuckDB from the CSV, independently of QueryForge."""
    with closing(duckdb.connect()) as con:
        return con.execute(
            "SELECT order_id FROM read_csv_auto(?) WHERE status = ?",
            [str(ws / "data" / "orders.csv"), status],
        ).fetchall()


def test_a_step_over_its_timeout_is_stopped_retried_once_then_failed(ws: Path) -> None:
    run_id = qf_json(ws, "submit", "orders_copy")["run_id"]
    started = time.monotonic()
    qf(ws, "worker", "--drain", env=faulty(**{"step.slow": "sleep:20"}))
    assert time.monotonic() - started < 20  # the 20 s sleep was cut short, twice
    run = qf_json(ws, "runs", "show", run_id)
    assert (run["run"]["status"], run["run"]["error_class"]) == ("failed", "TIMEOUT")
    assert "timeout_s of 1 s" in run["run"]["error_message"]
    slow = next(s for s in run["steps"] if s["step_id"] == "slow")
    assert (slow["status"], slow["failure_class"], slow["retry_count"]) == ("failed", "TIMEOUT", 1)
    assert "main.orders_copy" not in warehouse_tables(ws)
    # Without the fault the same run resumes and publishes.
    qf(ws, "runs", "resume", run_id)
    assert published(ws) == shipped_orders(ws)


def test_cancel_stops_a_running_run_hard_after_the_grace_period(ws: Path) -> None:
    run_id = qf_json(ws, "submit", "orders_copy")["run_id"]
    env = {**faulty(**{"step.publish:warehouse": "sleep:60"}), "QUERYFORGE_CANCEL_GRACE_S": "1"}
    worker = subprocess.Popen([QF, "worker", "-w", str(ws)], env=env, stderr=subprocess.DEVNULL)

    def run() -> dict[str, Any]:
        return next(r for r in qf_json(ws, "runs", "list") if r["id"] == run_id)

    def steps() -> dict[str, str]:
        lines = qf(ws, "runs", "events", run_id, "--json").stdout.splitlines()
        return {e["step_id"]: e["status"] for e in map(json.loads, lines) if e["kind"] == "step"}

    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and steps().get("publish:warehouse") != "running":
            time.sleep(0.3)
        assert [s["step_id"] for s in run()["staged"]] == ["out"]  # staged, not yet published
        assert "stopping" in qf(ws, "runs", "cancel", run_id).stdout
        while time.monotonic() < deadline and run()["status"] == "running":
            time.sleep(0.3)
        assert run()["status"] == "cancelled"
        leftovers = {"unknown"}
        while time.monotonic() < deadline and leftovers:
            # the supervisor drops the staging of its killed slot's run (the file is busy till then)
            with contextlib.suppress(duckdb.IOException):
                leftovers = {t for t in warehouse_tables(ws) if t.startswith("_qf_staging.")}
            time.sleep(0.3)
        assert leftovers == set()
        assert "main.orders_copy" not in warehouse_tables(ws)  # production untouched
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)


def test_a_due_schedule_fires_once_and_a_worker_runs_it(ws: Path) -> None:
    added = qf_json(ws, "schedules", "add", "orders_copy", "--cron", "*/5 * * * *", "--tz", "Europe/Berlin")
    assert added["name"] == "orders_copy" and len(added["next"]) == 3
    with Workspace(ws) as opened:
        record = opened._schedule_repo().get("orders_copy")
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        due = now - timedelta(minutes=now.minute % 5 + 5)  # a */5 tick that was missed
        assert opened._schedule_repo().advance(
            record.id, expected_next=record.next_fire_at, new_next=due, fired_at=None
        )
    first = qf(ws, "scheduler", "--once").stdout
    second = qf(ws, "scheduler", "--once").stdout  # a second scheduler pass (or process) fires nothing new
    assert "orders_copy: tick" in first and second.strip() == ""
    queued = qf_json(ws, "runs", "list", "--status", "queued")
    assert [r["trigger"] for r in queued] == ["schedule:orders_copy"]
    qf(ws, "worker", "--drain")
    assert published(ws) == shipped_orders(ws)
    listed = qf_json(ws, "schedules", "list")
    assert listed[0]["last_fire_at"] is not None and not listed[0]["paused"]
    qf(ws, "schedules", "pause", "orders_copy")
    assert qf_json(ws, "schedules", "list")[0]["paused"]
    bad = qf(ws, "schedules", "add", "orders_copy", "--cron", "61 * * * *", "--name", "x", check=False)
    assert bad.returncode == 2 and "five fields" in bad.stderr
