"""`load: {mode: view}`: a view over tables of the target database, published without copying data.

A staging pipeline copies a CSV into a table; a second pipeline publishes a view over it. The
view's rows are compared with a computation in plain Python over the CSV, and after the staging
pipeline alone runs again on new data, the view shows the new numbers without its own pipeline
running: nothing was copied. The audit still gates the publish, and everything a view cannot
express (files, other connections, parameters, incremental reads, file targets) is refused at
validation with the hint to copy the data instead. On the DuckDB warehouse and on SQLite.
"""

from __future__ import annotations

import csv
import sqlite3
from collections import defaultdict
from contextlib import closing
from pathlib import Path
from typing import Any

import duckdb
import pytest

from queryforge.errors import ChecksFailed, ProductionChanged, SpecError
from queryforge.workspace import Workspace

ORDERS_V1 = """order_id,customer_id,status,amount
1,1,shipped,10.50
2,1,cancelled,99.00
3,2,shipped,20.25
4,3,pending,5.00
5,2,shipped,4.75
6,4,cancelled,1.00
"""
ORDERS_V2 = """order_id,customer_id,status,amount
1,1,shipped,10.50
2,1,shipped,99.00
3,2,cancelled,20.25
5,2,shipped,4.75
7,5,pending,42.00
8,5,shipped,8.00
"""

STG = """
name: stg
steps:
  - id: raw
    extract: {path: data/orders.csv}
  - id: out
    load: {input: raw, table: stg_orders}
"""

VIEW = """
name: revenue
steps:
  - id: orders
    extract: {ref: stg}
  - id: live
    filter: {input: orders, where: "status <> 'cancelled'"}
  - id: totals
    aggregate: {input: live, group_by: [customer_id], measures: {n: count(*), revenue: sum(amount)}}
  - id: totals_ok
    check: {input: totals, rules: [{not_null: [customer_id]}, {unique: [customer_id]}]}
  - id: out
    load: {input: totals, table: customer_revenue, mode: view}
"""


def expected(text: str) -> dict[int, tuple[int, float]]:
    """Per customer: orders not cancelled and their amount, computed in Python from the CSV."""
    acc: dict[int, list[float]] = defaultdict(lambda: [0, 0.0])
    for row in csv.DictReader(text.splitlines()):
        if row["status"] != "cancelled":
            acc[int(row["customer_id"])][0] += 1
            acc[int(row["customer_id"])][1] += float(row["amount"])
    return {k: (int(n), round(total, 2)) for k, (n, total) in acc.items()}


def make_project(root: Path, kind: str, pipelines: dict[str, str]) -> None:
    Workspace.init(root, bare=True).close()
    if kind == "sqlite":
        (root / "queryforge.yaml").write_text(
            f"name: ws\ntarget: lite\nconnections:\n  lite: {{url: 'sqlite:{root / 'target.sqlite'}', "
            "writable: true}\n"
        )
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "orders.csv").write_text(ORDERS_V1)
    for name, text in pipelines.items():
        (root / "pipelines" / f"{name}.yaml").write_text(text)


def query(root: Path, kind: str, sql: str) -> list[tuple[Any, ...]]:
    if kind == "sqlite":
        with closing(sqlite3.connect(root / "target.sqlite")) as con:
            return con.execute(sql).fetchall()
    with closing(duckdb.connect(str(root / ".queryforge" / "warehouse.duckdb"), read_only=True)) as con:
        return con.execute(sql).fetchall()


def kind_of(root: Path, kind: str, name: str) -> str | None:
    sql = (
        f"SELECT type FROM sqlite_master WHERE name = '{name}'"
        if kind == "sqlite"
        else f"SELECT lower(table_type) FROM information_schema.tables WHERE table_name = '{name}'"
    )
    found = query(root, kind, sql)
    return None if not found else "view" if "view" in found[0][0] else "table"


def revenue(root: Path, kind: str) -> dict[int, tuple[int, float]]:
    rows = query(root, kind, "SELECT customer_id, n, revenue FROM customer_revenue")
    return {int(c): (int(n), round(float(r), 2)) for c, n, r in rows}


@pytest.mark.parametrize("kind", ["duckdb", "sqlite"])
def test_a_view_shows_what_python_computes_and_follows_upstream_without_running(
    tmp_path: Path, kind: str
) -> None:
    root = tmp_path / "ws"
    make_project(root, kind, {"stg": STG, "revenue": VIEW})
    with Workspace(root) as ws:
        done, not_run = ws.run_selection("+revenue")
        assert [(n, o.status) for n, o in done] == [("stg", "succeeded"), ("revenue", "succeeded")]
        assert not not_run
        staged = done[1][1].staged[0]
        assert staged.mode == "view" and staged.diff == {}
        assert staged.rows == len(expected(ORDERS_V1))  # the rows the view shows, counted in the target
        assert kind_of(root, kind, "customer_revenue") == "view"
        assert revenue(root, kind) == expected(ORDERS_V1)

        # Only upstream runs on new data: the view shows it, so it copied nothing.
        (root / "data" / "orders.csv").write_text(ORDERS_V2)
        assert ws.run("stg").status == "succeeded"
        assert expected(ORDERS_V2) != expected(ORDERS_V1)
        assert revenue(root, kind) == expected(ORDERS_V2)
        runs = ws.repo.list_runs(pipeline="revenue")
        assert len(runs) == 1  # the view's pipeline did not run again


def test_the_view_sql_reads_the_targets_real_tables_in_its_dialect(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    make_project(root, "sqlite", {"stg": STG, "revenue": VIEW})
    with Workspace(root) as ws:
        plan = ws.validate_project().plans[-1][1]
    (load,) = [s for s in plan.stages if getattr(s, "mode", None) == "view"]
    assert '"main"."stg_orders"' in load.view  # qualified: no step (CTE) can stand in for it
    assert "_qf_staging" not in load.view and "stg_orders" in dict(load.sources).values()
    assert load.view.startswith("WITH ") and 'SELECT "customer_id", "n", "revenue" FROM "totals"' in load.view


def test_a_failing_check_leaves_the_published_view_unchanged(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    make_project(root, "duckdb", {"stg": STG, "revenue": VIEW})
    with Workspace(root) as ws:
        ws.run_selection("+revenue")
        before = query(root, "duckdb", "SELECT sql FROM duckdb_views() WHERE view_name = 'customer_revenue'")
        # A new definition (shipped only) whose check fails: nothing may reach production.
        (root / "pipelines" / "revenue.yaml").write_text(
            VIEW.replace("status <> 'cancelled'", "status = 'shipped'").replace(
                "{unique: [customer_id]}", "{range: {column: revenue, max: 1}}"
            )
        )
        outcome = ws.run("revenue")
        assert isinstance(outcome.error, ChecksFailed) and not outcome.published
        assert [c["step_id"] for c in outcome.failed_checks] == ["totals_ok"]
    after = query(root, "duckdb", "SELECT sql FROM duckdb_views() WHERE view_name = 'customer_revenue'")
    assert after == before and "cancelled" in after[0][0]
    assert revenue(root, "duckdb") == expected(ORDERS_V1)


def refusal(root: Path, name: str, text: str) -> str:
    (root / "pipelines" / f"{name}.yaml").write_text(text)
    with Workspace(root) as ws, pytest.raises(SpecError) as err:
        ws.validate(name)
    return err.value.render()


def test_what_a_view_cannot_read_is_refused_at_validation(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    make_project(root, "duckdb", {"stg": STG})
    (root / "queryforge.yaml").write_text(
        "name: ws\nconnections:\n  other: {url: 'duckdb:other.duckdb', writable: true}\n"
    )
    with closing(duckdb.connect(str(root / "other.duckdb"))) as con:
        con.execute("CREATE TABLE elsewhere AS SELECT 1 AS id")
    with Workspace(root) as ws:
        assert ws.run("stg").status == "succeeded"

    text = refusal(
        root,
        "from_file",
        "name: from_file\nsteps:\n  - id: raw\n    extract: {path: data/orders.csv}\n"
        "  - id: out\n    load: {input: raw, table: v_file, mode: view}\n",
    )
    assert "step 'raw' reads files" in text and "from_file.yaml:4" in text
    assert "use mode: replace to copy the data" in text

    text = refusal(
        root,
        "other_db",
        "name: other_db\nsteps:\n  - id: t\n    extract: {connection: other, table: elsewhere}\n"
        "  - id: out\n    load: {input: t, table: v_other, mode: view}\n",
    )
    assert "reads connection 'other'" in text and "mode: replace" in text

    text = refusal(
        root,
        "with_param",
        "name: with_param\nparams: {minimum: 5}\nsteps:\n  - id: o\n    extract: {ref: stg}\n"
        "  - id: big\n    filter: {input: o, where: 'amount > ${minimum}'}\n"
        "  - id: out\n    load: {input: big, table: v_param, mode: view}\n",
    )
    assert "step 'big' uses ${minimum}" in text and "with_param.yaml:7" in text

    text = refusal(
        root,
        "rolling",
        "name: rolling\nsteps:\n  - id: o\n    extract: {ref: stg}\n"
        "  - id: today\n    filter: {input: o, where: \"status <> '${today}'\"}\n"
        "  - id: out\n    load: {input: today, table: v_today, mode: view}\n",
    )
    assert "${today}" in text  # a built-in date is frozen into a view just the same

    text = refusal(
        root,
        "incr",
        "name: incr\nsteps:\n  - id: o\n    extract: {connection: warehouse, table: stg_orders, "
        "incremental: {cursor: order_id}}\n  - id: out\n    load: {input: o, table: v_incr, mode: view}\n",
    )
    assert "step 'o' is incremental" in text

    text = refusal(
        root,
        "to_file",
        "name: to_file\nsteps:\n  - id: o\n    extract: {ref: stg}\n"
        "  - id: out\n    load: {input: o, path: out/orders.parquet, mode: view}\n",
    )
    assert "a file cannot be a view" in text and "to_file.yaml:6" in text

    text = refusal(
        root,
        "keyed",
        "name: keyed\nsteps:\n  - id: o\n    extract: {ref: stg}\n"
        "  - id: out\n    load: {input: o, table: v_keyed, mode: view, keys: [order_id]}\n",
    )
    assert "sets 'keys', which a view does not use" in text

    text = refusal(
        root,
        "itself",
        "name: itself\nsteps:\n  - id: o\n    extract: {connection: warehouse, table: stg_orders}\n"
        "  - id: out\n    load: {input: o, table: stg_orders, mode: view}\n",
    )
    assert "reads stg_orders, the view itself" in text


def test_tables_and_views_replace_each_other_only_when_the_table_is_the_pipelines(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    make_project(root, "duckdb", {"stg": STG})
    counts = (
        "name: counts\nsteps:\n  - id: o\n    extract: {ref: stg}\n"
        "  - id: agg\n    aggregate: {input: o, group_by: [status], measures: {n: count(*)}}\n"
        "  - id: out\n    load: {input: agg, table: %s, mode: %s}\n"
    )
    path = root / "pipelines" / "counts.yaml"
    with Workspace(root) as ws:
        ws.run("stg")
        with closing(duckdb.connect(str(root / ".queryforge" / "warehouse.duckdb"))) as con:
            con.execute("CREATE TABLE hand_made AS SELECT 42 AS answer")
        path.write_text(counts % ("hand_made", "view"))
        outcome = ws.run("counts")
        assert outcome.error is not None and not outcome.published
        assert "which is a table this pipeline did not publish" in outcome.error.render()
        assert query(root, "duckdb", "SELECT * FROM hand_made") == [(42,)]  # untouched

        path.write_text(counts % ("status_counts", "replace"))
        assert ws.run("counts").status == "succeeded"
        assert kind_of(root, "duckdb", "status_counts") == "table"
        path.write_text(counts % ("status_counts", "view"))  # its own table: becomes the view
        assert ws.run("counts").status == "succeeded"
        assert kind_of(root, "duckdb", "status_counts") == "view"

        path.write_text(counts % ("status_counts", "append"))  # would write through the view
        outcome = ws.run("counts")
        assert outcome.error is not None and "which is a view" in outcome.error.render()
        assert kind_of(root, "duckdb", "status_counts") == "view"

        path.write_text(counts % ("status_counts", "replace"))  # back to a table, in one transaction
        assert ws.run("counts").status == "succeeded"
        assert kind_of(root, "duckdb", "status_counts") == "table"
        want = sorted((s, sum(1 for r in csv.DictReader(ORDERS_V1.splitlines()) if r["status"] == s))
                      for s in {"shipped", "cancelled", "pending"})  # fmt: skip
        assert sorted(query(root, "duckdb", "SELECT status, n FROM status_counts")) == want


def test_commit_refuses_a_view_whose_tables_changed_since_the_audit(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    make_project(root, "duckdb", {"stg": STG, "revenue": VIEW})
    with Workspace(root) as ws:
        ws.run("stg")
        audited = ws.run("revenue", sandbox=True)
        assert audited.status == "audited" and kind_of(root, "duckdb", "customer_revenue") is None
        detail = ws.run_detail(audited.run_id)
        assert len(detail["staged"][0]["preview"]) == len(expected(ORDERS_V1))  # the query, run live

        (root / "data" / "orders.csv").write_text(ORDERS_V2)
        ws.run("stg")  # the table the view reads changed after the audit
        with pytest.raises(ProductionChanged, match="changed after the run read it"):
            ws.commit(audited.run_id)
        assert kind_of(root, "duckdb", "customer_revenue") is None

        again = ws.run("revenue", sandbox=True)
        assert ws.commit(again.run_id).status == "succeeded"
    assert revenue(root, "duckdb") == expected(ORDERS_V2)
