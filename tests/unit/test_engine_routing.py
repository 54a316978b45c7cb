"""`engine: auto`: DuckDB unless the extracts read more than QUERYFORGE_SPARK_ABOVE_BYTES.

The decision is made while compiling, so it needs no JVM; a pipeline routed to Spark is vetted
for Spark (a step Spark would answer differently is refused) and one routed to DuckDB is not.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from queryforge.config import Settings
from queryforge.errors import ConfigError, SpecError
from queryforge.workspace import Workspace


def workspace(demo: Path, above: int) -> Workspace:
    ws = Workspace(demo, settings=Settings(engine="auto", spark_above_bytes=above))
    return ws


def input_bytes(demo: Path) -> int:
    return sum((demo / "data" / n).stat().st_size for n in ("orders.csv", "customers.csv"))


def test_small_inputs_run_on_duckdb_and_large_ones_on_spark(demo: Path) -> None:
    size = input_bytes(demo)
    with workspace(demo, above=size) as ws:
        plan = ws.validate("pipelines/daily_sales.yaml")
        assert (plan.engine, plan.input_bytes) == ("duckdb", size)
    with workspace(demo, above=size - 1) as ws:
        plan = ws.validate("pipelines/daily_sales.yaml")
        assert (plan.engine, plan.input_bytes) == ("spark", size)


def test_a_pipeline_routed_to_spark_is_vetted_for_spark_and_on_duckdb_it_is_not(demo: Path) -> None:
    (demo / "pipelines" / "masked.yaml").write_text(
        "name: masked\nsteps:\n"
        "  - id: customers\n    extract: {path: data/customers.csv}\n"
        "  - id: m\n    sql: SELECT regexp_replace(name, '[aeiou]', '*') AS name FROM customers\n"
        "  - id: out\n    load: {input: m, table: masked}\n"
    )
    with workspace(demo, above=10**12) as ws:
        assert ws.validate("pipelines/masked.yaml").engine == "duckdb"
    with workspace(demo, above=0) as ws, pytest.raises(SpecError, match="not supported on the spark engine"):
        ws.validate("pipelines/masked.yaml")


def test_an_explicit_engine_is_never_rerouted(demo: Path) -> None:
    with Workspace(demo, settings=Settings(engine="duckdb", spark_above_bytes=0)) as ws:
        plan = ws.validate("pipelines/daily_sales.yaml")
        assert plan.engine == "duckdb" and plan.input_bytes is None


def test_an_unknown_engine_name_is_refused_with_the_known_ones(demo: Path) -> None:
    with Workspace(demo) as ws, pytest.raises(ConfigError, match="Unknown engine 'sprk'") as caught:
        ws.use_engine("sprk")
    assert "spark" in caught.value.render()
