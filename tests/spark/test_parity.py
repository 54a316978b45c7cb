"""DuckDB / Spark parity: the golden corpus and the example pipelines give the same tables.

Each side runs in its own copy of the demo workspace; DuckDB (the canonical engine) is the
reference. Tables are compared by column names and types, and as multisets of rows (doubles to
12 significant digits: Spark and DuckDB sum in different orders).
"""

from __future__ import annotations

import math
import shutil
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from queryforge.engine.ops import Op
from queryforge.errors import SpecError
from queryforge.runs.executor import RunOutcome
from queryforge.workspace import Workspace
from tests.spark.corpus import BASE_STEPS, CASES, REFUSED, REFUSED_STEPS, pipeline, write_doubles

EXAMPLES = ("daily_sales", "customers_clean", "product_report")


def _value(v: Any) -> Any:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else float(f"{v:.12g}")
    if isinstance(v, Decimal):
        return v.normalize()
    if isinstance(v, list):
        return tuple(_value(x) for x in v)
    return v


def table(database: Path, name: str) -> tuple[list[tuple[str, str]], Counter[tuple[Any, ...]]]:
    """(column names and types, multiset of rows) of a warehouse table or a Parquet file."""
    with (
        duckdb.connect(str(database), read_only=True)
        if database.suffix == ".duckdb"
        else duckdb.connect() as con
    ):
        source = f"read_parquet('{database}')" if database.suffix == ".parquet" else name
        schema = [(r[0], r[1]) for r in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()]
        rows = Counter(tuple(_value(v) for v in r) for r in con.execute(f"SELECT * FROM {source}").fetchall())
    return schema, rows


def run_on(root: Path, engine: str, ref: str) -> RunOutcome:
    ws = Workspace(root)
    try:
        ws.use_engine(engine)
        return ws.run(ref)
    finally:
        ws.close()


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory, demo_template: Path) -> dict[str, Path]:
    """Two copies of the demo workspace with the corpus pipeline: one per engine, both run."""
    roots = {}
    for engine in ("duckdb", "spark"):
        root = tmp_path_factory.mktemp(engine) / "ws"
        shutil.copytree(demo_template, root)
        write_doubles(root / "data")
        (root / "pipelines" / "spark_corpus.yaml").write_text(
            yaml.safe_dump(pipeline(CASES), sort_keys=False)
        )
        roots[engine] = root
    return roots


@pytest.fixture(scope="module")
def corpus(both: dict[str, Path]) -> dict[str, RunOutcome]:
    return {engine: run_on(root, engine, "pipelines/spark_corpus.yaml") for engine, root in both.items()}


def test_the_corpus_runs_and_publishes_on_both_engines(corpus: dict[str, RunOutcome]) -> None:
    for engine, outcome in corpus.items():
        assert outcome.status == "succeeded", (engine, outcome.error and outcome.error.render())
        assert {t.table for t in outcome.published} == {f"c_{case}" for case in CASES}


def test_the_corpus_covers_every_op_and_at_least_sixty_transforms() -> None:
    kinds = {kind for steps in CASES.values() for step in steps for kind in step if kind != "id"}
    assert set(Op.registry) <= kinds, f"ops without a case: {set(Op.registry) - kinds}"
    assert len(CASES) >= 60


@pytest.mark.parametrize("case", sorted(CASES))
def test_spark_gives_duckdbs_table(case: str, both: dict[str, Path], corpus: dict[str, RunOutcome]) -> None:
    assert all(o.status == "succeeded" for o in corpus.values())
    want_schema, want_rows = table(both["duckdb"] / ".queryforge" / "warehouse.duckdb", f"c_{case}")
    got_schema, got_rows = table(both["spark"] / ".queryforge" / "warehouse.duckdb", f"c_{case}")
    assert got_schema == want_schema
    assert sum(want_rows.values()) > 0, "a case must produce rows to compare"
    missing, extra = want_rows - got_rows, got_rows - want_rows
    assert not missing and not extra, f"DuckDB only: {list(missing)[:3]}; Spark only: {list(extra)[:3]}"


@pytest.mark.parametrize("case", sorted(REFUSED) + sorted(REFUSED_STEPS))
def test_what_spark_would_answer_differently_is_refused_at_validation(case: str, demo: Path) -> None:
    step, reason = ({"sql": REFUSED[case][0]}, REFUSED[case][1]) if case in REFUSED else REFUSED_STEPS[case]
    spec = {"name": "refused", "steps": [*BASE_STEPS[:3], {"id": "x", **step}]}
    spec["steps"].append({"id": "out", "load": {"input": "x", "table": "refused_out"}})
    (demo / "pipelines" / "refused.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    with Workspace(demo) as ws:
        ws.validate("pipelines/refused.yaml")  # fine on DuckDB
        ws.use_engine("spark")
        with pytest.raises(SpecError) as caught:
            ws.validate("pipelines/refused.yaml")
    message = caught.value.render()
    assert "is not supported on the spark engine" in message
    assert reason.lower() in message.lower()
    assert "refused.yaml:" in message and "step 'x'" in message  # where: the file and line
    assert "--engine duckdb" in message  # the hint


@pytest.mark.parametrize("example", EXAMPLES)
def test_the_example_pipelines_give_the_same_tables_and_files(
    example: str, tmp_path: Path, demo_template: Path
) -> None:
    roots = {}
    for engine in ("duckdb", "spark"):
        roots[engine] = tmp_path / engine
        shutil.copytree(demo_template, roots[engine])
        outcome = run_on(roots[engine], engine, f"pipelines/{example}.yaml")
        assert outcome.status == "succeeded", (engine, outcome.error and outcome.error.render())
    warehouse = ".queryforge/warehouse.duckdb"
    with duckdb.connect(str(roots["duckdb"] / warehouse), read_only=True) as con:
        found = con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall()
    tables = [f"{s}.{t}" for s, t in found if not s.startswith("_qf")]  # not the publish ledger
    assert tables
    for name in tables:
        assert table(roots["spark"] / warehouse, name) == table(roots["duckdb"] / warehouse, name), name
    for produced in (
        sorted((roots["duckdb"] / "out").glob("*.parquet")) if (roots["duckdb"] / "out").exists() else []
    ):
        twin = roots["spark"] / "out" / produced.name
        assert table(twin, "") == table(produced, ""), produced.name
