"""Checks under a load's `columns:` (dbt's column tests): they run in the audit of the load's input
exactly as a check step with the expanded rules would, and guard the publish the same way.

Violation counts are compared with the offending rows computed in plain Python over the CSV rows
(read once with DuckDB), and with the results of the equivalent check step written out by hand.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import duckdb
import pytest

from queryforge.errors import FailureClass, SpecError
from queryforge.runs.executor import RunOutcome
from queryforge.runs.plan import CheckStage, StageLoadStage
from queryforge.workspace import Workspace

ORDERS = """\
order_id,status,amount,customer_id,email
1,placed,10,100,ann@example.com
2,shipped,-1,101,bob@example
3,bogus,0,999,
3,placed,,100,cid@example.com
,returned,-3,,dan@example.com
6,cancelled,20.5,102,eve@example.com
"""
GOOD_ORDERS = """\
order_id,status,amount,customer_id,email
1,placed,10,100,ann@example.com
2,shipped,7.5,101,bob@example.com
"""
CUSTOMERS = "customer_id,name\n100,a\n101,b\n102,c\n"
RULES = """\
rules:
  positive:
    args: {column: column}
    holds: ":column > 0"
  at_most:
    args: {value_of: column, limit: value}
    holds: ":value_of <= :limit"
"""
STATUSES = ["placed", "shipped", "completed", "returned"]
EMAIL = "[a-z]+@[a-z]+\\.[a-z]+"

Row = dict[str, Any]


def rows_of(path: Path) -> list[Row]:
    with closing(duckdb.connect()) as con:
        rel = con.sql(f"SELECT * FROM read_csv('{path}')")
        return [dict(zip(rel.columns, r, strict=True)) for r in rel.fetchall()]


def duplicates(rows: list[Row]) -> list[Row]:
    seen: dict[Any, int] = {}
    for r in rows:
        if r["order_id"] is not None:
            seen[r["order_id"]] = seen.get(r["order_id"], 0) + 1
    return [{"order_id": k, "occurrences": n} for k, n in seen.items() if n > 1]


def where(predicate: Callable[[Row], bool]) -> Callable[[list[Row], list[Row]], list[Row]]:
    return lambda rows, customers: [r for r in rows if predicate(r)]


def orphans(rows: list[Row], customers: list[Row]) -> list[Row]:
    known = {c["customer_id"] for c in customers}
    return [r for r in rows if r["customer_id"] is not None and r["customer_id"] not in known]


# The `columns:` of the load, every check written the way a column check invites (bare names,
# shorthands, reserved keys beside and inside the rule's mapping); all warn but one that passes.
COLUMNS: dict[str, Any] = {
    "order_id": {
        "description": "one row per order",
        "checks": [{"not_null": None, "severity": "warn"}, {"unique": {"severity": "warn"}}],
    },
    "status": {"checks": [{"accepted_values": STATUSES, "severity": "warn"}]},
    "amount": {"checks": [{"range": {"min": 0, "severity": "warn"}}, {"positive": {"severity": "warn"}}]},
    "customer_id": {
        "checks": [{"relationships": {"to": "customers", "field": "customer_id", "severity": "warn"}}]
    },
    "email": {
        "description": "only described",
        "checks": [{"regex": EMAIL, "severity": "warn", "name": "email_shape"}, {"at_most": "zzz"}],
    },
}
# The same checks as a hand-written check step on the load's input.
EXPANDED: list[dict[str, Any]] = [
    {"not_null": {"column": "order_id"}, "severity": "warn"},
    {"unique": {"column": "order_id"}, "severity": "warn"},
    {"accepted_values": {"column": "status", "values": STATUSES}, "severity": "warn"},
    {"range": {"column": "amount", "min": 0}, "severity": "warn"},
    {"positive": {"column": "amount"}, "severity": "warn"},
    {
        "relationships": {"column": "customer_id", "to": "customers", "field": "customer_id"},
        "severity": "warn",
    },
    {"regex": {"column": "email", "pattern": EMAIL}, "severity": "warn", "name": "email_shape"},
    {"at_most": {"value_of": "email", "limit": "zzz"}},
]
# result name -> the offending rows computed independently
OFFENDING: dict[str, Callable[[list[Row], list[Row]], list[Row]]] = {
    "not_null(order_id)": where(lambda r: r["order_id"] is None),
    "unique(order_id)": lambda rows, _: duplicates(rows),
    "accepted_values(status)": where(lambda r: r["status"] is not None and r["status"] not in STATUSES),
    "range(amount)": where(lambda r: r["amount"] is not None and r["amount"] < 0),
    "positive(amount)": where(lambda r: r["amount"] is not None and not r["amount"] > 0),
    "relationships(customer_id)": orphans,
    "email_shape": where(lambda r: r["email"] is not None and re.fullmatch(EMAIL, r["email"]) is None),
    "at_most(email)": where(lambda r: r["email"] is not None and not r["email"] <= "zzz"),
}


def setup(root: Path, steps: list[dict[str, Any]], orders: str = ORDERS, name: str = "p") -> None:
    if not (root / "queryforge.yaml").exists():
        Workspace.init(root, bare=True).close()
        config = root / "queryforge.yaml"
        config.write_text(config.read_text() + RULES)
    (root / "data" / "orders.csv").write_text(orders)
    (root / "data" / "customers.csv").write_text(CUSTOMERS)
    (root / "pipelines" / f"{name}.yaml").write_text(json.dumps({"name": name, "steps": steps}))


def pipeline(
    columns: dict[str, Any] | None, *, explicit: bool = False, table: str = "orders"
) -> list[dict[str, Any]]:
    """Orders loaded with `columns:`; the customers step comes last (after the load) on purpose."""
    steps: list[dict[str, Any]] = [{"id": "orders", "extract": {"path": "data/orders.csv"}}]
    if explicit:
        steps.append({"id": "by_hand", "check": {"input": "orders", "rules": EXPANDED}})
    load: dict[str, Any] = {"input": "orders", "table": table}
    if columns is not None:
        load["columns"] = columns
    steps.append({"id": "publish", "load": load})
    steps.append({"id": "customers", "extract": {"path": "data/customers.csv"}})
    return steps


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, RunOutcome]]:
    """One run with the column checks and the equivalent check step side by side."""
    root = tmp_path_factory.mktemp("columns") / "ws"
    setup(root, pipeline(COLUMNS, explicit=True))
    ws = Workspace(root)
    outcome = ws.run("p")
    yield ws, outcome
    ws.close()


def by_name(outcome: RunOutcome, step_id: str) -> dict[str, dict[str, Any]]:
    return {c["rule_name"]: c for c in outcome.checks if c["step_id"] == step_id}


def test_the_run_passes_with_only_warnings(both: tuple[Workspace, RunOutcome]) -> None:
    _, outcome = both
    assert outcome.status == "succeeded", outcome.error
    assert set(by_name(outcome, "publish.columns")) == set(OFFENDING)


@pytest.mark.parametrize("rule", list(OFFENDING))
def test_column_check_counts_the_offending_rows(both: tuple[Workspace, RunOutcome], rule: str) -> None:
    ws, outcome = both
    offending = OFFENDING[rule](
        rows_of(ws.root / "data" / "orders.csv"), rows_of(ws.root / "data" / "customers.csv")
    )
    result = by_name(outcome, "publish.columns")[rule]
    assert result["violations"] == len(offending)
    assert result["passed"] is (not offending)
    assert len(result["samples"]) == min(5, len(offending))
    for sample in result["samples"]:
        assert sample in offending


def test_column_checks_equal_the_check_step_they_stand_for(both: tuple[Workspace, RunOutcome]) -> None:
    _, outcome = both
    columns, by_hand = by_name(outcome, "publish.columns"), by_name(outcome, "by_hand")
    assert list(columns) == list(by_hand)  # same rules, same order, same names
    for name, result in columns.items():
        assert {**result, "step_id": "by_hand"} == by_hand[name], name
    # Severities as written: beside the rule, inside its mapping, and the error default.
    assert (columns["not_null(order_id)"]["severity"], columns["not_null(order_id)"]["passed"]) == (
        "warn",
        False,
    )
    assert (columns["unique(order_id)"]["severity"], columns["unique(order_id)"]["passed"]) == ("warn", False)
    assert (columns["at_most(email)"]["severity"], columns["at_most(email)"]["passed"]) == ("error", True)


def test_results_are_recorded_on_the_run(both: tuple[Workspace, RunOutcome]) -> None:
    ws, outcome = both
    recorded = [r for r in ws.repo.list_check_results(outcome.run_id) if r["step_id"] == "publish.columns"]
    assert [r["rule_name"] for r in recorded] == list(OFFENDING)
    detail = ws.run_detail(outcome.run_id)
    assert {c["rule_name"] for c in detail["checks"] if c["step_id"] == "publish.columns"} == set(OFFENDING)
    steps = {s["step_id"]: s for s in detail["steps"]}
    assert steps["publish.columns"]["kind"] == "check"
    assert steps["publish.columns"]["status"] == "warn"


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("plain") / "ws"
    setup(root, pipeline(None))
    return root


def test_the_check_runs_in_the_audit_before_anything_is_staged(plain: Path) -> None:
    setup(
        plain,
        pipeline(
            {"amount": {"checks": ["positive"]}, "customer_id": {"checks": [{"relationships": "customers"}]}}
        ),
    )
    with closing(Workspace(plain)) as ws:
        plan = ws.validate("p")
    kinds = [(s.step_id, s.kind) for s in plan.stages]
    check = kinds.index(("publish.columns", "check"))
    assert check < kinds.index(("publish", "stageload"))
    assert check > kinds.index(("customers", "extract"))  # a relationships target runs first
    assert set(plan.deps["publish.columns"]) == {"orders", "customers"}
    (stage,) = plan.stages_of(CheckStage)
    assert stage.input == "orders"
    assert [r.name for r in stage.rules] == ["positive(amount)", "relationships(customer_id)"]
    assert [s.step_id for s in plan.stages_of(StageLoadStage)] == ["publish"]


def test_descriptions_alone_add_no_check(plain: Path) -> None:
    setup(plain, pipeline({"amount": {"description": "in euros"}}))
    with closing(Workspace(plain)) as ws:
        plan = ws.validate("p")
    assert plan.stages_of(CheckStage) == []


def published(root: Path, table: str) -> list[tuple[Any, ...]]:
    with closing(duckdb.connect(str(root / ".queryforge" / "warehouse.duckdb"), read_only=True)) as con:
        return sorted(con.execute(f"SELECT order_id, amount FROM {table}").fetchall(), key=repr)


def expected(root: Path) -> list[tuple[Any, ...]]:
    return sorted(((r["order_id"], r["amount"]) for r in rows_of(root / "data" / "orders.csv")), key=repr)


def test_a_failing_error_column_check_blocks_the_publish_and_warn_publishes(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    guarded = {"amount": {"checks": ["positive"]}}
    setup(root, pipeline(guarded, table="guarded"), orders=GOOD_ORDERS)
    with closing(Workspace(root)) as ws:
        first = ws.run("p")
        assert first.status == "succeeded", first.error
        before = published(root, "guarded")
        assert before == expected(root)

        setup(root, pipeline(guarded, table="guarded"))
        failed = ws.run("p")
        assert failed.status == "failed"
        assert failed.error is not None and failed.error.failure_class == FailureClass.CHECK_FAILED
        assert "publish.columns.positive(amount)" in failed.error.message
        (result,) = failed.checks
        bad = [
            r for r in rows_of(root / "data" / "orders.csv") if r["amount"] is not None and r["amount"] <= 0
        ]
        assert (result["severity"], result["passed"], result["violations"]) == ("error", False, len(bad))
        assert published(root, "guarded") == before  # production unchanged

        setup(
            root, pipeline({"amount": {"checks": [{"positive": None, "severity": "warn"}]}}, table="guarded")
        )
        warned = ws.run("p")
        assert warned.status == "succeeded", warned.error
        assert (warned.checks[0]["severity"], warned.checks[0]["passed"]) == ("warn", False)
        assert published(root, "guarded") == expected(root)


# columns -> (message parts, hint part)
ERRORS: dict[str, tuple[dict[str, Any], list[str], str]] = {
    "unknown_column": (
        {"amout": {"checks": ["not_null"]}},
        ["Load step 'publish' lists column 'amout', which 'orders' does not have"],
        "did you mean 'amount'?",
    ),
    "unknown_column_without_checks": (
        {"statsu": {"description": "the order's state"}},
        ["column 'statsu'"],
        "did you mean 'status'?",
    ),
    "unknown_rule": (
        {"amount": {"checks": ["positiv"]}},
        ["Unknown check rule 'positiv'"],
        "did you mean 'positive'?",
    ),
    "rule_of_no_column": (
        {"amount": {"checks": [{"row_count": {"min": 1}}]}},
        ["Rule 'row_count' does not check one column", "'columns: amount'"],
        "put it in a check step",
    ),
    "column_named_again": (
        {"amount": {"checks": [{"range": {"column": "amount", "min": 0}}]}},
        ["Rule 'range' under 'columns: amount' names its column again ('column')"],
        "remove 'column'",
    ),
    "bare_argument_without_shorthand": (
        {"amount": {"checks": [{"range": 0}]}},
        ["Rule 'range' under 'columns: amount' takes a mapping of its arguments, not 0"],
        "the column is implied",
    ),
    "custom_rule_missing_argument": (
        {"amount": {"checks": ["at_most"]}},
        ["Custom rule 'at_most' is missing argument 'limit'"],
        "at_most: {value_of: COLUMN, limit: VALUE}",
    ),
    "unknown_relationships_target": (
        {"customer_id": {"checks": [{"relationships": "customer"}]}},
        ["Rule 'relationships' refers to unknown step 'customer'"],
        "did you mean 'customers'?",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_name_the_load_and_a_hint(plain: Path, case: str) -> None:
    columns, parts, hint = ERRORS[case]
    setup(plain, pipeline(columns))
    with closing(Workspace(plain)) as ws, pytest.raises(SpecError) as err:
        ws.validate("p")
    for part in parts:
        assert part in err.value.message
    assert err.value.where is not None and "step 'publish'" in err.value.where
    assert err.value.hint is not None and hint in err.value.hint
