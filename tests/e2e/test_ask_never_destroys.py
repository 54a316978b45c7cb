"""`ask` never destroys: requests to change data in place are refused, and a draft that would load
over one of its own sources is stopped (and audited) before it is rehearsed, whoever drafted it.

Two walls stand between a draft and its own source. The destination guard (`check_destinations`)
answers first, with a question (`needs_input`), for a draft that writes into a warehouse table it
also reads. `AskService.source_gate` comes after it, compares places where they lead (file paths
resolved, table names without catalog and schema) and refuses with PermissionDenied. Both audit
a `target_policy` block; both are tested here, the gate also on its own for every shape.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import duckdb
import pytest

from queryforge.errors import PermissionDenied
from queryforge.planner.catalog import build_context
from queryforge.planner.draft import PlannerQuestion
from queryforge.planner.service import AskService
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


def _tables(ws: Workspace) -> set[str]:
    with duckdb.connect(str(ws.root / ".queryforge" / "warehouse.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT table_name FROM information_schema.tables").fetchall()
    return {r[0] for r in rows}


REFUSED = "never deletes, drops or updates"


@pytest.mark.parametrize(
    ("request_text", "says"),
    [
        ("Delete all rows from customers", REFUSED),
        ("delete customers where country is DE", REFUSED),
        ("Drop the customers table", REFUSED),
        ("Please truncate customers", REFUSED),
        ("Can you wipe the customers table", REFUSED),
        ("Update customers set country to DE", REFUSED),
        ("Clear customers", REFUSED),
        # Not recognised as an in-place change: read as "customers, into a table not named", so the
        # answer is a question about the destination. What matters holds: nothing runs, nothing changes.
        ("Overwrite customers with nothing", "names no destination"),
    ],
)
def test_requests_to_change_data_in_place_are_refused(ws: Workspace, request_text: str, says: str) -> None:
    before = _customers(ws)
    tables = _tables(ws)
    runs = len(ws.repo.list_runs(limit=10_000))
    outcome = ws.ask(request_text, consent=lambda _: True, provider="rules")
    assert outcome.status == "needs_input"
    assert outcome.error is not None and outcome.error.exit_code == 2
    assert outcome.question is not None
    assert says in outcome.error.message
    assert outcome.pipeline is None and outcome.published == []
    assert len(ws.repo.list_runs(limit=10_000)) == runs
    assert _customers(ws) == before
    assert _tables(ws) == tables


# (extract, load, which wall answers first for a draft from a model)
SHAPES: list[tuple[dict[str, Any], dict[str, Any], str]] = [
    ({"connection": "warehouse", "table": "customers"}, {"table": "customers"}, "guard"),
    (
        {"connection": "warehouse", "table": "customers"},
        {"table": "main.Customers", "mode": "append"},
        "guard",
    ),
    (
        {"connection": "warehouse", "table": "customers"},
        {"connection": "warehouse", "table": "customers"},
        "guard",
    ),
    ({"path": "data/customers.csv"}, {"path": "./data/customers.csv"}, "source_gate"),
    ({"path": "data/customers.csv"}, {"path": "data/../data/customers.csv"}, "source_gate"),
    ({"path": "data/customers.csv"}, {"path": "data//customers.csv"}, "source_gate"),
    ({"path": "data/customers.csv"}, {"connection": "files", "table": "data/customers.csv"}, "source_gate"),
    ({"connection": "warehouse", "table": "customers"}, {"table": "warehouse.main.customers"}, "guard"),
]
SHAPE_IDS = [
    "same-table",
    "qualified-and-cased",
    "explicit-connection",
    "same-file",
    "dot-dot",
    "double-slash",
    "files-connection-table",
    "catalog-qualified",
]


def _overwrite(source: dict[str, Any], load: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "ask_overwrite",
        "steps": [
            {"id": "src", "extract": source},
            {"id": "kept", "sql": "SELECT * FROM src WHERE country = 'DE'"},
            {"id": "out", "load": {"input": "kept", **load}},
        ],
    }


@pytest.mark.parametrize(("source", "load", "wall"), SHAPES, ids=SHAPE_IDS)
def test_a_draft_that_loads_over_its_own_source_is_blocked(
    ws: Workspace,
    monkeypatch: pytest.MonkeyPatch,
    source: dict[str, Any],
    load: dict[str, Any],
    wall: str,
) -> None:
    with FakeLLMServer() as server:
        for name, value in server.openai_env().items():
            monkeypatch.setenv(name, value)
        server.script(chat(json.dumps(_overwrite(source, load))))
        before = _customers(ws)
        tables = _tables(ws)
        runs = len(ws.repo.list_runs(limit=10_000))
        outcome = ws.ask("Keep only German customers", consent=lambda _: True, provider="openai")
    assert outcome.error is not None and outcome.error.exit_code == 2
    assert outcome.published == []
    newest = ws.repo.list_audit(limit=1)[0]
    assert (newest["action"], newest["decision"]) == ("target_policy", "block")
    if wall == "guard":  # a warehouse table the draft also reads: a question, before any gate
        assert outcome.status == "needs_input"
        assert isinstance(outcome.question, PlannerQuestion)
        assert "which it also reads" in outcome.error.message
        assert "customers" in outcome.error.message.lower()
        assert outcome.question.candidates
        assert outcome.attempts == []
        assert newest["reason"] == outcome.error.message
    else:  # the same file under another spelling: the source gate refuses it
        assert outcome.status == "failed"
        assert isinstance(outcome.error, PermissionDenied)
        assert "would load over its own source" in outcome.error.message
        assert "customers.csv" in newest["details"]["target"]
    assert len(ws.repo.list_runs(limit=10_000)) == runs, "a blocked draft must not be rehearsed"
    assert _customers(ws) == before
    assert _tables(ws) == tables
    assert (ws.root / "data" / "customers.csv").stat().st_size > 0


@pytest.mark.parametrize(("source", "load", "wall"), SHAPES, ids=SHAPE_IDS)
def test_the_source_gate_blocks_every_spelling_of_the_source(
    ws: Workspace, source: dict[str, Any], load: dict[str, Any], wall: str
) -> None:
    """The gate behind the guard, on its own: it must hold even for a draft the guard let through."""
    conns = ws.connections()
    try:
        ctx = build_context(conns, ws.root)
    finally:
        conns.close()
    service = AskService(ws, ctx, drafts_dir=ws.state / "asks")
    before = len(ws.repo.list_audit(limit=100_000))
    with pytest.raises(PermissionDenied, match="would load over its own source"):
        service.source_gate(_overwrite(source, load))
    entries = ws.repo.list_audit(limit=100_000)
    assert len(entries) == before + 1
    newest = entries[0]
    assert (newest["action"], newest["decision"]) == ("target_policy", "block")
    assert newest["details"]["step"] == "out"
    assert "customers" in newest["details"]["target"]


def test_the_source_gate_lets_a_new_table_through(ws: Workspace) -> None:
    conns = ws.connections()
    try:
        ctx = build_context(conns, ws.root)
    finally:
        conns.close()
    service = AskService(ws, ctx, drafts_dir=ws.state / "asks")
    service.source_gate(_overwrite({"connection": "warehouse", "table": "customers"}, {"table": "de_only"}))
    service.source_gate(_overwrite({"path": "data/customers.csv"}, {"table": "customers_de"}))
