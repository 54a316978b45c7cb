"""dbt-style checks: singular tests (`query`) and `error_if` / `warn_if` thresholds.

The data has 20 orders, 3 without an email (15 %) and 2 whose customer is missing; the expected
outcomes are counted in Python over the same rows, and each threshold is tried on both sides of
the measured figure so that a wrong comparison fails.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from queryforge.errors import SpecError
from queryforge.workspace import Workspace


def order_line(i: int) -> str:
    customer = 900 + i if i in (7, 13) else 100 + i % 6  # orders 7 and 13 have no known customer
    email = "" if i in (2, 5, 11) else f"u{i}@x.org"  # three orders without an email
    return f"{i},{customer},{email},{i * 1.5}\n"


ORDERS = "order_id,customer_id,email,amount\n" + "".join(order_line(i) for i in range(1, 21))
CUSTOMERS = "customer_id\n" + "".join(f"{100 + k}\n" for k in range(6))


def python_counts() -> tuple[int, int, int]:
    rows = list(csv.DictReader(io.StringIO(ORDERS)))
    known = {r["customer_id"] for r in csv.DictReader(io.StringIO(CUSTOMERS))}
    missing_email = sum(1 for r in rows if not r["email"])
    orphans = sum(1 for r in rows if r["customer_id"] not in known)
    return len(rows), missing_email, orphans


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    w = Workspace.init(tmp_path / "ws", bare=True)
    (w.root / "data" / "orders.csv").write_text(ORDERS)
    (w.root / "data" / "customers.csv").write_text(CUSTOMERS)
    return w


def run_with(ws: Workspace, rules: list[dict[str, Any]]) -> Any:
    steps = [
        {"id": "orders", "extract": {"path": "data/orders.csv"}},
        {"id": "customers", "extract": {"path": "data/customers.csv"}},
        {"id": "ok", "check": {"input": "orders", "rules": rules}},
        {"id": "out", "load": {"input": "orders", "table": "orders_out"}},
    ]
    (ws.root / "pipelines" / "p.yaml").write_text(json.dumps({"name": "p", "steps": steps}))
    return ws.run("p")


ORPHANS_SQL = (
    "SELECT orders.order_id FROM orders LEFT JOIN customers ON customers.customer_id = orders.customer_id "
    "WHERE customers.customer_id IS NULL"
)


def test_a_singular_test_returns_the_violating_rows(ws: Workspace) -> None:
    _, _, orphans = python_counts()
    outcome = run_with(ws, [{"query": ORPHANS_SQL, "name": "orders_without_customer"}])
    assert outcome.error is not None and outcome.published == []
    (result,) = outcome.checks
    assert (result["rule"], result["rule_name"], result["violations"]) == (
        "query",
        "orders_without_customer",
        orphans,
    )
    assert sorted(s["order_id"] for s in result["samples"]) == [7, 13]
    passing = run_with(ws, [{"query": ORPHANS_SQL.replace("IS NULL", "IS NULL AND orders.amount < 0")}])
    assert passing.error is None and passing.checks[0]["passed"]


@pytest.mark.parametrize(
    ("thresholds", "severity", "passed"),
    [
        ({}, "error", False),  # no threshold: any violation fails
        ({"error_if": "> 20%"}, "warn", False),  # 15 % is under the error line; warn_if defaults to != 0
        ({"error_if": "> 10%"}, "error", False),
        ({"error_if": ">= 3"}, "error", False),
        ({"error_if": "> 3", "warn_if": "> 3"}, "error", True),  # 3 violations meet neither
        ({"error_if": ">5", "warn_if": ">= 15%"}, "warn", False),
        ({"error_if": ">5", "warn_if": "> 15%"}, "error", True),
        ({"severity": "warn", "error_if": ">0"}, "warn", False),  # severity warn: error_if is not consulted
    ],
)
def test_thresholds_decide_between_error_warning_and_pass(
    ws: Workspace, thresholds: dict[str, Any], severity: str, passed: bool
) -> None:
    rows, missing, _ = python_counts()
    assert (rows, missing) == (20, 3)  # the figures the cases are written around (15 %)
    outcome = run_with(ws, [{"not_null": "email", **thresholds}])
    (result,) = outcome.checks
    assert result["violations"] == missing
    assert (result["severity"], result["passed"]) == (severity, passed)
    failed = severity == "error" and not passed
    assert (outcome.error is not None) == failed
    assert bool(outcome.published) == (not failed)


@pytest.mark.parametrize("bad", ["> ten", "5", ">> 5", "> 5 %%"])
def test_a_malformed_threshold_is_a_clear_error(ws: Workspace, bad: str) -> None:
    with pytest.raises(SpecError) as err:
        run_with(ws, [{"not_null": "email", "error_if": bad}])
    assert "is not a threshold" in err.value.render() and "error_if: '>10'" in err.value.render()


def test_a_query_rule_must_read_known_steps_and_be_one_select(ws: Workspace) -> None:
    with pytest.raises(SpecError, match="reads unknown step 'ordrs'") as err:
        run_with(ws, [{"query": "SELECT * FROM ordrs"}])
    assert "did you mean 'orders'" in err.value.render()
    with pytest.raises(SpecError, match="rule 'query'"):
        run_with(ws, [{"query": "DELETE FROM orders"}])
