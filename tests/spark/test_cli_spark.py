"""`queryforge run --engine spark` the way a user runs it: a new process, a real local Spark."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb

from tests.conftest import CliResult


def test_run_with_the_spark_engine_publishes_what_duckdb_publishes(
    demo: Path, tmp_path: Path, qf: Callable[..., CliResult]
) -> None:
    spark = qf("run", "pipelines/daily_sales.yaml", "--engine", "spark", "--json", cwd=demo, timeout=300)
    assert spark.code == 0, spark.stderr
    result = spark.json()
    assert result["status"] == "succeeded"
    with duckdb.connect(str(demo / ".queryforge" / "warehouse.duckdb"), read_only=True) as con:
        on_spark = con.execute("SELECT * FROM analytics.daily_sales ORDER BY ALL").fetchall()
    # An independent computation of the same table, straight from the CSV files in DuckDB.
    with duckdb.connect() as con:
        expected = con.execute(
            f"""
            WITH c AS (SELECT * FROM read_csv('{demo}/data/customers.csv')
                       QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY updated_at DESC) = 1),
                 o AS (SELECT * FROM read_csv('{demo}/data/orders.csv')
                       WHERE status = 'shipped' AND order_date >= DATE '2026-01-01')
            SELECT coalesce(c.country, 'unknown') AS country, o.order_date AS day, count(*) AS orders,
                   sum(o.amount) AS revenue
            FROM o LEFT JOIN c USING (customer_id) GROUP BY ALL ORDER BY ALL
            """
        ).fetchall()
    assert len(on_spark) == len(expected) > 100
    for got, want in zip(on_spark, expected, strict=True):
        assert got[:3] == want[:3]
        assert (got[3] is None and want[3] is None) or abs(got[3] - want[3]) < 1e-6


def test_a_step_spark_would_answer_differently_fails_validation_with_one_clear_paragraph(
    demo: Path, qf: Callable[..., CliResult]
) -> None:
    (demo / "pipelines" / "vowels.yaml").write_text(
        "name: vowels\nsteps:\n"
        "  - id: customers\n    extract: {path: data/customers.csv}\n"
        "  - id: masked\n    sql: SELECT regexp_replace(name, '[aeiou]', '*') AS name FROM customers\n"
        "  - id: out\n    load: {input: masked, table: masked}\n"
    )
    refused = qf("run", "pipelines/vowels.yaml", "--engine", "spark", cwd=demo, timeout=300)
    assert refused.code != 0
    assert "not supported on the spark engine" in refused.stderr
    assert "pipelines/vowels.yaml:6" in refused.stderr and "first match" in refused.stderr
    assert (
        not (demo / ".queryforge" / "warehouse.duckdb").exists()
        or "masked"
        not in duckdb.connect(str(demo / ".queryforge" / "warehouse.duckdb"), read_only=True)
        .execute("SELECT string_agg(table_name, ',') FROM duckdb_tables()")
        .fetchall()[0][0]
        or ""
    )
    assert qf("run", "pipelines/vowels.yaml", cwd=demo).code == 0  # the same file runs on DuckDB


def test_an_unknown_engine_is_one_clear_error(demo: Path, qf: Callable[..., CliResult]) -> None:
    wrong = qf("run", "pipelines/daily_sales.yaml", "--engine", "sprak", cwd=demo)
    assert wrong.code != 0
    assert "Unknown engine 'sprak'" in wrong.stderr and "spark" in wrong.stderr


def test_engine_auto_runs_a_large_input_on_spark(demo: Path, qf: Callable[..., CliResult]) -> None:
    routed = qf(
        "run",
        "pipelines/customers_clean.yaml",
        "--engine",
        "auto",
        "--json",
        cwd=demo,
        env={"QUERYFORGE_SPARK_ABOVE_BYTES": "1000"},  # the sample customers.csv is ~80 kB
        timeout=300,
    )
    assert routed.code == 0, routed.stderr
    run_id = routed.json()["run_id"]
    assert (demo / ".queryforge" / "runs" / run_id / "spark").is_dir()  # Spark's work area
    small = qf("run", "pipelines/customers_clean.yaml", "--engine", "auto", "--json", cwd=demo)
    assert small.code == 0, small.stderr
    assert not (demo / ".queryforge" / "runs" / small.json()["run_id"] / "spark").exists()
    # `runs show` says where each ran.
    assert "engine spark" in qf("runs", "show", run_id, cwd=demo).stdout
    assert "engine duckdb" in qf("runs", "show", small.json()["run_id"], cwd=demo).stdout
