"""Pipelines as a project: `ref:` between pipelines, whole-project validation, --select, lineage.

A staging pipeline and two marts in sub-folders: the marts read the staging output by name
(`extract: {ref: stg_orders}`), so the project validates as a whole before anything has run, a
change upstream fails validation downstream, `run --select +customer_totals` builds upstream
first, and the published numbers match a computation in plain Python over the CSV.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import defaultdict
from contextlib import closing
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from queryforge.errors import NotFoundError, SpecError
from queryforge.workspace import Workspace

QF = str(Path(sys.executable).with_name("queryforge"))

STG = """
name: stg_orders
description: Orders with the columns the marts use
tags: [staging]
steps:
  - id: raw
    extract: {path: data/orders.csv}
  - id: clean
    select: {input: raw, columns: [order_id, customer_id, amount, status]}
  - id: out
    load: {input: clean, table: stg_orders}
"""

TOTALS = """
name: customer_totals
tags: [marts]
steps:
  - id: orders
    extract: {ref: stg_orders}
  - id: totals
    sql: |
      SELECT customer_id, count(*) AS orders, sum(amount) AS revenue
      FROM orders WHERE status <> 'cancelled' GROUP BY customer_id
  - id: out
    load: {input: totals, table: customer_totals}
"""

BIG = """
name: big_customers
tags: [marts]
steps:
  - id: totals
    extract: {ref: customer_totals}
  - id: big
    filter: {input: totals, where: "revenue > 1000"}
  - id: out
    load: {input: big, table: big_customers}
"""

STATUSES = """
name: status_counts
tags: [marts]
steps:
  - id: orders
    extract: {ref: stg_orders.out}
  - id: counts
    aggregate: {input: orders, group_by: [status], measures: {n: "count(*)"}}
  - id: out
    load: {input: counts, table: status_counts}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    Workspace.init(root).close()  # the demo workspace: data/orders.csv and three example pipelines
    for sub, name, text in [
        ("staging", "stg_orders", STG),
        ("marts", "customer_totals", TOTALS),
        ("marts", "big_customers", BIG),
        ("marts", "status_counts", STATUSES),
    ]:
        (root / "pipelines" / sub).mkdir(parents=True, exist_ok=True)
        (root / "pipelines" / sub / f"{name}.yaml").write_text(text)
    return root


def tables(root: Path) -> set[str]:
    path = root / ".queryforge" / "warehouse.duckdb"
    if not path.exists():
        return set()
    with closing(duckdb.connect(str(path), read_only=True)) as con:
        rows = con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
        ).fetchall()
    return {r[0] for r in rows}


def expected_totals(root: Path) -> dict[int, tuple[int, Decimal]]:
    """customer_totals computed by Python from the CSV, independently of QueryForge."""
    out: dict[int, list[object]] = defaultdict(lambda: [0, Decimal(0)])
    with (root / "data" / "orders.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["status"] == "cancelled":
                continue
            acc = out[int(row["customer_id"])]
            acc[0] = int(acc[0]) + 1  # type: ignore[call-overload]
            acc[1] = Decimal(str(acc[1])) + (Decimal(row["amount"]) if row["amount"] else 0)
    return {k: (int(v[0]), Decimal(str(v[1]))) for k, v in out.items()}  # type: ignore[call-overload]


def qf(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([QF, *args], cwd=root, capture_output=True, text=True, timeout=300)


def test_the_project_validates_as_a_whole_before_anything_has_run(project: Path) -> None:
    with Workspace(project) as ws:
        plans = ws.validate_project().plans
        names = [n for n, _ in plans]
        # Upstream first: staging before the marts that read it, big_customers after customer_totals.
        assert names.index("stg_orders") < names.index("customer_totals") < names.index("big_customers")
        assert names.index("stg_orders") < names.index("status_counts")
        totals = dict(plans)["customer_totals"]
        assert [c for c, _ in totals.schemas["orders"]] == ["order_id", "customer_id", "amount", "status"]
        assert [c for c, _ in dict(plans)["big_customers"].schemas["totals"]] == [
            "customer_id",
            "orders",
            "revenue",
        ]
    assert not {"stg_orders", "customer_totals"} & tables(project)  # nothing was run


def test_a_removed_or_renamed_upstream_column_fails_downstream_validation(project: Path) -> None:
    stg = project / "pipelines" / "staging" / "stg_orders.yaml"
    stg.write_text(STG.replace("amount, status]", "status]"))
    with Workspace(project) as ws:
        with pytest.raises(SpecError) as err:
            ws.validate_project()
        assert "amount" in err.value.render() and "customer_totals" in err.value.render()
        stg.write_text(
            STG.replace(
                "select: {input: raw, columns: [order_id, customer_id, amount, status]}",
                "rename: {input: raw, columns: {status: state}}",
            )
        )
        with pytest.raises(SpecError) as err:
            ws.validate("status_counts")
        text = err.value.render()
        assert "status" in text and "state" in text  # the did-you-mean names the new column
        # The upstream pipeline alone is still valid: only what reads it breaks.
        ws.validate("stg_orders")


def test_a_retyped_upstream_column_reaches_downstream_checks(project: Path) -> None:
    (project / "pipelines" / "staging" / "stg_orders.yaml").write_text(
        STG.replace(
            "select: {input: raw, columns: [order_id, customer_id, amount, status]}",
            "sql: SELECT order_id, customer_id, CAST(amount AS VARCHAR) AS amount, status FROM raw",
        )
    )
    with Workspace(project) as ws, pytest.raises(SpecError) as err:
        ws.validate("big_customers")  # sum() over text fails two pipelines away
    text = err.value.render()
    assert "sum(VARCHAR)" in text and "customer_totals.yaml" in text and "step 'totals'" in text


def test_cycles_unknown_refs_and_ambiguous_refs_are_refused(project: Path) -> None:
    pipelines = project / "pipelines"
    (pipelines / "a.yaml").write_text(
        "name: loop_a\nsteps:\n  - {id: x, extract: {ref: loop_b}}\n"
        "  - {id: out, load: {input: x, table: a}}\n"
    )
    (pipelines / "b.yaml").write_text(
        "name: loop_b\nsteps:\n  - {id: x, extract: {ref: loop_a}}\n"
        "  - {id: out, load: {input: x, table: b}}\n"
    )
    with Workspace(project) as ws:
        with pytest.raises(SpecError, match="cycle: loop_a -> loop_b -> loop_a"):
            ws.validate_project()
        with pytest.raises(SpecError, match="cycle"):
            ws.validate("loop_a")
        (pipelines / "b.yaml").write_text(
            "name: loop_b\nsteps:\n  - {id: x, extract: {ref: stg_ordrs}}\n"
            "  - {id: out, load: {input: x, table: b}}\n"
        )
        with pytest.raises(SpecError) as err:
            ws.validate("loop_b")
        assert "stg_ordrs" in err.value.render() and "did you mean 'stg_orders'" in err.value.render()
        (pipelines / "b.yaml").write_text(
            "name: loop_b\nsteps:\n  - {id: x, extract: {ref: stg_orders.nope}}\n"
            "  - {id: out, load: {input: x, table: b}}\n"
        )
        with pytest.raises(SpecError, match="has no load step 'nope'"):
            ws.validate("loop_b")
        (pipelines / "b.yaml").write_text(
            "name: loop_b\nsteps:\n  - {id: x, extract: {ref: stg_orders, path: data/orders.csv}}\n"
            "  - {id: out, load: {input: x, table: b}}\n"
        )
        with pytest.raises(SpecError, match="also sets 'path'"):
            ws.validate("loop_b")


def test_selection_syntax(project: Path) -> None:
    with Workspace(project) as ws:
        graph = ws.project()
        assert graph.select("+big_customers") == ["stg_orders", "customer_totals", "big_customers"]
        assert graph.select("stg_orders+") == [
            "stg_orders",
            "customer_totals",
            "status_counts",
            "big_customers",
        ]
        assert graph.select("customer_totals") == ["customer_totals"]
        assert graph.select("tag:marts") == ["customer_totals", "status_counts", "big_customers"]
        assert graph.select("path:pipelines/staging status_counts") == ["stg_orders", "status_counts"]
        assert graph.select("+customer_totals+") == ["stg_orders", "customer_totals", "big_customers"]
        with pytest.raises(NotFoundError, match="did you mean 'customer_totals'"):
            graph.select("customer_total")
        with pytest.raises(NotFoundError, match="tag"):
            graph.select("tag:mart")


def test_run_select_builds_upstream_first_and_publishes_the_right_numbers(project: Path) -> None:
    done = qf(project, "run", "--select", "+big_customers", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [r["pipeline"] for r in report["runs"]] == ["stg_orders", "customer_totals", "big_customers"]
    assert report["not_run"] == []
    assert {"stg_orders", "customer_totals", "big_customers"} <= tables(project)
    assert "status_counts" not in tables(project)  # not selected
    want = expected_totals(project)
    with closing(duckdb.connect(str(project / ".queryforge" / "warehouse.duckdb"), read_only=True)) as con:
        got = {
            r[0]: (r[1], Decimal(str(r[2])).quantize(Decimal("0.01")))
            for r in con.execute("SELECT customer_id, orders, revenue FROM customer_totals").fetchall()
        }
        big = {r[0] for r in con.execute("SELECT customer_id FROM big_customers").fetchall()}
    assert got == {k: (n, v.quantize(Decimal("0.01"))) for k, (n, v) in want.items()}
    assert big == {k for k, (_, v) in want.items() if v > 1000}


def test_run_select_stops_at_the_first_failure_and_says_what_was_not_run(project: Path) -> None:
    (project / "pipelines" / "marts" / "customer_totals.yaml").write_text(
        TOTALS.replace(
            "  - id: out\n",
            "  - id: ok\n    check: {input: totals, rules: [{row_count: {max: 1}}]}\n  - id: out\n",
        )
    )
    done = qf(project, "run", "--select", "stg_orders+")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "customer_totals failed" in done.stderr and "big_customers" in done.stderr
    assert "stg_orders" in tables(project) and "customer_totals" not in tables(project)
    assert "big_customers" not in tables(project)


def test_lineage_in_every_format(project: Path) -> None:
    text = qf(project, "lineage", "customer_totals")
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines() == [
        "  stg_orders",
        "* customer_totals  <- stg_orders",
        "  big_customers  <- customer_totals",
    ]
    data = json.loads(qf(project, "lineage", "customer_totals", "--json").stdout)
    assert data["upstream"] == ["stg_orders"] and data["downstream"] == ["big_customers"]
    assert {(e["from"], e["to"]) for e in data["edges"]} == {
        ("stg_orders", "customer_totals"),
        ("customer_totals", "big_customers"),
    }
    mermaid = qf(project, "lineage", "--format", "mermaid").stdout
    assert mermaid.startswith("flowchart LR") and "stg_orders --> status_counts" in mermaid
    dot = qf(project, "lineage", "big_customers", "--format", "dot").stdout
    assert '"customer_totals" -> "big_customers";' in dot and "status_counts" not in dot
    missing = qf(project, "lineage", "nope")
    assert missing.returncode == 2 and "No pipeline named 'nope'" in missing.stderr


def test_validate_with_no_pipeline_checks_the_project_from_the_cli(project: Path) -> None:
    (project / "pipelines" / "by_day.yaml").write_text(
        "name: by_day\nparams:\n  day: {type: string}\nsteps:\n  - id: o\n    extract: {ref: stg_orders}\n"
        "  - id: out\n    load: {input: o, table: by_day}\n"
    )
    done = qf(project, "validate")
    assert done.returncode == 0, done.stderr
    assert "7 pipelines valid, in dependency order; nothing was run." in done.stdout
    assert "by_day: not validated: parameter 'day' has no default" in done.stdout
    refused = qf(project, "run", "--select", "stg_orders+ by_day")
    assert refused.returncode == 2 and "cannot run on its own" in refused.stderr
    assert "stg_orders" not in tables(project)  # refused before anything ran
    assert qf(project, "validate", "--select", "tag:marts", "--json").returncode == 0


def test_the_jaffle_example_project_gives_dbts_customers_and_orders(tmp_path: Path) -> None:
    """`init --example jaffle`: staging and marts in separate files, validated with nothing run, then
    `run --select +customers +orders`, compared with the dbt models' logic computed in Python."""
    root = tmp_path / "jaffle"
    made = subprocess.run([QF, "init", str(root), "--example", "jaffle"], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert sorted(str(p.relative_to(root / "pipelines")) for p in (root / "pipelines").rglob("*.yaml")) == [
        "marts/customers.yaml",
        "marts/orders.yaml",
        "staging/stg_customers.yaml",
        "staging/stg_orders.yaml",
        "staging/stg_payments.yaml",
    ]
    valid = qf(root, "validate")
    assert valid.returncode == 0 and "5 pipelines valid" in valid.stdout, valid.stderr
    assert tables(root) == set()
    done = qf(root, "run", "--select", "+customers +orders", "--json")
    assert done.returncode == 0, done.stderr
    assert [r["pipeline"] for r in json.loads(done.stdout)["runs"]][-2:] == ["customers", "orders"]

    def read(name: str) -> list[dict[str, str]]:
        with (root / "data" / f"{name}.csv").open(newline="") as fh:
            return list(csv.DictReader(fh))

    customers, orders, payments = read("raw_customers"), read("raw_orders"), read("raw_payments")
    paid: dict[int, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for p in payments:
        paid[int(p["order_id"])][p["payment_method"]] += Decimal(p["amount"]) / 100
    by_customer: dict[int, list[dict[str, str]]] = defaultdict(list)
    for o in orders:
        by_customer[int(o["user_id"])].append(o)
    want_customers = set()
    for c in customers:
        mine = by_customer.get(int(c["id"]), [])
        dates = [o["order_date"] for o in mine]
        value = sum((sum(paid[int(o["id"])].values(), Decimal(0)) for o in mine), Decimal(0))
        want_customers.add(
            (
                int(c["id"]),
                c["first_name"],
                c["last_name"],
                min(dates, default=None),
                max(dates, default=None),
                len(mine) or None,
                value if mine else None,
            )
        )
    want_orders = set()
    for o in orders:
        got = paid.get(int(o["id"]), {})
        amounts = [got.get(m, Decimal(0)) for m in ("credit_card", "coupon", "bank_transfer", "gift_card")]
        want_orders.add(
            (int(o["id"]), int(o["user_id"]), o["order_date"], o["status"], *amounts, sum(amounts))
        )

    with closing(duckdb.connect(str(root / ".queryforge" / "warehouse.duckdb"), read_only=True)) as con:
        got_customers = {
            (r[0], r[1], r[2], r[3] and str(r[3]), r[4] and str(r[4]), r[5], r[6])
            for r in con.execute("SELECT * FROM customers").fetchall()
        }
        got_orders = {(r[0], r[1], str(r[2]), *r[3:]) for r in con.execute("SELECT * FROM orders").fetchall()}
    assert len(got_customers) == 100 and got_customers == want_customers
    assert len(got_orders) == 99 and got_orders == want_orders
    lineage = qf(root, "lineage", "customers", "--json")
    assert json.loads(lineage.stdout)["upstream"] == ["stg_customers", "stg_orders", "stg_payments"]


def test_running_a_pipeline_before_what_it_reads_was_published_says_to_run_upstream_first(
    project: Path,
) -> None:
    done = qf(project, "run", "customer_totals")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "which pipeline 'stg_orders' has not published yet" in done.stderr
    assert "queryforge run --select +stg_orders+" in done.stderr
    assert qf(project, "run", "stg_orders").returncode == 0
    assert qf(project, "run", "customer_totals").returncode == 0
    assert "customer_totals" in tables(project)
