"""`load: {mode: view}` and ephemeral pipelines on real databases: PostgreSQL, MariaDB, SQLite, DuckDB.

Each target gets a fresh, uniquely named database (dropped afterwards). A staging pipeline copies a
CSV into a table; a view pipeline (filter, dedupe, aggregate, derive with a division) publishes a
view over it. The view's rows must equal a computation in plain Python over the CSV, follow the
table when only the staging pipeline runs again (PostgreSQL binds views to their tables, MariaDB to
their names: both must keep working), stay as they were when a check fails, and change columns on
a later publish. MariaDB compares text without case: a view whose filter means something else
there is refused before anything is published.
"""

from __future__ import annotations

import contextlib
import csv
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pymysql
import pytest

from queryforge.errors import ChecksFailed
from queryforge.workspace import Workspace
from tests.services import mysql_database, postgres_database

ORDERS_V1 = """order_id,customer_id,status,amount
1,1,shipped,10.50
2,1,cancelled,99.00
3,2,shipped,20.25
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
  - id: once
    dedupe: {input: live, keys: [order_id]}
  - id: totals
    aggregate: {input: once, group_by: [customer_id], measures: {n: count(*), revenue: sum(amount)}}
  - id: mean
    derive: {input: totals, columns: {average: revenue / n}}
  - id: mean_ok
    check: {input: mean, rules: [{not_null: [customer_id]}, {unique: [customer_id]}]}
  - id: out
    load: {input: mean, table: customer_revenue, mode: view}
"""

EPHEMERAL = """
name: shipped
ephemeral: true
steps:
  - id: orders
    extract: {ref: stg}
  - id: kept
    filter: {input: orders, where: "status = 'shipped'"}
  - id: kept_ok
    check: {input: kept, rules: [{not_null: [order_id]}]}
  - id: out
    load: {input: kept}
"""

SHIPPED_VIEW = """
name: shipped_counts
steps:
  - id: s
    extract: {ref: shipped}
  - id: counts
    sql: SELECT customer_id, count(*) AS n FROM s GROUP BY customer_id
  - id: out
    load: {input: counts, table: shipped_counts, mode: view}
"""

KINDS = ["duckdb", "sqlite", "postgres", "mariadb"]
Query = Callable[[str], list[tuple[Any, ...]]]


def expected(text: str) -> dict[int, tuple[int, float, float]]:
    """Per customer: distinct orders not cancelled, their amount and its mean, in plain Python."""
    seen: dict[str, dict[str, str]] = {}
    for row in csv.DictReader(text.splitlines()):
        if row["status"] != "cancelled":
            seen.setdefault(row["order_id"], row)
    acc: dict[int, list[float]] = defaultdict(lambda: [0, 0.0])
    for row in seen.values():
        acc[int(row["customer_id"])][0] += 1
        acc[int(row["customer_id"])][1] += float(row["amount"])
    return {k: (int(n), round(t, 2), round(t / n, 2)) for k, (n, t) in acc.items()}


@contextlib.contextmanager
def target(kind: str, root: Path) -> Iterator[tuple[str, Query, Callable[[str], str | None]]]:
    """(queryforge.yaml, run a query on the target, the definition of a view or None)."""
    if kind == "duckdb":
        path = root / ".queryforge" / "warehouse.duckdb"

        def q_duck(sql: str) -> list[tuple[Any, ...]]:
            with closing(duckdb.connect(str(path), read_only=True)) as con:
                return con.execute(sql).fetchall()

        def d_duck(name: str) -> str | None:
            found = q_duck(f"SELECT sql FROM duckdb_views() WHERE view_name = '{name}'")
            return found[0][0] if found else None

        yield "name: ws\n", q_duck, d_duck
    elif kind == "sqlite":
        db = root / "target.sqlite"

        def q_lite(sql: str) -> list[tuple[Any, ...]]:
            with closing(sqlite3.connect(db)) as con:
                return con.execute(sql).fetchall()

        def d_lite(name: str) -> str | None:
            found = q_lite(f"SELECT sql FROM sqlite_master WHERE type = 'view' AND name = '{name}'")
            return found[0][0] if found else None

        yield (
            f"name: ws\ntarget: db\nconnections:\n  db: {{url: 'sqlite:{db}', writable: true}}\n",
            q_lite,
            d_lite,
        )
    elif kind == "postgres":
        with postgres_database() as url:

            def q_pg(sql: str) -> list[tuple[Any, ...]]:
                with psycopg.connect(url, autocommit=True) as con:
                    return con.execute(sql.encode()).fetchall()

            def d_pg(name: str) -> str | None:
                found = q_pg(f"SELECT definition FROM pg_views WHERE viewname = '{name}'")
                return found[0][0] if found else None

            yield f"name: ws\ntarget: db\nconnections:\n  db: {{url: '{url}', writable: true}}\n", q_pg, d_pg
    else:
        with mysql_database() as url:
            database = url.rsplit("/", 1)[1]

            def q_my(sql: str) -> list[tuple[Any, ...]]:
                con = pymysql.connect(host="127.0.0.1", user="root", database=database, autocommit=True)
                try:
                    with con.cursor() as cur:
                        cur.execute(sql)
                        return list(cur.fetchall())
                finally:
                    con.close()  # an open connection would hold metadata locks on the views

            def d_my(name: str) -> str | None:
                found = q_my(
                    "SELECT VIEW_DEFINITION FROM information_schema.VIEWS "
                    f"WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{name}'"
                )
                return found[0][0] if found else None

            yield f"name: ws\ntarget: db\nconnections:\n  db: {{url: '{url}', writable: true}}\n", q_my, d_my


def project(root: Path, config: str, pipelines: dict[str, str]) -> None:
    Workspace.init(root, bare=True).close()
    (root / "queryforge.yaml").write_text(config)
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "orders.csv").write_text(ORDERS_V1)
    for name, text in pipelines.items():
        (root / "pipelines" / f"{name}.yaml").write_text(text)


def revenue(query: Query) -> dict[int, tuple[int, float, float]]:
    rows = query("SELECT customer_id, n, revenue, average FROM customer_revenue")
    return {int(c): (int(n), round(float(r), 2), round(float(a), 2)) for c, n, r, a in rows}


@pytest.mark.parametrize("kind", KINDS)
def test_a_view_is_published_follows_its_table_and_survives_a_failed_audit(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "ws"
    with target(kind, root) as (config, query, definition):
        project(root, config, {"stg": STG, "revenue": VIEW})
        with Workspace(root) as ws:
            done, _ = ws.run_selection("+revenue")
            assert [(n, o.status) for n, o in done] == [("stg", "succeeded"), ("revenue", "succeeded")], [
                o.error.render() for _, o in done if o.error
            ]
            assert done[1][1].staged[0].rows == len(expected(ORDERS_V1))
            assert revenue(query) == expected(ORDERS_V1)
            first = definition("customer_revenue")
            assert first is not None and "stg_orders" in first and "_qf_staging" not in first

            # Upstream alone runs again: the view shows the new rows (nothing was copied).
            (root / "data" / "orders.csv").write_text(ORDERS_V2)
            stg = ws.run("stg")
            assert stg.status == "succeeded", stg.error and stg.error.render()
            assert revenue(query) == expected(ORDERS_V2)
            assert len(ws.repo.list_runs(pipeline="revenue")) == 1

            # A new definition whose check fails: the published view keeps its definition and rows.
            (root / "pipelines" / "revenue.yaml").write_text(
                VIEW.replace("status <> 'cancelled'", "status = 'shipped'").replace(
                    "{unique: [customer_id]}", "{range: {column: average, max: 1}}"
                )
            )
            failed = ws.run("revenue")
            assert isinstance(failed.error, ChecksFailed) and not failed.published
            assert definition("customer_revenue") == first
            assert revenue(query) == expected(ORDERS_V2)

            # Other columns on the next publish (PostgreSQL cannot CREATE OR REPLACE that: dropped and
            # created in the publish transaction).
            (root / "pipelines" / "revenue.yaml").write_text(
                VIEW.replace("columns: {average: revenue / n}", "columns: {mean: revenue / n}")
            )
            again = ws.run("revenue")
            assert again.status == "succeeded", again.error and again.error.render()
        rows = query("SELECT customer_id, n, revenue, mean FROM customer_revenue")
        got = {int(c): (int(n), round(float(r), 2), round(float(a), 2)) for c, n, r, a in rows}
        assert got == expected(ORDERS_V2)


@pytest.mark.parametrize("kind", KINDS)
def test_a_view_over_an_ephemeral_pipeline_and_tables_turning_into_views(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "ws"
    with target(kind, root) as (config, query, definition):
        counts = SHIPPED_VIEW.replace("mode: view", "mode: replace")
        project(root, config, {"stg": STG, "shipped": EPHEMERAL, "shipped_counts": counts})
        want = defaultdict(int)
        for row in csv.DictReader(ORDERS_V1.splitlines()):
            if row["status"] == "shipped":
                want[int(row["customer_id"])] += 1
        with Workspace(root) as ws:
            done, _ = ws.run_selection("+shipped_counts")
            assert [n for n, _ in done] == ["stg", "shipped_counts"]  # the ephemeral one is inlined
            assert definition("shipped_counts") is None  # a table
            (root / "pipelines" / "shipped_counts.yaml").write_text(SHIPPED_VIEW)
            view = ws.run("shipped_counts")  # this pipeline's own table becomes a view
            assert view.status == "succeeded", view.error and view.error.render()
            assert "stg_orders" in (definition("shipped_counts") or "")
            assert {int(c): int(n) for c, n in query("SELECT customer_id, n FROM shipped_counts")} == want

            (root / "pipelines" / "shipped_counts.yaml").write_text(counts)
            back = ws.run("shipped_counts")  # and a table again, replacing the view
            assert back.status == "succeeded", back.error and back.error.render()
            assert definition("shipped_counts") is None
            assert {int(c): int(n) for c, n in query("SELECT customer_id, n FROM shipped_counts")} == want


def test_mariadb_refuses_a_view_whose_filter_means_something_else_there(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    with target("mariadb", root) as (config, _query, definition):
        upper = VIEW.replace("status <> 'cancelled'", "status = 'SHIPPED'")  # no row in DuckDB
        project(root, config, {"stg": STG, "revenue": upper})
        with Workspace(root) as ws:
            done, _ = ws.run_selection("+revenue")
        outcome = done[-1][1]
        assert outcome.error is not None and not outcome.published
        text = outcome.error.render()
        shipped = {
            r["customer_id"] for r in csv.DictReader(ORDERS_V1.splitlines()) if r["status"] == "shipped"
        }
        assert f"shows {len(shipped)} rows in connection 'db', but the run computed and audited 0" in text
        assert "mode: replace" in text
        assert definition("customer_revenue") is None
