"""`ask` never destroys: requests to change data in place are refused, and a draft that would load
over one of its own sources is blocked (and audited) before it is rehearsed, whoever drafted it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import duckdb
import pytest

from queryforge.workspace import Workspace
from tests.fakes.openai_server import FakeLLMServer, chat


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    opened = Workspace.init(tmp_path_factory.mktemp("never-destroys") / "ws")
    opened.run("customers_clean")
    yield opened
    opened.close()


def _customers(ws: Workspace) -> int:
    with duckdb.connect(str(ws.root / ".queryforge" / "warehouse.duckdb"), read_only=True) as con:
        row = con.execute("SELECT count(*) FROM customers").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize(
    "request_text",
    [
        "Delete all rows from customers",
        "delete customers where country is DE",
        "Drop the customers table",
        "Please truncate customers",
        "Can you wipe the customers table",
        "Update customers set country to DE",
        "Clear customers",
        "Overwrite customers with nothing",
    ],
)
def test_requests_to_change_data_in_place_are_refused(ws: Workspace, request_text: str) -> None:
    before = _customers(ws)
    runs = len(ws.repo.list_runs(limit=10_000))
    outcome = ws.ask(request_text, consent=lambda _: True, provider="rules")
    assert outcome.status == "needs_input"
    assert outcome.error is not None and outcome.error.exit_code == 2
    assert "never deletes, drops or updates" in outcome.error.message
    assert len(ws.repo.list_runs(limit=10_000)) == runs
    assert _customers(ws) == before


@pytest.mark.parametrize(
    ("source", "load"),
    [
        ({"connection": "warehouse", "table": "customers"}, {"table": "customers"}),
        ({"connection": "warehouse", "table": "customers"}, {"table": "main.Customers", "mode": "append"}),
        (
            {"connection": "warehouse", "table": "customers"},
            {"connection": "warehouse", "table": "customers"},
        ),
        ({"path": "data/customers.csv"}, {"path": "./data/customers.csv"}),
        ({"path": "data/customers.csv"}, {"path": "data/../data/customers.csv"}),
        ({"path": "data/customers.csv"}, {"path": "data//customers.csv"}),
        ({"path": "data/customers.csv"}, {"connection": "files", "table": "data/customers.csv"}),
        ({"connection": "warehouse", "table": "customers"}, {"table": "warehouse.main.customers"}),
    ],
    ids=[
        "same-table",
        "qualified-and-cased",
        "explicit-connection",
        "same-file",
        "dot-dot",
        "double-slash",
        "files-connection-table",
        "catalog-qualified",
    ],
)
def test_a_draft_that_loads_over_its_own_source_is_blocked(
    ws: Workspace,
    monkeypatch: pytest.MonkeyPatch,
    source: dict[str, Any],
    load: dict[str, Any],
) -> None:
    with FakeLLMServer() as server:
        for name, value in server.openai_env().items():
            monkeypatch.setenv(name, value)
        draft = {
            "name": "ask_overwrite",
            "steps": [
                {"id": "src", "extract": source},
                {"id": "kept", "filter": {"input": "src", "where": "country = 'DE'"}},
                {"id": "out", "load": {"input": "kept", **load}},
            ],
        }
        server.script(chat(json.dumps(draft)))
        before = _customers(ws)
        runs = len(ws.repo.list_runs(limit=10_000))
        outcome = ws.ask("Keep only German customers", consent=lambda _: True, provider="openai")
    assert outcome.status == "failed"
    assert outcome.error is not None and outcome.error.exit_code == 2
    assert "would load over its own source" in outcome.error.message
    newest = ws.repo.list_audit(limit=1)[0]
    assert (newest["action"], newest["decision"]) == ("target_policy", "block")
    assert len(ws.repo.list_runs(limit=10_000)) == runs, "a blocked draft must not be rehearsed"
    assert _customers(ws) == before
    assert (ws.root / "data" / "customers.csv").stat().st_size > 0
