"""A `sqlite:` connection: extract into the warehouse, load with replace/append/merge, read-only refusal.

Every result is compared with what the plain `sqlite3` module (or DuckDB for the warehouse) reads.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from queryforge.errors import PermissionDenied, UserError
from queryforge.workspace import Workspace

SEED = """
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, score REAL, joined TEXT);
INSERT INTO customers VALUES
  (1, 'Ann', 1.5, '2024-01-01'), (2, 'Bob', NULL, '2024-02-01'), (3, NULL, 3.0, NULL),
  (4, 'Åsa ünïcode', -2.25, '2024-03-04'), (5, 'O''Brien', 0.0, '2024-03-05');
CREATE TABLE target (id INTEGER, region TEXT, name TEXT, score REAL);
INSERT INTO target VALUES (1, 'eu', 'old one', 0.0), (9, 'eu', 'keep', 9.0), (2, 'us', 'old two', 2.0);
"""
NEW_CSV = "id,region,name,score\n1,eu,Ann,1.5\n2,eu,Bob,\n4,us,Dan,4.0\n"
NEW: list[tuple[Any, ...]] = [(1, "eu", "Ann", 1.5), (2, "eu", "Bob", None), (4, "us", "Dan", 4.0)]
OLD: list[tuple[Any, ...]] = [(1, "eu", "old one", 0.0), (9, "eu", "keep", 9.0), (2, "us", "old two", 2.0)]


def open_ws(make_workspace: Callable[..., Workspace], writable: bool) -> Workspace:
    ws = make_workspace(bare=True)
    config = yaml.safe_load((ws.root / "queryforge.yaml").read_text())
    config["connections"]["legacy"] = {"url": "sqlite:data/legacy.sqlite", "writable": writable}
    (ws.root / "queryforge.yaml").write_text(yaml.safe_dump(config))
    with closing(sqlite3.connect(ws.root / "data" / "legacy.sqlite")) as con:
        con.executescript(SEED)
    (ws.root / "data" / "new.csv").write_text(NEW_CSV)
    ws.close()
    reopened = Workspace(ws.root)  # reads the edited queryforge.yaml
    return reopened


@pytest.fixture
def ws(make_workspace: Callable[..., Workspace]) -> Any:
    workspace = open_ws(make_workspace, writable=True)
    yield workspace
    workspace.close()


@pytest.fixture
def ro_ws(make_workspace: Callable[..., Workspace]) -> Any:
    workspace = open_ws(make_workspace, writable=False)
    yield workspace
    workspace.close()


def sqlite_rows(ws: Workspace, sql: str) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(ws.root / "data" / "legacy.sqlite")
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def sqlite_tables(ws: Workspace) -> list[str]:
    # the publish ledger (`_qf_staging___qf_published`) is QueryForge's, not a table of the user's
    rows = sqlite_rows(ws, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1")
    return [r[0] for r in rows if r[0] != "_qf_staging___qf_published"]


def warehouse_rows(ws: Workspace, table: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    with duckdb.connect(str(ws.root / ".queryforge" / "warehouse.duckdb"), read_only=True) as con:
        rel = con.sql(f'SELECT * FROM "{table}"')
        return list(rel.columns), rel.fetchall()


def pipeline(ws: Workspace, name: str, steps: list[dict[str, Any]]) -> str:
    path = ws.root / "pipelines" / f"{name}.yaml"
    path.write_text(json.dumps({"name": name, "steps": steps}, indent=1))
    return str(path)


def load_new(ws: Workspace, mode: str, keys: list[str] | None = None, table: str = "target") -> str:
    load: dict[str, Any] = {"input": "new", "connection": "legacy", "table": table, "mode": mode}
    if keys:
        load["keys"] = keys
    return pipeline(
        ws,
        f"load_{mode}",
        [{"id": "new", "extract": {"path": "data/new.csv"}}, {"id": "publish", "load": load}],
    )


# ---------------------------------------------------------------- extract


def test_extract_a_table_into_the_warehouse(ws: Workspace) -> None:
    path = pipeline(
        ws,
        "copy",
        [
            {"id": "c", "extract": {"connection": "legacy", "table": "customers"}},
            {"id": "publish", "load": {"input": "c", "table": "customers_copy"}},
        ],
    )
    outcome = ws.run(path)
    assert outcome.status == "succeeded", outcome.error
    names, rows = warehouse_rows(ws, "customers_copy")
    assert names == ["id", "name", "score", "joined"]
    assert Counter(rows) == Counter(sqlite_rows(ws, "SELECT id, name, score, joined FROM customers"))
    assert sqlite_tables(ws) == ["customers", "target"]  # reading leaves the source as it was


def test_extract_a_query_and_columns(ws: Workspace) -> None:
    path = pipeline(
        ws,
        "subset",
        [
            {
                "id": "q",
                "extract": {"connection": "legacy", "query": "SELECT id, score FROM customers WHERE id > 1"},
            },
            {
                "id": "cols",
                "extract": {"connection": "legacy", "table": "customers", "columns": ["name", "id"]},
            },
            {"id": "j", "join": {"left": "q", "right": "cols", "on": ["id"], "how": "left"}},
            {"id": "publish", "load": {"input": "j", "table": "subset"}},
        ],
    )
    outcome = ws.run(path)
    assert outcome.status == "succeeded", outcome.error
    names, rows = warehouse_rows(ws, "subset")
    assert names == ["id", "score", "name"]
    want = sqlite_rows(ws, "SELECT id, score, name FROM customers WHERE id > 1")
    assert Counter(rows) == Counter(want)


def test_extract_of_an_unknown_table_suggests_one(ws: Workspace) -> None:
    path = pipeline(
        ws,
        "typo",
        [
            {"id": "c", "extract": {"connection": "legacy", "table": "customer"}},
            {"id": "publish", "load": {"input": "c", "table": "x"}},
        ],
    )
    with pytest.raises(UserError) as info:
        ws.validate(path)
    assert "customer" in info.value.message
    assert info.value.hint == "did you mean 'customers'?"


# ---------------------------------------------------------------- loads into SQLite


def test_load_replace(ws: Workspace) -> None:
    outcome = ws.run(load_new(ws, "replace"))
    assert outcome.status == "succeeded", outcome.error
    assert Counter(sqlite_rows(ws, "SELECT id, region, name, score FROM target")) == Counter(NEW)
    assert sqlite_tables(ws) == ["customers", "target"]  # no staging table is left behind


def test_load_append(ws: Workspace) -> None:
    outcome = ws.run(load_new(ws, "append"))
    assert outcome.status == "succeeded", outcome.error
    assert Counter(sqlite_rows(ws, "SELECT id, region, name, score FROM target")) == Counter(OLD + NEW)
    assert sqlite_tables(ws) == ["customers", "target"]


@pytest.mark.parametrize("keys", [["id"], ["id", "region"]])
def test_load_merge(ws: Workspace, keys: list[str]) -> None:
    outcome = ws.run(load_new(ws, "merge", keys))
    assert outcome.status == "succeeded", outcome.error
    index = [["id", "region", "name", "score"].index(k) for k in keys]
    new_keys = {tuple(r[i] for i in index) for r in NEW}
    want = [r for r in OLD if tuple(r[i] for i in index) not in new_keys] + NEW
    assert Counter(sqlite_rows(ws, "SELECT id, region, name, score FROM target")) == Counter(want)
    assert sqlite_tables(ws) == ["customers", "target"]
    assert outcome.staged[0].diff == {
        "added": len(NEW) - len([r for r in OLD if tuple(r[i] for i in index) in new_keys]),
        "removed": 0,
        "changed": len([r for r in OLD if tuple(r[i] for i in index) in new_keys]),
    }


@pytest.mark.parametrize("mode", ["replace", "append", "merge"])
def test_load_creates_a_missing_table(ws: Workspace, mode: str) -> None:
    outcome = ws.run(load_new(ws, mode, ["id"] if mode == "merge" else None, table="fresh"))
    assert outcome.status == "succeeded", outcome.error
    assert Counter(sqlite_rows(ws, "SELECT id, region, name, score FROM fresh")) == Counter(NEW)


def test_a_failing_publish_rolls_the_sqlite_transaction_back(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUERYFORGE_FAULTS", "publish.in_transaction=raise")
    outcome = ws.run(load_new(ws, "merge", ["id"]))
    assert outcome.status == "dead_lettered"  # a TRANSIENT failure, retries exhausted
    assert Counter(sqlite_rows(ws, "SELECT id, region, name, score FROM target")) == Counter(OLD)


def test_sandbox_then_commit_into_sqlite(ws: Workspace) -> None:
    outcome = ws.run(load_new(ws, "append"), sandbox=True)
    assert outcome.status == "audited", outcome.error
    assert Counter(sqlite_rows(ws, "SELECT id, region, name, score FROM target")) == Counter(OLD)
    (staged,) = outcome.staged
    assert staged.staging_name in sqlite_tables(ws)
    assert Counter(
        sqlite_rows(ws, f'SELECT id, region, name, score FROM "{staged.staging_name}"')
    ) == Counter(NEW)
    ws.commit(outcome.run_id)
    assert Counter(sqlite_rows(ws, "SELECT id, region, name, score FROM target")) == Counter(OLD + NEW)
    assert sqlite_tables(ws) == ["customers", "target"]


# ---------------------------------------------------------------- read-only connection


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("mode", ["replace", "append", "merge"])
def test_read_only_connection_refuses_loads_before_any_data_moves(ro_ws: Workspace, mode: str) -> None:
    db = ro_ws.root / "data" / "legacy.sqlite"
    before = digest(db)
    with pytest.raises(PermissionDenied) as info:
        ro_ws.run(load_new(ro_ws, mode, ["id"] if mode == "merge" else None))
    err = info.value
    assert err.failure_class.value == "PERMISSION_DENIED"
    assert "legacy" in err.message and "read-only" in err.message
    assert err.hint is not None and "writable: true" in err.hint
    assert err.where is not None and "step 'publish'" in err.where
    assert digest(db) == before  # not a byte of the database changed
    assert ro_ws.list_runs() == []  # refused while compiling: no run was even created
    assert not (ro_ws.root / ".queryforge" / "warehouse.duckdb").exists()


def test_read_only_connection_can_still_be_read(ro_ws: Workspace) -> None:
    db = ro_ws.root / "data" / "legacy.sqlite"
    before = digest(db)
    path = pipeline(
        ro_ws,
        "copy",
        [
            {"id": "c", "extract": {"connection": "legacy", "table": "customers"}},
            {"id": "publish", "load": {"input": "c", "table": "customers_copy"}},
        ],
    )
    outcome = ro_ws.run(path)
    assert outcome.status == "succeeded", outcome.error
    _, rows = warehouse_rows(ro_ws, "customers_copy")
    assert Counter(rows) == Counter(sqlite_rows(ro_ws, "SELECT * FROM customers"))
    assert digest(db) == before


def test_text_columns_are_typed_as_text_when_a_pipeline_is_validated(ws: Workspace) -> None:
    """SQLite types values, not columns: the extract's types come from a sample, so a filter on a
    text column compiles (an empty sample typed every column BIGINT, and `name = 'Ann'` failed)."""
    (ws.root / "pipelines" / "named.yaml").write_text(
        "name: named\nsteps:\n"
        "  - id: c\n    extract: {connection: legacy, table: customers}\n"
        "  - id: ann\n    filter: {input: c, where: \"name = 'Ann' AND joined >= '2024-01-01'\"}\n"
        "  - id: out\n    load: {input: ann, table: ann}\n"
    )
    plan = ws.validate("pipelines/named.yaml")
    assert dict(plan.schemas["c"]) == {
        "id": "BIGINT",
        "name": "VARCHAR",
        "score": "DOUBLE",
        "joined": "VARCHAR",
    }
    assert ws.run("pipelines/named.yaml").status == "succeeded"
    with duckdb.connect(str(ws.state / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT id, name FROM ann").fetchall() == [(1, "Ann")]
