"""End-to-end through the real CLI: rules declared in queryforge.yaml, used in a check step and
under a load's `columns:`; counts against plain DuckDB SQL over the same CSV, and the publish
guarded (exit 1, production unchanged) or allowed (warn).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import duckdb

Qf = Callable[..., Any]

ORDERS = """\
order_id,status,amount,pct
1,placed,10,5
2,shipped,-1,150
3,bogus,0,
4,shipped,,50
5,placed,20.5,100
5,returned,-3,-0.5
"""
RULES = """
rules:
  positive:
    description: the value is above zero
    args: {column: column}
    holds: ":column > 0"
  between_pct:
    args: {column: column, low: value, high: value}
    holds: ":column BETWEEN :low AND :high"
"""
PIPELINE = """\
name: orders
steps:
  - id: orders
    extract: {path: data/orders.csv}
  - id: orders_ok
    check:
      input: orders
      severity: warn
      rules:
        - between_pct: {column: pct, low: 0, high: 100}
  - id: publish
    load:
      input: orders
      table: orders
      columns:
        order_id: {description: one row per order, checks: [not_null, {unique: {severity: warn}}]}
        status: {checks: [{accepted_values: [placed, shipped, completed, returned], severity: warn}]}
        amount: {checks: [{range: {min: 0}, severity: warn}, {positive: {severity: SEVERITY}}]}
"""


def workspace(qf: Qf, tmp_path: Path, severity: str) -> Path:
    assert qf("init", "ws", "--bare", cwd=tmp_path).code == 0
    ws = tmp_path / "ws"
    (ws / "queryforge.yaml").write_text((ws / "queryforge.yaml").read_text() + RULES)
    (ws / "data" / "orders.csv").write_text(ORDERS)
    (ws / "pipelines" / "orders.yaml").write_text(PIPELINE.replace("SEVERITY", severity))
    return ws


def count(ws: Path, where: str) -> int:
    with closing(duckdb.connect()) as con:
        found = con.sql(
            f"SELECT count(*) FROM read_csv('{ws / 'data' / 'orders.csv'}') WHERE {where}"
        ).fetchall()
    return int(found[0][0])


def tables(ws: Path) -> set[str]:
    if not (ws / ".queryforge" / "warehouse.duckdb").exists():
        return set()
    with closing(duckdb.connect(str(ws / ".queryforge" / "warehouse.duckdb"), read_only=True)) as con:
        rows = con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
        ).fetchall()
    return {r[0] for r in rows}


def published(ws: Path) -> list[tuple[Any, ...]]:
    with closing(duckdb.connect(str(ws / ".queryforge" / "warehouse.duckdb"), read_only=True)) as con:
        return sorted(con.execute("SELECT * FROM orders").fetchall(), key=repr)


def test_a_failing_custom_column_check_exits_1_and_publishes_nothing(qf: Qf, tmp_path: Path) -> None:
    ws = workspace(qf, tmp_path, "error")
    v = qf("validate", "orders", cwd=ws)
    assert v.code == 0, v.stderr

    r = qf("run", "orders", cwd=ws)
    assert r.code == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert "publish.columns.positive(amount)" in r.stdout + r.stderr
    assert "Nothing was published" in r.stderr

    j = qf("run", "orders", "--json", cwd=ws)
    assert j.code == 1
    data = j.json()
    assert data["error"]["class"] == "CHECK_FAILED"
    checks = {(c["step_id"], c["rule_name"]): c for c in data["checks"]}
    expected = {
        ("orders_ok", "between_pct(pct)"): count(ws, "pct IS NOT NULL AND NOT pct BETWEEN 0 AND 100"),
        ("publish.columns", "not_null(order_id)"): count(ws, "order_id IS NULL"),
        ("publish.columns", "accepted_values(status)"): count(
            ws, "status NOT IN ('placed', 'shipped', 'completed', 'returned')"
        ),
        ("publish.columns", "range(amount)"): count(ws, "amount < 0"),
        ("publish.columns", "positive(amount)"): count(ws, "amount <= 0"),
    }
    for key, violations in expected.items():
        assert checks[key]["violations"] == violations, key
    assert checks[("publish.columns", "unique(order_id)")]["violations"] == 1  # order 5 twice
    assert checks[("publish.columns", "positive(amount)")]["severity"] == "error"
    assert checks[("publish.columns", "range(amount)")]["severity"] == "warn"
    assert "orders" not in tables(ws)

    shown = qf("runs", "show", data["run_id"], cwd=ws)
    assert shown.code == 0, shown.stderr
    assert "publish.columns" in shown.stdout and "positive(amount)" in shown.stdout


def test_a_warn_custom_column_check_publishes(qf: Qf, tmp_path: Path) -> None:
    ws = workspace(qf, tmp_path, "warn")
    r = qf("run", "orders", "--json", cwd=ws)
    assert r.code == 0, r.stdout + r.stderr
    data = r.json()
    (positive,) = [c for c in data["checks"] if c["rule_name"] == "positive(amount)"]
    assert (positive["severity"], positive["passed"]) == ("warn", False)
    assert positive["violations"] == count(ws, "amount <= 0")
    with closing(duckdb.connect()) as con:
        rows = con.sql(f"SELECT * FROM read_csv('{ws / 'data' / 'orders.csv'}')").fetchall()
    assert published(ws) == sorted(rows, key=repr)


def test_a_bad_rule_in_queryforge_yaml_is_reported_with_its_line(qf: Qf, tmp_path: Path) -> None:
    ws = workspace(qf, tmp_path, "error")
    config = ws / "queryforge.yaml"
    config.write_text(config.read_text().replace('":column > 0"', '":column IN (SELECT 1 FROM orders)"'))
    line = next(i for i, t in enumerate(config.read_text().splitlines(), 1) if "SELECT 1 FROM orders" in t)
    r = qf("validate", "orders", cwd=ws)
    assert r.code == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    text = " ".join(r.stderr.split())
    assert "Custom rule 'positive' in queryforge.yaml has a predicate that is not allowed" in text
    assert f"queryforge.yaml:{line}" in text


def test_an_unknown_rule_suggests_the_custom_one(qf: Qf, tmp_path: Path) -> None:
    ws = workspace(qf, tmp_path, "error")
    path = ws / "pipelines" / "orders.yaml"
    path.write_text(path.read_text().replace("{positive: {severity", "{positiv: {severity"))
    r = qf("validate", "orders", cwd=ws)
    assert r.code == 2, r.stdout + r.stderr
    text = " ".join((r.stdout + r.stderr).split())
    assert "Unknown check rule 'positiv'" in text
    assert "did you mean 'positive'?" in text
