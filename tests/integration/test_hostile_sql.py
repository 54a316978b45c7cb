"""The hostile-SQL corpus (tests/hostile_sql.py) through every door that takes SQL.

Each case must be refused before it runs and each refusal audited:

- `query --connection` on PostgreSQL, as a superuser (the policy alone stands between the query
  and harm) and as the documented least-privilege role; on MariaDB as root and as the reader;
- `query` on the DuckDB warehouse;
- a pipeline `sql:` step and an `extract.query` (refused by `validate`, before the source runs it);
- every op field and check rule that carries SQL (filter, derive, aggregate, pivot, sort, dedupe,
  `expression` checks);
- an `ask` draft from the fake LLM server (the draft's sql step or extract query).

After the PostgreSQL and MariaDB runs, the canary tables are unchanged: nothing ran.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
import yaml

from queryforge.errors import QueryForgeError
from queryforge.workspace import Workspace
from tests.fakes.openai_server import FakeLLMServer, chat
from tests.hostile_sql import CASES, EXPRESSIONS, cases_for
from tests.integration.roles import RoleDatabase

CASE_IDS = [i for i, _, _ in CASES]
BY_ID = {i: sql for i, sql, _ in CASES}


def _workspace(root: Path, connections: dict[str, dict[str, Any]]) -> Workspace:
    ws = Workspace.init(root)
    config = yaml.safe_load((root / "queryforge.yaml").read_text())
    config["connections"].update(connections)
    (root / "queryforge.yaml").write_text(yaml.safe_dump(config))
    ws.close()
    return Workspace(root)


def _blocks(ws: Workspace) -> list[dict[str, Any]]:
    return [e for e in ws.repo.list_audit(limit=100_000) if e["decision"] == "block"]


def _refused(ws: Workspace, sql: str, connection: str | None) -> None:
    before = len(_blocks(ws))
    with pytest.raises(QueryForgeError) as info:
        ws.query(sql, connection=connection)
    assert info.value.exit_code == 2, info.value.message
    assert "blocked" in info.value.message.lower(), info.value.message
    assert len(_blocks(ws)) == before + 1, "the refusal was not audited"


# ---------------------------------------------------------------- PostgreSQL and MariaDB


@pytest.fixture(scope="module")
def pg_ws(tmp_path_factory: pytest.TempPathFactory, pg_least_privilege: RoleDatabase) -> Iterator[Workspace]:
    root = tmp_path_factory.mktemp("hostile-pg") / "ws"
    ws = _workspace(root, pg_least_privilege.connections())
    yield ws
    ws.close()


@pytest.fixture(scope="module")
def my_ws(
    tmp_path_factory: pytest.TempPathFactory, mariadb_least_privilege: RoleDatabase
) -> Iterator[Workspace]:
    root = tmp_path_factory.mktemp("hostile-my") / "ws"
    ws = _workspace(root, mariadb_least_privilege.connections())
    yield ws
    ws.close()


def _pg_state(db: RoleDatabase) -> Any:
    with psycopg.connect(db.superuser_url) as con:
        tables = con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
        ).fetchall()
        orders = con.execute("SELECT count(*), sum(amount) FROM orders").fetchone()
    return tables, orders


def _my_state(db: RoleDatabase) -> Any:
    con = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database=db.database)
    try:
        with con.cursor() as cur:
            cur.execute("SHOW TABLES")
            tables = sorted(r[0] for r in cur.fetchall())
            cur.execute("SELECT count(*), sum(amount) FROM orders")
            orders = cur.fetchone()
    finally:
        con.close()
    return tables, orders


@pytest.mark.postgres
@pytest.mark.parametrize("role", ["superuser", "reader"])
@pytest.mark.parametrize(("case", "sql"), cases_for("postgres"), ids=[i for i, _ in cases_for("postgres")])
def test_postgres_query_refuses(
    pg_ws: Workspace, pg_least_privilege: RoleDatabase, role: str, case: str, sql: str
) -> None:
    before = _pg_state(pg_least_privilege)
    _refused(pg_ws, sql, role)
    assert _pg_state(pg_least_privilege) == before


@pytest.mark.parametrize("role", ["superuser", "reader"])
@pytest.mark.parametrize(("case", "sql"), cases_for("mysql"), ids=[i for i, _ in cases_for("mysql")])
def test_mariadb_query_refuses(
    my_ws: Workspace, mariadb_least_privilege: RoleDatabase, role: str, case: str, sql: str
) -> None:
    before = _my_state(mariadb_least_privilege)
    _refused(my_ws, sql, role)
    assert _my_state(mariadb_least_privilege) == before


@pytest.mark.postgres
def test_postgres_extract_query_is_refused_before_the_database_runs_it(
    pg_ws: Workspace, pg_least_privilege: RoleDatabase
) -> None:
    """`validate` describes an extract query by running it: the policy must come first."""
    for case in ("dblink-exec-drop", "query-to-xml-authid", "pg-read-file", "my-sleep", "for-update"):
        path = pg_ws.root / "pipelines" / f"hostile_{case.replace('-', '_')}.yaml"
        steps = [
            {"id": "src", "extract": {"connection": "superuser", "query": BY_ID[case]}},
            {"id": "out", "load": {"input": "src", "table": "stolen"}},
        ]
        path.write_text(yaml.safe_dump({"name": path.stem, "steps": steps}))
        with pytest.raises(QueryForgeError) as info:
            pg_ws.validate(str(path))
        assert info.value.exit_code == 2
        assert "not allowed" in info.value.message or "not on the allow-list" in info.value.message
    assert _pg_state(pg_least_privilege)[1][0] == 4


# ---------------------------------------------------------------- DuckDB: warehouse, steps, ops


@pytest.fixture(scope="module")
def duck_ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    root = tmp_path_factory.mktemp("hostile-duck") / "ws"
    ws = Workspace.init(root)
    ws.run("customers_clean")  # publishes warehouse.customers
    yield ws
    ws.close()


@pytest.mark.parametrize(("case", "sql"), cases_for("duckdb"), ids=[i for i, _ in cases_for("duckdb")])
def test_warehouse_query_refuses(duck_ws: Workspace, case: str, sql: str) -> None:
    _refused(duck_ws, sql, None)


def _validate_steps(ws: Workspace, name: str, steps: list[dict[str, Any]]) -> QueryForgeError:
    path = ws.root / "pipelines" / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "steps": steps}, sort_keys=False))
    try:
        with pytest.raises(QueryForgeError) as info:
            ws.validate(str(path))
    finally:
        path.unlink()
    assert info.value.exit_code == 2, info.value.message
    return info.value


ORDERS = {"id": "orders", "extract": {"path": "data/orders.csv"}}


@pytest.mark.parametrize(("case", "sql"), cases_for("duckdb"), ids=[i for i, _ in cases_for("duckdb")])
def test_pipeline_sql_step_refuses(duck_ws: Workspace, case: str, sql: str) -> None:
    steps = [ORDERS, {"id": "evil", "sql": sql}, {"id": "out", "load": {"input": "evil", "table": "x"}}]
    error = _validate_steps(duck_ws, "hostile_sql_step", steps)
    assert "evil" in error.message or "evil" in (error.where or ""), error.message


def _op_steps(field: str, text: str) -> list[dict[str, Any]]:
    body: dict[str, Any] = {
        "filter": {"input": "orders", "where": text},
        "derive": {"input": "orders", "columns": {"x": text}},
        "aggregate": {"input": "orders", "group_by": ["status"], "measures": {"x": text}},
        "pivot": {"input": "orders", "on": "status", "using": text, "group_by": ["customer_id"]},
        "sort": {"input": "orders", "by": [text]},
        "dedupe": {"input": "orders", "keys": ["order_id"], "order_by": [text]},
    }.get(field, {})
    if field == "check":
        evil: dict[str, Any] = {"id": "evil", "check": {"input": "orders", "rules": [{"expression": text}]}}
        return [ORDERS, evil, {"id": "out", "load": {"input": "orders", "table": "x"}}]
    return [ORDERS, {"id": "evil", field: body}, {"id": "out", "load": {"input": "evil", "table": "x"}}]


OP_FIELDS = ["filter", "derive", "aggregate", "pivot", "sort", "dedupe", "check"]


@pytest.mark.parametrize("field", OP_FIELDS)
@pytest.mark.parametrize(("case", "text"), EXPRESSIONS, ids=[i for i, _ in EXPRESSIONS])
def test_every_sql_field_of_ops_and_checks_refuses(
    duck_ws: Workspace, field: str, case: str, text: str
) -> None:
    _validate_steps(duck_ws, "hostile_op", _op_steps(field, text))


# ---------------------------------------------------------------- ask drafts from an LLM


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


ASK_CASES = [c for c in CASE_IDS if c not in {"deep-parens"}]


@pytest.mark.parametrize("case", ASK_CASES)
def test_ask_draft_refused_before_rehearsal(
    duck_ws: Workspace, llm: FakeLLMServer, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    for name, value in llm.openai_env().items():
        monkeypatch.setenv(name, value)
    draft = {
        "name": "ask_hostile",
        "steps": [
            ORDERS,
            {"id": "evil", "sql": BY_ID[case]},
            {"id": "out", "load": {"input": "evil", "table": "x"}},
        ],
    }
    llm.script(chat(json.dumps(draft)))
    before_runs = len(duck_ws.repo.list_runs(limit=10_000))
    before = len(_blocks(duck_ws))
    outcome = duck_ws.ask("Refresh x from orders", consent=lambda _: False)
    assert outcome.status == "failed", outcome
    assert outcome.published == []
    blocks = _blocks(duck_ws)
    assert len(blocks) > before and blocks[0]["action"] in {"sql_policy", "path_policy"}
    assert len(duck_ws.repo.list_runs(limit=10_000)) == before_runs, "a refused draft must not be rehearsed"
