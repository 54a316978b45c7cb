"""The cost gate by plan, and the ceilings behind it (issue 10: defect 9, scope item 6).

`ask` drafts come from the scripted LLM server, so the drafts are exactly the hostile ones: a
3-way cross join of the demo's 5,000 orders (1.25e11 rows) and an unnest of a 200-million range
were estimated at ~5,000 rows and let through. `query` gets a time limit, a memory ceiling and a
row cap that hold even when nothing estimates the query.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlglot

from queryforge.config import Settings
from queryforge.engine.duckdb import DuckDBEngine, DuckDBSession
from queryforge.errors import FailureClass, QueryTimeout, QuotaExceeded
from queryforge.planner.service import CostPolicy
from queryforge.sql.generators import UNCOUNTED_LATERAL_ROWS
from queryforge.sql.safety import check_query
from queryforge.workspace import Workspace
from tests.conftest import CliResult
from tests.fakes.openai_server import FakeLLMServer, chat

CAP = CostPolicy().cap_rows


def draft(sql: str, name: str = "hostile") -> dict[str, Any]:
    return {
        "name": name,
        "description": "a drafted pipeline",
        "steps": [
            {"id": "orders", "extract": {"path": "data/orders.csv"}},
            {"id": "result", "sql": sql},
            {"id": "load", "load": {"input": "result", "table": name, "mode": "replace"}},
        ],
    }


CROSS_JOIN = draft("SELECT a.order_id FROM orders a, orders b, orders c")
UNNEST_RANGE = draft("SELECT o.order_id, unnest(range(200000000)) AS n FROM orders o")
ORDINARY = draft(
    "SELECT status, count(*) AS orders, sum(amount) AS revenue FROM orders GROUP BY status",
    name="revenue_by_status",
)
# Lateral generators (admitted by the policy since 2026-12-06): rows per input row that depend on the
# data cannot be counted before the query runs, and DuckDB's plan estimates them at about one row
# per input row, so the cost gate counts them as more than any generator may make.
LATERAL_RANGE = draft("SELECT o.order_id, r.n FROM orders o, range(o.customer_id) AS r(n)")
LATERAL_KEYWORD = draft(
    "SELECT o.order_id, r.n FROM orders o CROSS JOIN LATERAL generate_series(1, o.customer_id) AS r(n)"
)
LATERAL_UNNEST = draft("SELECT o.order_id, unnest(range(o.customer_id)) AS n FROM orders o")
LATERAL_WEEK = draft(
    "SELECT o.order_id, d.day FROM orders o, "
    "generate_series(o.order_date, o.order_date + INTERVAL 6 DAY, INTERVAL 1 DAY) AS d(day)",
    name="order_weeks",
)


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as fake:
        yield fake


@pytest.fixture
def ask(qf: Callable[..., CliResult], server: FakeLLMServer, demo: Path) -> Callable[[], CliResult]:
    def run() -> CliResult:
        return qf(
            "ask",
            "do the thing",
            "--commit",
            "--yes",
            "--json",
            cwd=demo,
            env=server.openai_env(),
        )

    return run


def cost_decisions(root: Path) -> list[dict[str, Any]]:
    with Workspace(root) as ws:
        return ws.repo.list_audit(limit=100, action="cost_gate")


@pytest.mark.parametrize(
    ("pipeline", "at_least"),
    [
        (CROSS_JOIN, 5000**3),
        (UNNEST_RANGE, 200_000_000),
        (LATERAL_RANGE, 5000 * UNCOUNTED_LATERAL_ROWS),
        (LATERAL_KEYWORD, 5000 * UNCOUNTED_LATERAL_ROWS),
        (LATERAL_UNNEST, 5000 * UNCOUNTED_LATERAL_ROWS),
    ],
    ids=["cross-join-3-way", "unnest-range-2e8", "lateral-range", "lateral-keyword", "lateral-unnest"],
)
def test_a_draft_over_the_cap_is_refused_and_audited(
    ask: Callable[[], CliResult], server: FakeLLMServer, demo: Path, pipeline: dict[str, Any], at_least: int
) -> None:
    server.script(chat(json.dumps(pipeline)))

    result = ask()

    assert result.code == 2, result.stdout + result.stderr
    out = result.json()
    assert out["status"] == "failed"
    assert out["error"]["class"] == FailureClass.QUOTA_EXCEEDED.value
    assert "This pipeline would scan about" in out["error"]["message"]  # over the cap or the budget
    assert out["published"] == []
    assert len(server.requests) == 1  # a cost refusal is never repaired
    [decision] = cost_decisions(demo)
    assert decision["decision"] == "block"
    assert decision["details"]["rows"] >= at_least > CAP
    assert not (demo / ".queryforge" / "warehouse.duckdb").exists() or "hostile" not in tables(demo)


def test_an_ordinary_draft_over_the_demo_data_is_allowed(
    ask: Callable[[], CliResult], server: FakeLLMServer, demo: Path
) -> None:
    server.script(chat(json.dumps(ORDINARY)))

    result = ask()

    assert result.code == 0, result.stdout + result.stderr
    assert result.json()["status"] == "succeeded"
    [decision] = cost_decisions(demo)
    assert decision["decision"] == "allow"
    assert 5000 <= decision["details"]["rows"] <= 20_000
    assert "revenue_by_status" in tables(demo)


def test_a_lateral_generator_counted_per_row_is_allowed(
    ask: Callable[[], CliResult], server: FakeLLMServer, demo: Path
) -> None:
    """`generate_series(d, d + INTERVAL 6 DAY, INTERVAL 1 DAY)` is 7 rows per order: 35,000 in all."""
    server.script(chat(json.dumps(LATERAL_WEEK)))

    result = ask()

    assert result.code == 0, result.stdout + result.stderr
    [decision] = cost_decisions(demo)
    assert decision["decision"] == "allow"
    assert 7 * 5000 <= decision["details"]["rows"] <= 100_000
    assert "order_weeks" in tables(demo)


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[DuckDBSession]:
    session = DuckDBEngine().session(None, allowed_dirs=[tmp_path])
    assert isinstance(session, DuckDBSession)
    session.con.execute(
        "CREATE TABLE t AS SELECT range AS n, DATE '2026-01-01' + range::INT AS d FROM range(5000)"
    )
    yield session
    session.close()


def _estimate(session: DuckDBSession, sql: str) -> int:
    return session.estimate_rows(check_query(sql))


def _planned(node: dict[str, Any]) -> int:
    """The largest estimated cardinality anywhere in an EXPLAIN json plan."""
    value = str((node.get("extra_info") or {}).get("Estimated Cardinality", ""))
    own = int(value) if value.isdigit() else 0
    return max([own, *(_planned(c) for c in node.get("children") or [])])


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM t, range(t.n) AS r(x)",
        "SELECT * FROM t CROSS JOIN LATERAL range(t.n) AS r(x)",
        "SELECT t.n, unnest(range(t.n)) AS x FROM t",
    ],
)
def test_lateral_generators_the_data_sizes_are_over_the_cap(scratch: DuckDBSession, sql: str) -> None:
    """The plan alone estimates ~one row per input row (12.5 million rows really); the gate refuses."""
    sent = check_query(sql).sql("duckdb")
    plan = json.loads(scratch.con.execute(f"EXPLAIN (FORMAT json) {sent}").fetchall()[0][1])
    assert max(_planned(n) for n in plan) <= 10_000
    assert _estimate(scratch, sql) > CAP


@pytest.mark.parametrize(
    ("sql", "rows"),
    [
        ("SELECT * FROM t, range(t.n, t.n + 10) AS r(x)", 10 * 5000),
        ("SELECT * FROM t, generate_series(t.d, t.d + INTERVAL 6 DAY, INTERVAL 1 DAY) AS r(x)", 7 * 5000),
        (
            "SELECT * FROM t, generate_series(t.d, t.d + INTERVAL 11 MONTH, INTERVAL 1 MONTH) AS r(x)",
            12 * 5000,
        ),
    ],
)
def test_lateral_generators_counted_per_row_are_estimated_by_their_count(
    scratch: DuckDBSession, sql: str, rows: int
) -> None:
    assert rows <= _estimate(scratch, sql) <= 2 * rows


def test_constant_generators_behind_lateral_count_as_before(scratch: DuckDBSession) -> None:
    sql = "SELECT * FROM t CROSS JOIN LATERAL range(100000) AS r(x)"
    assert _estimate(scratch, sql) >= 5000 * 100_000 > CAP
    assert sqlglot.parse_one(sql, read="duckdb").find(sqlglot.exp.Lateral) is not None  # as written


def tables(root: Path) -> set[str]:
    with closing(duckdb.connect(str(root / ".queryforge" / "warehouse.duckdb"), read_only=True)) as con:
        return {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}


# ---------------------------------------------------------------- query: time limit and row cap


@pytest.fixture
def warehouse(demo: Path) -> Path:
    """The demo workspace with its orders published to the warehouse (5,000 rows)."""
    with closing(duckdb.connect(str(demo / ".queryforge" / "warehouse.duckdb"))) as con:
        con.execute(f"CREATE TABLE orders AS SELECT * FROM read_csv('{demo / 'data' / 'orders.csv'}')")
    return demo


RUNAWAY = (
    "SELECT count(*) AS n FROM orders a, orders b, orders c, orders d WHERE a.amount + b.amount > d.amount"
)


def test_a_query_over_its_time_limit_is_stopped(warehouse: Path) -> None:
    caught: list[BaseException] = []

    def run() -> None:
        with Workspace(warehouse, Settings(query_timeout_s=0.5)) as ws:
            try:
                ws.query(RUNAWAY)
            except BaseException as exc:
                caught.append(exc)

    # A daemon thread, so that without a time limit this test fails instead of running for days.
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), "the query was not stopped"
    [error] = caught
    assert isinstance(error, QueryTimeout)
    assert error.failure_class is FailureClass.TIMEOUT
    assert "time limit of 0.5 s" in error.message
    assert error.hint and "narrow" in error.hint


def test_the_cli_says_the_time_limit_was_hit(qf: Callable[..., CliResult], warehouse: Path) -> None:
    result = qf("query", RUNAWAY, "--json", cwd=warehouse, env={"QUERYFORGE_QUERY_TIMEOUT_S": "0.5"})

    error = json.loads(result.stdout)["error"]
    assert error["class"] == "TIMEOUT"
    assert "time limit" in error["message"]
    assert "Internal error" not in result.stdout + result.stderr
    assert result.code == error["exit_code"]


def test_a_query_over_its_memory_ceiling_is_a_quota_error_not_an_internal_one(warehouse: Path) -> None:
    with Workspace(warehouse, Settings(max_memory="20MB")) as ws, pytest.raises(QuotaExceeded) as caught:
        ws.query("SELECT list(a.status || b.status) AS l FROM orders a, orders b")
    assert "more memory than its ceiling of 20MB" in caught.value.message
    assert caught.value.exit_code == 2


def test_an_aggregated_query_is_cut_at_the_cap(warehouse: Path) -> None:
    with Workspace(warehouse) as ws:
        grouped = ws.query("SELECT order_id, count(*) AS n FROM orders GROUP BY order_id", limit=100)
        small = ws.query("SELECT status, count(*) AS n FROM orders GROUP BY status", limit=100)
    assert len(grouped.rows) == 100 and grouped.cut
    assert grouped.names == ["order_id", "n"]
    assert 1 <= len(small.rows) < 100 and not small.cut


def test_the_cli_says_the_result_was_cut(qf: Callable[..., CliResult], warehouse: Path) -> None:
    sql = "SELECT order_id, count(*) AS n FROM orders GROUP BY order_id ORDER BY order_id"

    shown = qf("query", sql, "--limit", "10", cwd=warehouse)
    as_json = qf("query", sql, "--limit", "10", "--json", cwd=warehouse)

    assert shown.code == 0, shown.stderr
    assert "10 rows" in shown.stdout
    assert "Result cut to the first 10 rows" in shown.stdout
    assert as_json.code == 0, as_json.stderr
    assert len(as_json.json()) == 10
    assert "Result cut to the first 10 rows" in as_json.stderr
