"""Ad-hoc queries and plain-English asks against a real PostgreSQL connection.

The AST policy is the first wall; below it, PostgreSQL runs the query in a READ ONLY transaction
with a time limit, so SQL that passes the policy but would write (nextval) is still refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import yaml

from queryforge.errors import QueryForgeError
from queryforge.workspace import Workspace
from tests.conftest import CliResult
from tests.services import postgres_database

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_ws(tmp_path: Path, qf: Callable[..., CliResult]) -> Iterator[tuple[Path, str]]:
    with postgres_database() as url:
        with psycopg.connect(url, autocommit=True) as con:
            con.execute("CREATE TABLE customers (id INT PRIMARY KEY, country TEXT, active BOOL)")
            con.execute(
                "INSERT INTO customers SELECT i, (ARRAY['DE','FR','US'])[1 + i % 3], i % 2 = 0 "
                "FROM generate_series(1, 30) i"
            )
            con.execute("CREATE SEQUENCE ticket")
        root = tmp_path / "ws"
        assert qf("init", str(root), "--bare", cwd=tmp_path).code == 0
        config = yaml.safe_load((root / "queryforge.yaml").read_text())
        config["connections"]["crm"] = {"url": url, "password": "${env:CRM_PW}"}
        (root / "queryforge.yaml").write_text(yaml.safe_dump(config))
        yield root, url


ENV = {"CRM_PW": "not-used-by-trust-auth"}


def test_query_runs_on_the_connection_and_matches_the_database(
    pg_ws: tuple[Path, str], qf: Callable[..., CliResult]
) -> None:
    root, url = pg_ws
    sql = "SELECT country, count(*) AS n FROM customers GROUP BY country ORDER BY country"
    done = qf("query", sql, "--connection", "crm", "--json", cwd=root, env=ENV)
    assert done.code == 0, done.stderr
    with psycopg.connect(url) as con:
        expected = [{"country": c, "n": n} for c, n in con.execute(sql).fetchall()]
    assert json.loads(done.stdout) == expected


def test_a_write_is_refused_by_the_policy_and_by_the_read_only_transaction_below_it(
    pg_ws: tuple[Path, str], qf: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, url = pg_ws
    done = qf("query", "SELECT nextval('ticket') AS t", "--connection", "crm", "--json", cwd=root, env=ENV)
    assert done.code == 2
    error = json.loads(done.stdout)["error"]
    assert error["type"] == "QueryBlocked" and "nextval" in error["message"]
    # Below the policy, the connection reads in a READ ONLY transaction: SQL that reached the
    # database without the policy (called directly here) still cannot write.
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    ws = Workspace(root)
    conns = ws.connections()
    try:
        with pytest.raises(QueryForgeError) as info:
            conns.sql("crm").fetch_arrow("SELECT nextval('ticket') AS t")
    finally:
        conns.close()
        ws.close()
    assert info.value.failure_class == "PERMISSION_DENIED"
    assert "read-only transaction" in info.value.message
    with psycopg.connect(url) as con:  # the sequence never moved
        assert con.execute("SELECT last_value, is_called FROM ticket").fetchone() == (1, False)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM customers; DROP TABLE customers",
        "DELETE FROM customers",
        "SELECT * FROM pg_catalog.pg_authid",
        "SELECT pg_read_file('/etc/passwd')",
    ],
)
def test_unsafe_sql_is_blocked_before_it_reaches_the_database(
    pg_ws: tuple[Path, str], qf: Callable[..., CliResult], sql: str
) -> None:
    root, url = pg_ws
    done = qf("query", sql, "--connection", "crm", "--json", cwd=root, env=ENV)
    assert done.code == 2, done.stdout
    assert json.loads(done.stdout)["error"]["type"] == "QueryBlocked"
    with psycopg.connect(url) as con:
        assert con.execute("SELECT count(*) FROM customers").fetchone() == (30,)


def test_secrets_never_appear_in_output(pg_ws: tuple[Path, str], qf: Callable[..., CliResult]) -> None:
    root, _ = pg_ws
    config = yaml.safe_load((root / "queryforge.yaml").read_text())
    config["connections"]["dead"] = {"url": "postgresql://etl@127.0.0.1:1/x", "password": "${env:DEAD_PW}"}
    (root / "queryforge.yaml").write_text(yaml.safe_dump(config))
    secret = "s3cr3t-Pa55word"
    done = qf("connections", "test", "dead", "--json", cwd=root, env={**ENV, "DEAD_PW": secret})
    assert done.code == 3 and json.loads(done.stdout)["error"]["class"] == "TRANSIENT"
    listed = qf("connections", "list", "--json", cwd=root, env={**ENV, "DEAD_PW": secret})
    assert secret not in done.stdout + done.stderr + listed.stdout + listed.stderr


def test_ask_reads_a_table_of_another_connection_into_the_warehouse(
    pg_ws: tuple[Path, str], qf: Callable[..., CliResult]
) -> None:
    root, url = pg_ws
    done = qf(
        "ask",
        "Load the crm.customers table into active_customers, keeping only rows where active is true",
        "--commit",
        "--yes",
        "--json",
        cwd=root,
        env=ENV,
    )
    assert done.code == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded", result
    rows = json.loads(
        qf("query", "SELECT id FROM active_customers ORDER BY id", "--json", cwd=root, env=ENV).stdout
    )
    with psycopg.connect(url) as con:
        expected = [r[0] for r in con.execute("SELECT id FROM customers WHERE active ORDER BY id")]
    assert [r["id"] for r in rows] == expected


def test_catalog_reports_cache_hits_and_refresh(
    pg_ws: tuple[Path, str], qf: Callable[..., CliResult]
) -> None:
    root, url = pg_ws
    first = json.loads(qf("catalog", "crm", "--json", cwd=root, env=ENV).stdout)
    assert first["cache_hit"] is False
    table = next(t for t in first["tables"] if t["name"] == "customers")
    assert table["primary_key"] == ["id"]
    assert [c["name"] for c in table["columns"]] == ["id", "country", "active"]
    with psycopg.connect(url, autocommit=True) as con:
        con.execute("CREATE TABLE later (x INT)")
    cached = json.loads(qf("catalog", "crm", "--json", cwd=root, env=ENV).stdout)
    assert cached["cache_hit"] is True and "later" not in [t["name"] for t in cached["tables"]]
    fresh = json.loads(qf("catalog", "crm", "--refresh", "--json", cwd=root, env=ENV).stdout)
    assert fresh["cache_hit"] is False and "later" in [t["name"] for t in fresh["tables"]]


def test_cost_gate_counts_rows_of_database_tables(
    pg_ws: tuple[Path, str], qf: Callable[..., CliResult]
) -> None:
    root, url = pg_ws
    with psycopg.connect(url, autocommit=True) as con:
        con.execute("ANALYZE customers")  # the row estimate the catalog reports (30)
    request = "Load the crm.customers table into all_customers"
    capped = {**ENV, "QUERYFORGE_COST_CAP_ROWS": "10"}
    blocked = qf("ask", request, "--commit", "--yes", "--json", cwd=root, env=capped)
    assert blocked.code == 2, blocked.stdout + blocked.stderr
    assert "over the per-query cap of 10" in blocked.stdout
    approved = qf("ask", request, "--commit", "--yes", "--approve-cost", "--json", cwd=root, env=capped)
    assert approved.code == 0, approved.stdout + approved.stderr
    assert json.loads(approved.stdout)["status"] == "succeeded"
    budget = {**ENV, "QUERYFORGE_COST_BUDGET_ROWS_PER_HOUR": "40"}  # 30 of 40 already spent this hour
    # a new destination: loading into all_customers again would be a question (it exists now)
    again = "Load the crm.customers table into more_customers"
    over = qf("ask", again, "--commit", "--yes", "--json", cwd=root, env=budget)
    assert over.code == 2 and "left in this hour's budget" in over.stdout, over.stdout
