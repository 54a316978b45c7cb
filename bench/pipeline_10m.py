"""(a) orders CSV -> filter -> join customers -> aggregate -> load, QueryForge vs one raw DuckDB script.

QueryForge runs the pipeline with `Workspace.run` in a bare workspace (SQLite metadata, DuckDB engine,
the local DuckDB warehouse as target). The baseline is the same work as one hand-written DuckDB
statement writing into a fresh database file, with the setting a careful user would choose
(`preserve_insertion_order = false`; no ORDER BY is asked for). The sides alternate, the figures are
medians, and both results are compared row by row so the ratio compares equal work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import yaml

from queryforge.scaffold.sample_data import generate_orders_csv, write_sample_data
from queryforge.workspace import Workspace

from .common import (
    DATA_DIR,
    WORK_DIR,
    Clock,
    Outcome,
    cached,
    clear_run_dirs,
    fmt_load,
    fresh_workspace,
    human_rows,
    load_average,
    log,
    median,
    profile_call,
    remove_duckdb_file,
    sql_str,
    timed,
    warm_file_cache,
)

NAME = "pipeline_10m"
GOAL_RATIO = 1.15
CUSTOMERS = 1000
TABLE = "daily_sales"


@dataclass(frozen=True)
class Inputs:
    orders: Path
    customers: Path
    rows: int


WARMUP_ROWS = 10_000


def ensure_inputs(rows: int) -> Inputs:
    """Cached under bench/.data/: orders_<rows>.csv and sample/customers.csv (1000 customers)."""

    def build_orders(tmp: Path) -> None:
        log(f"[{NAME}] generating {rows:,} orders (cached in {DATA_DIR}) ...")
        elapsed, _ = timed(lambda: generate_orders_csv(tmp, rows, customers=CUSTOMERS))
        log(f"[{NAME}]   done in {elapsed:.1f}s")

    def build_sample(tmp: Path) -> None:
        # write_sample_data makes max(10, orders // 5) customers: 5000 orders -> customers 1..1000,
        # the ids generate_orders_csv(customers=1000) draws from (plus ~1% duplicate customer rows).
        write_sample_data(tmp, orders=CUSTOMERS * 5)

    orders = cached(DATA_DIR / f"orders_{rows}.csv", build_orders)
    sample = cached(DATA_DIR / "sample", build_sample)
    return Inputs(orders=orders, customers=sample / "customers.csv", rows=rows)


def pipeline_spec(inputs: Inputs) -> dict[str, Any]:
    return {
        "name": "bench_daily_sales",
        "description": "Shipped orders per customer country and day (benchmark)",
        "steps": [
            {"id": "orders", "extract": {"path": str(inputs.orders)}},
            {"id": "customers", "extract": {"path": str(inputs.customers)}},
            {"id": "shipped", "filter": {"input": "orders", "where": "status = 'shipped'"}},
            {"id": "enriched", "join": {"left": "shipped", "right": "customers", "on": ["customer_id"]}},
            {
                "id": "daily",
                "aggregate": {
                    "input": "enriched",
                    "group_by": ["country", "order_date"],
                    "measures": {"orders": "count(*)", "revenue": "sum(amount)"},
                },
            },
            {"id": "publish", "load": {"input": "daily", "table": TABLE, "mode": "replace"}},
        ],
    }


def raw_sql(inputs: Inputs) -> list[str]:
    """The hand-written equivalent: one CREATE TABLE AS over both CSV files."""
    return [
        "SET preserve_insertion_order = false",
        f"""
        CREATE TABLE {TABLE} AS
        SELECT c.country, o.order_date, count(*) AS orders, sum(o.amount) AS revenue
        FROM read_csv({sql_str(str(inputs.orders))}) AS o
        JOIN read_csv({sql_str(str(inputs.customers))}) AS c ON o.customer_id = c.customer_id
        WHERE o.status = 'shipped'
        GROUP BY c.country, o.order_date
        """,
    ]


def run_raw(path: Path, statements: list[str]) -> Clock:
    remove_duckdb_file(path)
    start = Clock.now()
    con = duckdb.connect(str(path))
    try:
        for statement in statements:
            con.execute(statement)
    finally:
        con.close()
    return Clock.now().since(start)


def run_queryforge(ws: Workspace, pipeline: Path) -> tuple[Clock, str, dict[str, float]]:
    clear_run_dirs(ws)
    start = Clock.now()
    outcome = ws.run(str(pipeline))
    spent = Clock.now().since(start)
    if outcome.status != "succeeded":
        raise RuntimeError(f"QueryForge run {outcome.run_id} ended {outcome.status}: {outcome.error}")
    steps = {s.step_id: (s.duration_ms or 0.0) / 1000 for s in ws.repo.list_steps(outcome.run_id)}
    return spent, outcome.run_id, steps


def compare(warehouse: Path, raw: Path) -> dict[str, Any]:
    """Row counts, totals and the number of (country, day) rows that differ between the two results."""
    con = duckdb.connect()
    try:
        con.execute(f"ATTACH {sql_str(str(warehouse))} AS qf (READ_ONLY)")
        con.execute(f"ATTACH {sql_str(str(raw))} AS raw (READ_ONLY)")
        totals = {}
        for side in ("qf", "raw"):
            row = con.execute(
                f"SELECT count(*), sum(orders), round(sum(revenue), 2) FROM {side}.{TABLE}"
            ).fetchone()
            assert row is not None
            totals[side] = {"rows": int(row[0]), "orders": int(row[1] or 0), "revenue": float(row[2] or 0)}
        row = con.execute(
            f"""
            SELECT count(*) FROM qf.{TABLE} AS q FULL JOIN raw.{TABLE} AS r
              ON q.country IS NOT DISTINCT FROM r.country AND q.order_date = r.order_date
            WHERE q.order_date IS NULL OR r.order_date IS NULL OR q.orders <> r.orders
               OR abs(q.revenue - r.revenue) > 1e-9 * greatest(1, abs(r.revenue))
            """
        ).fetchone()
        assert row is not None
        return {**totals, "mismatched_rows": int(row[0])}
    finally:
        con.close()


def run(rows: int, repeat: int, profile: bool) -> Outcome:
    label = f"{NAME}[{human_rows(rows)} rows]" if rows != 10_000_000 else NAME
    inputs = ensure_inputs(rows)
    warmup = ensure_inputs(WARMUP_ROWS)
    ws = fresh_workspace(NAME)
    try:
        pipeline = ws.root / "pipelines" / "bench_daily_sales.yaml"
        pipeline.write_text(yaml.safe_dump(pipeline_spec(inputs), sort_keys=False))
        raw_db = WORK_DIR / f"{NAME}_raw.duckdb"
        statements = raw_sql(inputs)

        # One untimed run of each side on a small file: first-use costs (lazy imports, SQLAlchemy's
        # statement cache, DuckDB's first connection) are not what this benchmark compares.
        small = ws.root / "pipelines" / "bench_daily_sales_warmup.yaml"
        small.write_text(yaml.safe_dump(pipeline_spec(warmup), sort_keys=False))
        run_queryforge(ws, small)
        run_raw(raw_db, raw_sql(warmup))

        warm_file_cache(inputs.orders)
        warm_file_cache(inputs.customers)

        load_before = load_average()
        qf_clocks: list[Clock] = []
        raw_clocks: list[Clock] = []
        step_times: list[dict[str, float]] = []
        for i in range(repeat):
            # Alternate which side goes first, so neither always runs right after the other's I/O.
            order = ("queryforge", "raw") if i % 2 == 0 else ("raw", "queryforge")
            for side in order:
                if side == "raw":
                    raw_clocks.append(run_raw(raw_db, statements))
                    spent = raw_clocks[-1]
                    log(
                        f"[{label}] rep {i + 1}/{repeat} raw duckdb  {spent.wall:.2f}s (cpu {spent.cpu:.2f}s)"
                    )
                else:
                    spent, run_id, steps = run_queryforge(ws, pipeline)
                    qf_clocks.append(spent)
                    step_times.append(steps)
                    log(
                        f"[{label}] rep {i + 1}/{repeat} queryforge  {spent.wall:.2f}s (cpu {spent.cpu:.2f}s)"
                        f"  run {run_id}"
                    )
        load_after = load_average()

        check = compare(ws.state / "warehouse.duckdb", raw_db)
        same = (
            check["mismatched_rows"] == 0
            and check["qf"]["rows"] == check["raw"]["rows"]
            and check["qf"]["orders"] == check["raw"]["orders"]
        )
        profile_text = None
        if profile:
            profile_text = profile_call(NAME, lambda: ws.run(str(pipeline)))
    finally:
        ws.close()

    qf_times, raw_times = [c.wall for c in qf_clocks], [c.wall for c in raw_clocks]
    qf, raw = median(qf_times), median(raw_times)
    qf_cpu, raw_cpu = median([c.cpu for c in qf_clocks]), median([c.cpu for c in raw_clocks])
    ratio = qf / raw
    cpu_ratio = qf_cpu / raw_cpu
    per_step = {
        step: median([s.get(step, 0.0) for s in step_times]) for step in (step_times[0] if step_times else {})
    }
    meets = ratio <= GOAL_RATIO
    line = (
        f"{label:<26} queryforge {qf:.2f}s  raw duckdb {raw:.2f}s  ratio {ratio:.2f}x "
        f"(goal <= {GOAL_RATIO:.2f}x: {'met' if meets else 'NOT met'})  cpu ratio {cpu_ratio:.2f}x  "
        f"results {'identical' if same else 'DIFFER'}"
    )
    details = [
        f"{label}: queryforge runs {', '.join(f'{t:.2f}s' for t in qf_times)}; "
        f"raw runs {', '.join(f'{t:.2f}s' for t in raw_times)}; CPU seconds median queryforge "
        f"{qf_cpu:.2f}s, raw {raw_cpu:.2f}s; load average {fmt_load(load_before)} -> {fmt_load(load_after)}",
        f"{label}: result rows {check['qf']['rows']:,} (raw {check['raw']['rows']:,}), "
        f"orders {check['qf']['orders']:,} (raw {check['raw']['orders']:,}), "
        f"revenue {check['qf']['revenue']:,.2f} (raw {check['raw']['revenue']:,.2f}), "
        f"differing rows {check['mismatched_rows']}",
        f"{label}: median step durations recorded by QueryForge: "
        + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in per_step.items()),
        f"{label}: time in Workspace.run outside recorded steps (bind, compile, bookkeeping): "
        f"{(qf - sum(per_step.values())) * 1000:.0f} ms",
    ]
    if profile_text:
        details.append(profile_text)
    return Outcome(
        name=NAME,
        line=line,
        meets_goal=meets,
        details=details,
        figures={
            "rows": rows,
            "repeat": repeat,
            "queryforge_s": qf_times,
            "raw_s": raw_times,
            "queryforge_cpu_s": [c.cpu for c in qf_clocks],
            "raw_cpu_s": [c.cpu for c in raw_clocks],
            "queryforge_median_s": qf,
            "raw_median_s": raw,
            "ratio": ratio,
            "cpu_ratio": cpu_ratio,
            "load_average": [load_before, load_after],
            "goal_ratio": GOAL_RATIO,
            "results_identical": same,
            "comparison": check,
            "queryforge_step_median_s": per_step,
        },
    )
