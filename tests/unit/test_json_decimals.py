"""`--json` keeps every digit of a DECIMAL: a float would round it (issue 17)."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import duckdb

from queryforge.cli import render
from tests.conftest import CliResult


def test_query_json_keeps_exact_decimals(demo: Path, qf: Callable[..., CliResult]) -> None:
    sql = (
        "SELECT CAST('55909065222.827692' AS DECIMAL(38,6)) AS big,"
        " CAST('-0.000001' AS DECIMAL(18,6)) AS tiny, CAST(NULL AS DECIMAL(10,2)) AS nothing, 'x' AS label"
    )
    assert qf("run", "pipelines/daily_sales.yaml", cwd=demo).code == 0  # a warehouse to query
    done = qf("query", sql, "--json", cwd=demo)
    assert done.code == 0, done.stderr
    rows = json.loads(done.stdout, parse_float=Decimal)
    expected = duckdb.sql(sql).fetchall()[0]  # the same SELECT in DuckDB, as Python Decimals
    assert rows == [{"big": expected[0], "tiny": expected[1], "nothing": None, "label": "x"}]
    assert "55909065222.827692" in done.stdout


def test_a_string_cannot_forge_a_number(capsys: object) -> None:
    tricky = "\x00decimal-0000000000000000:12"  # looks like the marker, but not this process's token
    render.print_json({"s": tricky, "d": Decimal("1.10")})
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert json.loads(out, parse_float=Decimal) == {"s": tricky, "d": Decimal("1.10")}
