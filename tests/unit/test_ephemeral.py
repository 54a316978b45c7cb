"""`ephemeral: true`: a pipeline that publishes nothing and is inlined into the pipelines that ref it.

The consumer of an ephemeral pipeline must publish exactly what it publishes when the same steps
are an ordinary, published pipeline, and what plain Python computes from the CSV. An ephemeral
pipeline has no run of its own, its checks gate its consumers' publishes, its columns validate
its consumers (a renamed column fails them with a did-you-mean), and lineage marks it.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import defaultdict
from contextlib import closing
from pathlib import Path
from typing import Any

import duckdb
import pytest

from queryforge.errors import ChecksFailed, SpecError, UserError
from queryforge.workspace import Workspace

QF = str(Path(sys.executable).with_name("queryforge"))

ORDERS = """order_id,customer_id,status,amount
1,1,shipped,10.50
2,1,cancelled,99.00
3,2,shipped,20.25
4,3,pending,5.00
5,2,shipped,4.75
6,4,shipped,1.00
7,4,shipped,2.50
"""

STG = """
name: stg
steps:
  - id: raw
    extract: {path: data/orders.csv}
  - id: out
    load: {input: raw, table: stg_orders}
"""

SHIPPED = """
name: shipped
ephemeral: true
steps:
  - id: orders
    extract: {ref: stg}
  - id: kept
    filter: {input: orders, where: "status = 'shipped'"}
  - id: doubled
    derive: {input: kept, columns: {twice: amount * 2}}
  - id: doubled_ok
    check: {input: doubled, rules: [{not_null: [order_id]}, {unique: [order_id]}]}
  - id: out
    load: {input: doubled}
"""

# The same steps as an ordinary pipeline that publishes a table: the equivalent to compare with.
SHIPPED_TABLE = SHIPPED.replace("name: shipped\nephemeral: true", "name: shipped_table").replace(
    "load: {input: doubled}", "load: {input: doubled, table: shipped_orders}"
)

TOTALS = """
name: %(name)s
steps:
  - id: s
    extract: {ref: %(ref)s}
  - id: totals
    sql: SELECT customer_id, count(*) AS n, sum(twice) AS twice FROM s GROUP BY customer_id
  - id: out
    load: {input: totals, table: %(table)s}
"""


def expected() -> dict[int, tuple[int, float]]:
    """Per customer: shipped orders and twice their amount, in plain Python from the CSV."""
    acc: dict[int, list[float]] = defaultdict(lambda: [0, 0.0])
    for row in csv.DictReader(ORDERS.splitlines()):
        if row["status"] == "shipped":
            acc[int(row["customer_id"])][0] += 1
            acc[int(row["customer_id"])][1] += 2 * float(row["amount"])
    return {k: (int(n), round(t, 2)) for k, (n, t) in acc.items()}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    Workspace.init(root, bare=True).close()
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "orders.csv").write_text(ORDERS)
    pipelines = {
        "stg": STG,
        "shipped": SHIPPED,
        "shipped_table": SHIPPED_TABLE,
        "totals": TOTALS % {"name": "totals", "ref": "shipped", "table": "totals"},
        "totals_table": TOTALS % {"name": "totals_table", "ref": "shipped_table", "table": "totals_eq"},
    }
    for name, text in pipelines.items():
        (root / "pipelines" / f"{name}.yaml").write_text(text)
    return root


def warehouse(root: Path, sql: str) -> list[tuple[Any, ...]]:
    with closing(duckdb.connect(str(root / ".queryforge" / "warehouse.duckdb"), read_only=True)) as con:
        return con.execute(sql).fetchall()


def totals(root: Path, table: str) -> dict[int, tuple[int, float]]:
    return {int(c): (int(n), round(float(t), 2)) for c, n, t in warehouse(root, f"SELECT * FROM {table}")}


def test_the_consumer_publishes_what_the_published_equivalent_and_python_give(project: Path) -> None:
    with Workspace(project) as ws:
        done, not_run = ws.run_selection("+totals +totals_table")
        # The ephemeral pipeline is not run: it is inlined into `totals`.
        assert [n for n, _ in done] == ["stg", "shipped_table", "totals", "totals_table"]
        assert all(o.status == "succeeded" for _, o in done) and not not_run
        steps = {s.step_id for s in ws.repo.list_steps(done[2][1].run_id)}
        assert {"shipped__orders", "shipped__kept", "shipped__doubled_ok", "s"} <= steps
        checks = {c["step_id"] for c in done[2][1].checks}
        assert checks == {"shipped__doubled_ok"}  # the ephemeral pipeline's checks audit its consumer
    tables = {r[0] for r in warehouse(project, "SELECT table_name FROM information_schema.tables")}
    assert "shipped_orders" in tables and not {"shipped", "shipped__doubled"} & tables
    assert totals(project, "totals") == totals(project, "totals_eq") == expected()


def test_an_ephemeral_pipeline_has_no_run_of_its_own(project: Path) -> None:
    with Workspace(project) as ws:
        with pytest.raises(UserError) as err:
            ws.run("shipped")
        text = err.value.render()
        assert "Pipeline shipped is ephemeral: it is inlined into the pipelines that read it" in text
        assert "shipped.yaml:3" in text and "queryforge run --select shipped+" in text
        with pytest.raises(UserError, match="is ephemeral"):
            ws.submit("shipped")
        assert ws.repo.list_runs(pipeline="shipped") == []
    cli = subprocess.run([QF, "run", "shipped"], cwd=project, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2 and "is ephemeral" in cli.stderr


def test_validate_a_project_with_ephemeral_and_view_pipelines(project: Path) -> None:
    (project / "pipelines" / "shipped_view.yaml").write_text(
        "name: shipped_view\nsteps:\n  - id: s\n    extract: {ref: shipped}\n"
        "  - id: out\n    load: {input: s, table: shipped_view, mode: view}\n"
    )
    with Workspace(project) as ws:
        plans = dict(ws.validate_project().plans)
    assert plans["shipped"].ephemeral and not plans["shipped"].targets
    view = next(s for s in plans["shipped_view"].stages if getattr(s, "mode", None) == "view")
    # The inlined steps are CTEs of the view, over the real table stg_orders.
    assert '"shipped__kept" AS (SELECT * FROM "shipped__orders"' in view.view
    assert '"main"."stg_orders"' in view.view and dict(view.sources) == {"shipped__orders": "stg_orders"}
    cli = subprocess.run([QF, "validate"], cwd=project, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert "shipped: 4 steps, ephemeral: inlined into the pipelines that ref it" in cli.stdout
    assert "shipped_view: " in cli.stdout and "loads into warehouse.shipped_view" in cli.stdout
    with Workspace(project) as ws:
        done, _ = ws.run_selection("+shipped_view")
        assert [(n, o.status) for n, o in done] == [("stg", "succeeded"), ("shipped_view", "succeeded")]
    assert len(warehouse(project, "SELECT * FROM shipped_view")) == sum(n for n, _ in expected().values())


def test_a_renamed_column_upstream_fails_the_consumer_with_a_did_you_mean(project: Path) -> None:
    (project / "pipelines" / "shipped.yaml").write_text(
        SHIPPED.replace(
            "derive: {input: kept, columns: {twice: amount * 2}}",
            "sql: SELECT order_id, customer_id AS customer, amount * 2 AS twice FROM kept",
        )
    )
    with Workspace(project) as ws:
        with pytest.raises(SpecError) as err:
            ws.validate_project()
        text = err.value.render()
        assert "totals.yaml:7" in text and "step 'totals'" in text
        # the column the consumer wants, and the one there is now
        assert '"customer_id" not found' in text and "did you mean 'customer'?" in text
        ws.validate("shipped")  # the ephemeral pipeline alone is still valid


def test_a_failing_check_of_the_ephemeral_pipeline_stops_its_consumer(project: Path) -> None:
    (project / "pipelines" / "shipped.yaml").write_text(
        SHIPPED.replace("{unique: [order_id]}", "{range: {column: amount, min: 5}}")
    )
    with Workspace(project) as ws:
        ws.run("stg")
        outcome = ws.run("totals")
    assert isinstance(outcome.error, ChecksFailed) and not outcome.published
    assert [c["step_id"] for c in outcome.failed_checks] == ["shipped__doubled_ok"]
    assert "totals" not in {
        r[0] for r in warehouse(project, "SELECT table_name FROM information_schema.tables")
    }


def test_the_column_checks_of_an_ephemeral_output_run_in_the_consumers_audit(project: Path) -> None:
    (project / "pipelines" / "shipped.yaml").write_text(
        SHIPPED.replace(
            "load: {input: doubled}",
            "load: {input: doubled, columns: {status: {checks: [{accepted_values: [pending]}]}}}",
        )
    )
    with Workspace(project) as ws:
        ws.run("stg")
        outcome = ws.run("totals")
    assert isinstance(outcome.error, ChecksFailed) and not outcome.published
    (failed,) = outcome.failed_checks
    shipped = sum(n for n, _ in expected().values())
    assert failed["step_id"] == "shipped__out.columns" and failed["violations"] == shipped


def test_an_ephemeral_pipeline_over_files_is_read_from_the_consumers_snapshot(project: Path) -> None:
    (project / "pipelines" / "shipped.yaml").write_text(
        SHIPPED.replace("extract: {ref: stg}", "extract: {path: data/orders.csv}")
    )
    with Workspace(project) as ws:
        outcome = ws.run("totals")
        assert outcome.status == "succeeded", outcome.error and outcome.error.render()
        extract = next(s for s in ws.repo.list_steps(outcome.run_id) if s.step_id == "shipped__orders")
        assert extract.message and extract.message.startswith("snapshot ")  # read as the run's snapshot
        # A view cannot read files, even through an ephemeral pipeline: refused where the file is read.
        (project / "pipelines" / "v.yaml").write_text(
            "name: v\nsteps:\n  - id: s\n    extract: {ref: shipped}\n"
            "  - id: out\n    load: {input: s, table: v, mode: view}\n"
        )
        with pytest.raises(SpecError) as err:
            ws.validate("v")
    text = err.value.render()
    assert "step 'shipped__orders' reads files" in text and "shipped.yaml:6" in text
    assert totals(project, "totals") == expected()


def test_what_an_ephemeral_pipeline_cannot_be(project: Path) -> None:
    path = project / "pipelines" / "shipped.yaml"
    with Workspace(project) as ws:
        path.write_text(SHIPPED.replace("  - id: out\n    load: {input: doubled}\n", ""))
        with pytest.raises(SpecError, match="has no load step, so a ref to it has nothing to read"):
            ws.validate("shipped")
        path.write_text(SHIPPED.replace("ephemeral: true", "ephemeral: true\nafter: [stg]"))
        with pytest.raises(SpecError, match="an ephemeral pipeline has no runs to trigger"):
            ws.validate("shipped")
        path.write_text(
            SHIPPED.replace(
                "extract: {ref: stg}",
                "extract: {connection: warehouse, table: stg_orders, incremental: {cursor: order_id}}",
            )
        )
        ws.run("stg")
        with pytest.raises(SpecError, match="no runs of its own to keep a high-water mark"):
            ws.validate("shipped")


def test_lineage_marks_ephemeral_pipelines(project: Path) -> None:
    with Workspace(project) as ws:
        lineage = ws.lineage("totals")
    assert lineage.ephemeral == ("shipped",)
    assert lineage.text().splitlines() == ["  stg", "  shipped (ephemeral)  <- stg", "* totals  <- shipped"]
    assert (
        "  shipped([shipped])" in lineage.mermaid() and "style shipped stroke-dasharray" in lineage.mermaid()
    )
    assert '"shipped" [style=dashed];' in lineage.dot()
    assert lineage.to_json()["ephemeral"] == ["shipped"]
    cli = subprocess.run(
        [QF, "lineage", "--format", "json"], cwd=project, capture_output=True, text=True, timeout=120
    )
    assert json.loads(cli.stdout)["ephemeral"] == ["shipped"]
