"""(f) The core benchmark pipeline on the Spark engine vs the same plan written directly in PySpark.

The pipeline of `pipeline_10m` (orders CSV -> filter -> join customers -> aggregate -> load into
the DuckDB warehouse) runs with `Workspace.run` on the Spark engine. The baseline is the same plan
written by hand in PySpark in the same process and the same Spark session (CSV read with the
schema given, filter, join, aggregate, the result as Arrow into a DuckDB table): what a careful
PySpark user would write. The DuckDB engine runs the same pipeline in the same run, which gives
the DuckDB/Spark ratio on this machine. Sides alternate; figures are medians; both results are
compared row by row.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import yaml

from queryforge.libs.spark import functions, shared_session
from queryforge.workspace import Workspace

from . import pipeline_10m
from .common import WORK_DIR, Clock, Outcome, clear_run_dirs, fresh_workspace, human_rows, log, median

NAME = "spark_engine"
GOAL_RATIO = 1.1
ORDERS_SCHEMA = (
    "order_id BIGINT, customer_id BIGINT, product_id BIGINT, order_date DATE, status STRING, "
    "quantity BIGINT, amount DOUBLE, updated_at TIMESTAMP"
)
CUSTOMERS_SCHEMA = (
    "customer_id BIGINT, name STRING, email STRING, country STRING, signup_date DATE, updated_at TIMESTAMP"
)


def run_pyspark(inputs: pipeline_10m.Inputs, target: Path) -> Clock:
    """The hand-written PySpark plan, its result stored in a fresh DuckDB file like a load would."""
    pipeline_10m.remove_duckdb_file(target)
    start = Clock.now()
    spark = shared_session().newSession()
    f = functions()
    orders = spark.read.csv(str(inputs.orders), header=True, schema=ORDERS_SCHEMA)
    customers = spark.read.csv(str(inputs.customers), header=True, schema=CUSTOMERS_SCHEMA)
    daily = (
        orders.where(f.col("status") == "shipped")
        .join(customers.select("customer_id", "country"), "customer_id")
        .groupBy("country", "order_date")
        .agg(f.count(f.lit(1)).alias("orders"), f.sum("amount").alias("revenue"))
    )
    result = daily.toArrow()
    with duckdb.connect(str(target)) as con:
        con.register("result", result)
        con.execute(f"CREATE TABLE {pipeline_10m.TABLE} AS SELECT * FROM result")
    return Clock.now().since(start)


def run_queryforge(ws: Workspace, pipeline: Path) -> Clock:
    clear_run_dirs(ws)
    start = Clock.now()
    outcome = ws.run(str(pipeline))
    spent = Clock.now().since(start)
    if outcome.status != "succeeded":
        raise RuntimeError(
            f"run {outcome.run_id} on {ws.engine_name} ended {outcome.status}: {outcome.error}"
        )
    return spent


def run(rows: int, repeat: int) -> Outcome:
    label = f"{NAME}[{human_rows(rows)} rows]"
    inputs = pipeline_10m.ensure_inputs(rows)
    warmup = pipeline_10m.ensure_inputs(pipeline_10m.WARMUP_ROWS)
    on_spark, on_duckdb = fresh_workspace(NAME), fresh_workspace(f"{NAME}_duckdb")
    raw_db = WORK_DIR / f"{NAME}_pyspark.duckdb"
    try:
        on_spark.use_engine("spark")
        pipelines = {}
        for ws in (on_spark, on_duckdb):
            for name, source in (("bench", inputs), ("warmup", warmup)):
                path = ws.root / "pipelines" / f"{name}.yaml"
                path.write_text(yaml.safe_dump(pipeline_10m.pipeline_spec(source), sort_keys=False))
                pipelines[(ws.engine_name, name)] = path
        log(f"[{label}] starting Spark and warming both sides up ...")
        run_queryforge(on_spark, pipelines[("spark", "warmup")])  # the JVM starts here, untimed
        run_pyspark(warmup, raw_db)
        run_queryforge(on_duckdb, pipelines[("duckdb", "warmup")])
        clocks: dict[str, list[Clock]] = {"queryforge": [], "pyspark": [], "duckdb": []}
        for i in range(repeat):
            order = ["queryforge", "pyspark", "duckdb"]
            for side in order[i % 3 :] + order[: i % 3]:
                if side == "queryforge":
                    spent = run_queryforge(on_spark, pipelines[("spark", "bench")])
                elif side == "pyspark":
                    spent = run_pyspark(inputs, raw_db)
                else:
                    spent = run_queryforge(on_duckdb, pipelines[("duckdb", "bench")])
                clocks[side].append(spent)
                log(f"[{label}] rep {i + 1}/{repeat} {side:<10} {spent.wall:.2f}s")
        check = pipeline_10m.compare(on_spark.state / "warehouse.duckdb", raw_db)
        same_as_duckdb = pipeline_10m.compare(
            on_spark.state / "warehouse.duckdb", on_duckdb.state / "warehouse.duckdb"
        )
    finally:
        on_spark.close()
        on_duckdb.close()

    wall = {side: median([c.wall for c in cs]) for side, cs in clocks.items()}
    ratio = wall["queryforge"] / wall["pyspark"]
    meets = ratio <= GOAL_RATIO
    identical = check["mismatched_rows"] == 0 and same_as_duckdb["mismatched_rows"] == 0
    line = (
        f"{label:<26} queryforge on spark {wall['queryforge']:.2f}s  pyspark by hand {wall['pyspark']:.2f}s  "
        f"ratio {ratio:.2f}x (goal <= {GOAL_RATIO:.2f}x: {'met' if meets else 'NOT met'})  "
        f"duckdb engine {wall['duckdb']:.2f}s (spark/duckdb {wall['queryforge'] / wall['duckdb']:.1f}x)  "
        f"results {'identical' if identical else 'DIFFER'}"
    )
    details = [
        f"{label}: {side} runs "
        + ", ".join(f"{c.wall:.2f}s" for c in cs)
        + " (wall; Spark's CPU is in its JVM)"
        for side, cs in clocks.items()
    ]
    details.append(
        f"{label}: rows {check['qf']['rows']:,} (pyspark {check['raw']['rows']:,}), differing rows: "
        f"vs pyspark {check['mismatched_rows']}, vs the duckdb engine {same_as_duckdb['mismatched_rows']}"
    )
    return Outcome(
        name=NAME,
        line=line,
        meets_goal=meets,
        details=details,
        figures={
            "rows": rows,
            "repeat": repeat,
            **{f"{side}_s": [c.wall for c in cs] for side, cs in clocks.items()},
            "ratio": ratio,
            "spark_over_duckdb": wall["queryforge"] / wall["duckdb"],
            "identical": identical,
        },
    )
