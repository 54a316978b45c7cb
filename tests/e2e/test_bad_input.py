"""End-to-end: user mistakes end in one clear `Error:` paragraph, exit code 2, and no harm done.

Each test first publishes a good table, then runs a broken pipeline that targets the same table,
and checks the error (what, where, hint) and that production is exactly as it was.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

Qf = Callable[..., Any]
TARGET = "target_t"

GOOD = f"""
name: good
steps:
  - id: products
    extract: {{path: data/products.csv}}
  - id: load
    load: {{input: products, table: {TARGET}, mode: replace}}
"""


# ---------------------------------------------------------------- helpers


def warehouse(ws: Path) -> Path:
    return ws / ".queryforge" / "warehouse.duckdb"


def warehouse_state(ws: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table in the warehouse (staging included) with all its rows, sorted."""
    with closing(duckdb.connect(str(warehouse(ws)), read_only=True)) as con:
        names = con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables ORDER BY 1, 2"
        ).fetchall()
        return {
            f"{s}.{n}": sorted(con.sql(f'SELECT * FROM "{s}"."{n}"').fetchall(), key=repr) for s, n in names
        }


def write_pipeline(ws: Path, name: str, text: str) -> str:
    """Write pipelines/<name>.yaml and return its path as the CLI shows it (relative to ws)."""
    path = ws / "pipelines" / f"{name}.yaml"
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return f"pipelines/{name}.yaml"


def line_of(ws: Path, shown: str, needle: str, occurrence: int = 1) -> int:
    """1-based line number of the n-th line of a pipeline file that contains needle."""
    hits = [i for i, line in enumerate((ws / shown).read_text().splitlines(), 1) if needle in line]
    return hits[occurrence - 1]


def error_paragraph(r: Any) -> str:
    """Assert the shape every user error has, and return its one paragraph."""
    assert r.code == 2, (r.code, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert "Traceback" not in r.stdout
    text = r.stderr.strip()
    assert text.startswith("Error:"), r.stderr
    assert sum(line.startswith("Error:") for line in text.splitlines()) == 1, r.stderr
    lines = text.splitlines()
    # One paragraph; a failed run may add one line pointing at `runs show`.
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("Run ")), r.stderr
    return lines[0]


@pytest.fixture
def ws(qf: Qf, demo: Path) -> Path:
    """The demo workspace with a good table already published to production."""
    write_pipeline(demo, "good", GOOD)
    r = qf("run", "good", cwd=demo)
    assert r.code == 0, r.stderr
    return demo


@pytest.fixture
def untouched(ws: Path) -> Any:
    """Production as it was before the bad run; call it afterwards to compare."""
    before = warehouse_state(ws)
    assert len(before[f"main.{TARGET}"]) == 100

    def check() -> None:
        assert warehouse_state(ws) == before

    return check


def run_bad(qf: Qf, ws: Path, name: str, text: str, *extra: str) -> tuple[str, str]:
    shown = write_pipeline(ws, name, text)
    return shown, error_paragraph(qf("run", shown, *extra, cwd=ws))


# ---------------------------------------------------------------- spec errors


def test_malformed_yaml_names_the_line(qf: Qf, ws: Path, untouched: Any) -> None:
    text = f"""
    name: bad_yaml
    steps:
      - id: products
        extract: {{path: data/products.csv}}
      - id: load
         load: {{input: products, table: {TARGET}}}
    """
    shown, para = run_bad(qf, ws, "bad_yaml", text)
    bad_line = line_of(ws, shown, "   load:")
    assert bad_line == 6
    assert f"{shown}:{bad_line}" in para
    assert "YAML" in para
    assert "indentation" in para
    untouched()


def test_unknown_step_kind_suggests_the_nearest(qf: Qf, ws: Path, untouched: Any) -> None:
    text = f"""
    name: bad_kind
    steps:
      - id: products
        extract: {{path: data/products.csv}}
      - id: cheap
        filtr: {{input: products, where: "price < 10"}}
      - id: load
        load: {{input: cheap, table: {TARGET}}}
    """
    shown, para = run_bad(qf, ws, "bad_kind", text)
    assert "filtr" in para
    assert f"{shown}:{line_of(ws, shown, 'filtr:')}" in para
    assert "did you mean 'filter'" in para
    untouched()


def test_missing_step_reference_suggests_the_nearest_id(qf: Qf, ws: Path, untouched: Any) -> None:
    text = f"""
    name: bad_ref
    steps:
      - id: products
        extract: {{path: data/products.csv}}
      - id: cheap
        filter: {{input: prodcts, where: "price < 10"}}
      - id: load
        load: {{input: cheap, table: {TARGET}}}
    """
    shown, para = run_bad(qf, ws, "bad_ref", text)
    assert "prodcts" in para
    assert "'cheap'" in para
    assert f"{shown}:{line_of(ws, shown, 'prodcts')}" in para
    assert "did you mean 'products'" in para
    untouched()


def test_cycle_names_its_steps(qf: Qf, ws: Path, untouched: Any) -> None:
    text = f"""
    name: bad_cycle
    steps:
      - id: products
        extract: {{path: data/products.csv}}
      - id: a
        filter: {{input: c, where: "price > 1"}}
      - id: b
        filter: {{input: a, where: "price > 2"}}
      - id: c
        union: {{inputs: [b, products]}}
      - id: load
        load: {{input: c, table: {TARGET}}}
    """
    shown, para = run_bad(qf, ws, "bad_cycle", text)
    assert "cycle" in para
    for step in ("a", "b", "c"):
        assert f"{step} -> " in para or f" -> {step}" in para
    assert "products ->" not in para
    assert shown in para
    untouched()


def test_missing_file_suggests_the_nearest(qf: Qf, ws: Path, untouched: Any) -> None:
    text = f"""
    name: bad_file
    steps:
      - id: orders
        extract: {{path: data/ordrs.csv}}
      - id: load
        load: {{input: orders, table: {TARGET}}}
    """
    shown, para = run_bad(qf, ws, "bad_file", text)
    assert "data/ordrs.csv" in para
    assert "'orders'" in para
    assert f"{shown}:{line_of(ws, shown, 'ordrs')}" in para
    assert "did you mean" in para
    assert "orders.csv" in para.split("did you mean", 1)[1]
    untouched()


@pytest.mark.parametrize(
    "body",
    [
        'filter: {input: orders, where: "amout > 100"}',
        "select: {input: orders, columns: [order_id, amout]}",
        "aggregate: {input: orders, group_by: [status], measures: {total: sum(amout)}}",
    ],
    ids=["filter", "select", "aggregate"],
)
def test_misspelled_column_in_an_op_suggests_the_nearest(qf: Qf, ws: Path, untouched: Any, body: str) -> None:
    text = f"""
    name: bad_column
    steps:
      - id: orders
        extract: {{path: data/orders.csv}}
      - id: picked
        {body}
      - id: load
        load: {{input: picked, table: {TARGET}}}
    """
    shown, para = run_bad(qf, ws, "bad_column", text)
    assert "'amout'" in para
    assert "'picked'" in para
    assert f"{shown}:{line_of(ws, shown, 'amout')}" in para
    assert "did you mean 'amount'" in para
    untouched()


SQL_TYPO = f"""
name: bad_sql_column
steps:
  - id: orders
    extract: {{path: data/orders.csv}}
  - id: totals
    sql: |
      SELECT status, sum(amout) AS total
      FROM orders
      GROUP BY status
  - id: load
    load: {{input: totals, table: {TARGET}}}
"""


def test_misspelled_column_in_sql_names_column_and_step(qf: Qf, ws: Path, untouched: Any) -> None:
    shown, para = run_bad(qf, ws, "bad_sql_column", SQL_TYPO)
    assert "amout" in para
    assert "'totals'" in para
    assert f"{shown}:{line_of(ws, shown, 'sql:')}" in para
    untouched()


def test_misspelled_column_in_sql_suggests_the_nearest(qf: Qf, ws: Path, untouched: Any) -> None:
    _, para = run_bad(qf, ws, "bad_sql_column", SQL_TYPO)
    assert "Hint:" in para
    assert "amount" in para.split("Hint:", 1)[1]
    untouched()


@pytest.mark.parametrize(
    ("sql", "mentions"),
    [
        ("DELETE FROM orders", "DELETE"),
        (f"DROP TABLE {TARGET}", "DROP"),
        (f"SELECT * FROM orders; DROP TABLE {TARGET}", "2 statements"),
    ],
    ids=["delete", "drop", "multi-statement"],
)
def test_sql_that_is_not_one_select_is_refused(
    qf: Qf, ws: Path, untouched: Any, sql: str, mentions: str
) -> None:
    text = f"""
    name: bad_sql
    steps:
      - id: orders
        extract: {{path: data/orders.csv}}
      - id: evil
        sql: "{sql}"
      - id: load
        load: {{input: evil, table: {TARGET}}}
    """
    shown, para = run_bad(qf, ws, "bad_sql", text)
    assert "'evil'" in para
    assert mentions in para
    assert "SELECT" in para
    assert f"{shown}:{line_of(ws, shown, 'sql:')}" in para
    untouched()
    # Validation alone refuses it the same way.
    assert error_paragraph(qf("validate", shown, cwd=ws)) == para


CAST = f"""
name: bad_cast
steps:
  - id: late
    extract: {{path: data/orders_late.csv}}
  - id: typed
    cast: {{input: late, columns: {{order_date: DATE}}}}
  - id: load
    load: {{input: typed, table: {TARGET}, mode: replace}}
"""


def test_cast_error_at_run_time_exits_2_and_publishes_nothing(qf: Qf, ws: Path, untouched: Any) -> None:
    shown = write_pipeline(ws, "bad_cast", CAST)
    # The bad value is in the data, not in the spec: the pipeline itself is valid.
    assert qf("validate", shown, cwd=ws).code == 0
    r = qf("run", shown, cwd=ws)
    para = error_paragraph(r)
    assert "production is unchanged" in r.stderr
    untouched()
    failed = qf("runs", "list", "--status", "failed", "--json", cwd=ws).json()
    assert [(x["pipeline_name"], x["error_class"]) for x in failed] == [("bad_cast", "VALIDATION_FAILED")]
    assert "Conversion" in para or "convert" in para.lower()
    # Named after the user's cast step, with its place in the file -- not an internal name.
    assert "'typed'" in para
    assert "'read'" not in para
    assert f"{shown}:{line_of(ws, shown, 'cast:')}" in para


def test_cast_error_at_run_time_names_the_column_and_bad_value(qf: Qf, ws: Path, untouched: Any) -> None:
    shown = write_pipeline(ws, "bad_cast", CAST)
    para = error_paragraph(qf("run", shown, cwd=ws))
    assert "order_date" in para
    assert "2026-02-30" in para
    untouched()


# ---------------------------------------------------------------- connections and loads


def test_load_into_a_read_only_connection_is_refused(qf: Qf, ws: Path, untouched: Any) -> None:
    config_path = ws / "queryforge.yaml"
    config = yaml.safe_load(config_path.read_text())
    config["connections"]["ro"] = {"url": "duckdb:ro.duckdb"}
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    text = f"""
    name: bad_ro
    steps:
      - id: products
        extract: {{path: data/products.csv}}
      - id: load
        load: {{input: products, connection: ro, table: {TARGET}}}
    """
    shown, para = run_bad(qf, ws, "bad_ro", text)
    assert "read-only" in para
    assert "'ro'" in para
    assert f"{shown}:{line_of(ws, shown, 'connection: ro')}" in para
    assert "writable: true" in para
    untouched()
    assert not (ws / "ro.duckdb").exists()


def test_unknown_connection_suggests_the_nearest(qf: Qf, ws: Path, untouched: Any) -> None:
    text = f"""
    name: bad_conn
    steps:
      - id: products
        extract: {{path: data/products.csv}}
      - id: load
        load: {{input: products, connection: warehous, table: {TARGET}}}
    """
    shown, para = run_bad(qf, ws, "bad_conn", text)
    assert "'warehous'" in para
    assert f"{shown}:{line_of(ws, shown, 'warehous')}" in para
    assert "did you mean 'warehouse'" in para
    untouched()


def test_duplicate_step_ids(qf: Qf, ws: Path, untouched: Any) -> None:
    text = f"""
    name: bad_dup
    steps:
      - id: products
        extract: {{path: data/products.csv}}
      - id: products
        filter: {{input: products, where: "price > 1"}}
      - id: load
        load: {{input: products, table: {TARGET}}}
    """
    shown, para = run_bad(qf, ws, "bad_dup", text)
    assert "Duplicate" in para or "duplicate" in para
    assert "'products'" in para
    assert f"{shown}:{line_of(ws, shown, 'id: products', occurrence=2)}" in para
    untouched()


def test_merge_load_without_keys(qf: Qf, ws: Path, untouched: Any) -> None:
    text = f"""
    name: bad_merge
    steps:
      - id: products
        extract: {{path: data/products.csv}}
      - id: load
        load: {{input: products, table: {TARGET}, mode: merge}}
    """
    shown, para = run_bad(qf, ws, "bad_merge", text)
    assert "merge" in para
    assert "keys" in para
    assert "'load'" in para
    assert f"{shown}:{line_of(ws, shown, 'mode: merge')}" in para
    assert "Hint:" in para
    untouched()


# ---------------------------------------------------------------- --json


def test_json_error_object(qf: Qf, ws: Path, untouched: Any) -> None:
    shown = write_pipeline(
        ws,
        "bad_json",
        f"""
        name: bad_json
        steps:
          - id: orders
            extract: {{path: data/orders.csv}}
          - id: big
            filter: {{input: orders, where: "amout > 100"}}
          - id: load
            load: {{input: big, table: {TARGET}}}
        """,
    )
    r = qf("run", shown, "--json", cwd=ws)
    assert r.code == 2
    assert "Traceback" not in r.stdout + r.stderr
    error = r.json()["error"]
    assert "'amout'" in error["message"]
    assert error["where"].startswith(f"{shown}:{line_of(ws, shown, 'amout')}")
    assert "'big'" in error["where"]
    assert error["hint"] == "did you mean 'amount'?"
    assert error["exit_code"] == 2
    untouched()
