"""`pivot` with any aggregate expression, column-name templates and a fill value, run for real.

Each case is a pivot step in one pipeline run through `Workspace.run`, published into the default
warehouse and compared with the same pivot computed in plain Python over the CSV's rows: the
groups, the cells (an aggregate over the rows of one group and one value of `on`), the fill and
the column names. The columns the validator infers from the compiled query must be the published
ones. Error cases check that what cannot work is refused at validation with where and hint; the
last tests check that reading a system catalog points to `queryforge catalog`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from queryforge.engine.ops import ANONYMOUS_AGGREGATES
from queryforge.engine.spark_sql import NotOnSpark, to_spark
from queryforge.errors import QueryBlocked, SpecError
from queryforge.runs.executor import RunOutcome
from queryforge.runs.plan import ExecutionPlan
from queryforge.sql.policy import function_names
from queryforge.workspace import Workspace

SALES = """\
region,product,channel,amount,qty
north,apple,web,10.5,1
north,apple,web,4.0,2
north,apple,shop,,3
north,pear,shop,7.25,1
north,pear,,2.0,5
south,apple,phone,3.0,4
south,apple,web,,1
south,pear,web,1.5,2
south,pear,shop,6.0,1
east,apple,shop,,2
"""

Row = dict[str, Any]
Cell = Callable[[list[Row]], Any]


def sales_rows() -> list[Row]:
    """The CSV as DuckDB reads it: empty fields are NULL, amount a DOUBLE, qty an integer."""
    out: list[Row] = []
    for raw in csv.DictReader(io.StringIO(SALES)):
        row: Row = {k: (v if v != "" else None) for k, v in raw.items()}
        row["amount"] = float(row["amount"]) if row["amount"] is not None else None
        row["qty"] = int(row["qty"])
        out.append(row)
    return out


def nonnull(rows: list[Row], column: str) -> list[Any]:
    return [r[column] for r in rows if r[column] is not None]


def sum_or_none(values: list[Any]) -> Any:
    return sum(values) if values else None


def python_pivot(
    group_by: list[str], values: list[str], cell: Cell, names: Callable[[str], str] = str
) -> list[Row]:
    """The pivot computed independently: one row per group present in the input, one cell per
    value, each `cell(rows of the group whose channel is the value)`."""
    rows = sales_rows()
    groups = sorted({tuple(r[c] for c in group_by) for r in rows})
    out = []
    for key in groups:
        members = [r for r in rows if tuple(r[c] for c in group_by) == key]
        result: Row = dict(zip(group_by, key, strict=True))
        for value in values:
            result[names(value)] = cell([r for r in members if r["channel"] == value])
        out.append(result)
    return out


def channels() -> list[str]:
    """The values DuckDB's own PIVOT finds: the distinct non-NULL channels."""
    return sorted({r["channel"] for r in sales_rows() if r["channel"] is not None})


def ratio(rows: list[Row]) -> Any:
    total = sum_or_none(nonnull(rows, "amount"))
    return None if total is None or not rows else total / len(rows)


def window_share(group_by: list[str], values: list[str]) -> list[Row]:
    """sum(qty) / sum(sum(qty)) OVER (): each group's share of the value's total over all groups."""
    sums = python_pivot(group_by, values, lambda rows: sum_or_none(nonnull(rows, "qty")))
    totals = {v: sum(r[v] for r in sums if r[v] is not None) for v in values}
    return [{**r, **{v: None if r[v] is None else r[v] / totals[v] for v in values}} for r in sums]


# case -> (the pivot body, the expected rows)
CASES: dict[str, tuple[dict[str, Any], list[Row]]] = {
    "coalesce_sum": (
        {
            "using": "coalesce(sum(amount), 0)",
            "group_by": ["region"],
            "values": ["web", "shop", "phone", "mail"],
        },
        python_pivot(
            ["region"], ["web", "shop", "phone", "mail"], lambda rows: sum(nonnull(rows, "amount")) or 0
        ),
    ),
    "ratio_two_group_columns": (
        {
            "using": "sum(amount) / count(*)",
            "group_by": ["region", "product"],
            "values": ["web", "shop", "phone"],
        },
        python_pivot(["region", "product"], ["web", "shop", "phone"], ratio),
    ),
    "name_template": (
        {"using": "count(*)", "group_by": ["region"], "values": ["web", "shop"], "name": "n_{value}"},
        python_pivot(["region"], ["web", "shop"], len, names=lambda v: f"n_{v}"),
    ),
    "fill": (
        {
            "using": "sum(qty)",
            "group_by": ["region", "product"],
            "values": ["web", "shop", "phone", "mail"],
            "fill": 0,
        },
        python_pivot(
            ["region", "product"],
            ["web", "shop", "phone", "mail"],
            lambda rows: sum_or_none(nonnull(rows, "qty")) or 0,
        ),
    ),
    "no_fill": (
        {"using": "sum(qty)", "group_by": ["region", "product"], "values": ["web", "shop", "phone", "mail"]},
        python_pivot(
            ["region", "product"],
            ["web", "shop", "phone", "mail"],
            lambda rows: sum_or_none(nonnull(rows, "qty")),
        ),
    ),
    "fill_text_and_template": (
        {
            "using": "max(product)",
            "group_by": ["region"],
            "values": ["web", "phone"],
            "fill": "none",
            "name": "{value}_top",
        },
        python_pivot(
            ["region"],
            ["web", "phone"],
            lambda rows: max(nonnull(rows, "product"), default="none"),
            names=lambda v: f"{v}_top",
        ),
    ),
    "filter_of_its_own": (
        {
            "using": "sum(amount) FILTER (WHERE qty > 1 OR qty < 0)",
            "group_by": ["region"],
            "values": ["web", "shop"],
        },
        python_pivot(
            ["region"],
            ["web", "shop"],
            lambda rows: sum_or_none(nonnull([r for r in rows if r["qty"] > 1], "amount")),
        ),
    ),
    "window_over_aggregates": (
        {"using": "sum(qty) / sum(sum(qty)) OVER ()", "group_by": ["region"], "values": ["web", "shop"]},
        window_share(["region"], ["web", "shop"]),
    ),
    "anonymous_aggregate": (
        {"using": "product(qty) + count_star()", "group_by": ["region"], "values": ["web", "shop"]},
        python_pivot(
            ["region"],
            ["web", "shop"],
            lambda rows: math.prod(nonnull(rows, "qty")) + len(rows) if rows else None,
        ),
    ),
    "dynamic_coalesce_template": (
        {"using": "coalesce(sum(amount), 0)", "group_by": ["region"], "name": "{value}_amount"},
        python_pivot(
            ["region"],
            channels(),
            lambda rows: sum(nonnull(rows, "amount")) or 0,
            names=lambda v: f"{v}_amount",
        ),
    ),
    "dynamic_fill": (
        {"using": "sum(qty)", "group_by": ["region", "product"], "fill": 0},
        python_pivot(["region", "product"], channels(), lambda rows: sum_or_none(nonnull(rows, "qty")) or 0),
    ),
}


def write_pipeline(ws: Workspace, name: str, steps: list[dict[str, Any]]) -> str:
    path = ws.root / "pipelines" / f"{name}.yaml"
    extract = {"id": "sales", "extract": {"path": "data/sales.csv"}}
    path.write_text(json.dumps({"name": name, "steps": [extract, *steps]}, indent=1))  # JSON is YAML
    return str(path)


def pivot_step(case: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"p_{case}", "pivot": {"input": "sales", "on": "channel", **body}}


def published(ws: Workspace, table: str) -> tuple[list[str], list[str], list[Row]]:
    with duckdb.connect(str(ws.root / ".queryforge" / "warehouse.duckdb"), read_only=True) as con:
        rel = con.sql(f'SELECT * FROM "{table}"')
        names = list(rel.columns)
        return names, [str(t) for t in rel.types], [dict(zip(names, r, strict=True)) for r in rel.fetchall()]


def normal(rows: list[Row]) -> list[list[tuple[str, Any]]]:
    """Rows as sorted (column, value) lists, numbers as rounded floats: an order-free comparison."""

    def value(v: Any) -> Any:
        return round(float(v), 9) if isinstance(v, int | float) and not isinstance(v, bool) else v

    return sorted((sorted((k, value(v)) for k, v in r.items()) for r in rows), key=repr)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, RunOutcome, ExecutionPlan]]:
    """One workspace and one run of every case, each published as `result_<case>`."""
    ws = Workspace.init(tmp_path_factory.mktemp("pivot") / "ws", bare=True)
    (ws.root / "data" / "sales.csv").write_text(SALES)
    steps = [pivot_step(case, body) for case, (body, _) in CASES.items()]
    loads = [{"id": f"load_{c}", "load": {"input": f"p_{c}", "table": f"result_{c}"}} for c in CASES]
    path = write_pipeline(ws, "pivots", [*steps, *loads])
    plan = ws.validate(path)
    outcome = ws.run(path)
    yield ws, outcome, plan
    ws.close()


@pytest.mark.parametrize("case", list(CASES))
def test_pivot_matches_a_python_pivot(shared: tuple[Workspace, RunOutcome, ExecutionPlan], case: str) -> None:
    ws, outcome, _ = shared
    assert outcome.status == "succeeded", outcome.error
    names, _, rows = published(ws, f"result_{case}")
    want = CASES[case][1]
    assert want, "the expected pivot has rows"
    assert sorted(names) == sorted(want[0]), names
    assert normal(rows) == normal(want)


@pytest.mark.parametrize("case", list(CASES))
def test_validated_columns_are_the_published_ones(
    shared: tuple[Workspace, RunOutcome, ExecutionPlan], case: str
) -> None:
    ws, outcome, plan = shared
    assert outcome.status == "succeeded", outcome.error
    names, types, _ = published(ws, f"result_{case}")
    # Data moves as Arrow, which has no 128-bit integer: DuckDB hands a HUGEINT (a sum of integers)
    # over as DECIMAL(38,0), the same for every step kind.
    validated = [(n, "DECIMAL(38,0)" if t == "HUGEINT" else t) for n, t in plan.schemas[f"p_{case}"]]
    assert validated == list(zip(names, types, strict=True))


def test_listed_values_give_the_columns_in_order_named_by_the_template(
    shared: tuple[Workspace, RunOutcome, ExecutionPlan],
) -> None:
    names, types, _ = published(shared[0], "result_name_template")
    assert names == ["region", "n_web", "n_shop"]
    assert types == ["VARCHAR", "BIGINT", "BIGINT"]
    names, types, _ = published(shared[0], "result_fill_text_and_template")
    assert (names, types) == (["region", "web_top", "phone_top"], ["VARCHAR"] * 3)


def test_fill_keeps_the_aggregate_type_and_changes_only_empty_cells(
    shared: tuple[Workspace, RunOutcome, ExecutionPlan],
) -> None:
    filled_names, filled_types, filled = published(shared[0], "result_fill")
    names, types, plain = published(shared[0], "result_no_fill")
    assert (filled_names, filled_types) == (names, types)
    key = ("region", "product")
    by_key = {tuple(r[k] for k in key): r for r in plain}
    changed = 0
    for row in filled:
        other = by_key[tuple(row[k] for k in key)]
        for name in ("web", "shop", "phone", "mail"):
            if other[name] is None:
                assert row[name] == 0
                changed += 1
            else:
                assert row[name] == other[name]
    assert changed >= 5  # `mail` alone is empty in every group


def test_the_compiled_pivot_translates_to_spark_with_a_filter_per_aggregate(
    shared: tuple[Workspace, RunOutcome, ExecutionPlan],
) -> None:
    """Spark takes FILTER on aggregates; DuckDB's PIVOT of values found in the data is refused."""
    plan = shared[2]
    stages = {s.step_id: s for s in plan.stages}
    query = stages["p_ratio_two_group_columns"].query  # type: ignore[attr-defined]
    spark = to_spark(query, plan.schemas)
    calls = re.findall(
        r"\b(?:SUM|COUNT)\((?:[^()]|\([^()]*\))*\)( ?FILTER\(WHERE `sales`.`channel` = '\w+'\))?", spark
    )
    assert len(calls) >= 6 and all(calls), spark  # every aggregate filtered by its value
    for value in ("web", "shop", "phone"):
        assert f"= '{value}')" in spark
    with pytest.raises(NotOnSpark, match="list the pivot's `values:`"):
        to_spark(stages["p_dynamic_fill"].query, plan.schemas)  # type: ignore[attr-defined]


def test_anonymous_aggregates_are_the_allow_listed_duckdb_aggregates() -> None:
    """A DuckDB aggregate sqlglot does not know must still get its FILTER: the list in ops.py is
    every allow-listed function DuckDB calls an aggregate that sqlglot reads as a plain call."""
    import sqlglot
    from sqlglot import exp

    with duckdb.connect() as con:
        aggregates = {
            name.lower()
            for (name,) in con.sql(
                "SELECT DISTINCT function_name FROM duckdb_functions() WHERE function_type = 'aggregate'"
            ).fetchall()
        }
    anonymous = set()
    for name in function_names("duckdb") & aggregates:
        try:
            parsed = sqlglot.parse_one(f"{name}(x)", read="duckdb")
        except sqlglot.errors.ParseError:
            continue  # takes more arguments: sqlglot knows it
        if isinstance(parsed, exp.Anonymous):
            anonymous.add(name)
    assert anonymous == set(ANONYMOUS_AGGREGATES)


# ---------------------------------------------------------------- refused at validation

ERRORS: dict[str, tuple[dict[str, Any], str, str, str]] = {
    # case: (pivot body, message part, where part, hint part)
    "no_aggregate": (
        {"using": "amount * 2", "values": ["web"]},
        "`using` needs an aggregate",
        "using",
        "sum(amount)",
    ),
    "no_aggregate_without_values": (
        {"using": "amount", "group_by": ["region"]},
        "`using` needs an aggregate",
        "using",
        "count(*)",
    ),
    "window_is_not_an_aggregate": (
        {"using": "lag(amount) OVER (ORDER BY qty)", "values": ["web"]},
        "`using` needs an aggregate",
        "using",
        "sum(amount)",
    ),
    "nested_aggregates": (
        {"using": "sum(max(amount))", "values": ["web"]},
        "nests an aggregate",
        "using",
        "OVER",
    ),
    "template_without_value": (
        {"using": "sum(amount)", "values": ["web"], "name": "amount"},
        "has no {value}",
        "name",
        "{value}",
    ),
    "template_with_other_braces": (
        {"using": "sum(amount)", "values": ["web"], "name": "{value}_{region}"},
        "braces other than {value}",
        "name",
        "{value}",
    ),
    "template_gives_duplicates": (
        {"using": "sum(amount)", "values": ["web", "WEB"], "name": "x_{value}"},
        "column name 'x_WEB'",
        "name",
        "template",
    ),
    "value_clashes_with_group_by": (
        {"using": "sum(amount)", "values": ["region"], "group_by": ["region"]},
        "the group_by column 'region'",
        "values",
        "template",
    ),
    "dynamic_with_two_aggregates": (
        {"using": "sum(amount) / count(*)", "group_by": ["region"]},
        "exactly one aggregate",
        "using",
        "values:",
    ),
    "dynamic_with_a_window": (
        {"using": "sum(qty) / sum(sum(qty)) OVER ()", "group_by": ["region"]},
        "window function",
        "using",
        "values:",
    ),
    "dynamic_template_duckdb_cannot_name": (
        {"using": "sum(amount)", "group_by": ["region"], "name": "amount_{value}"},
        "'{value}_<suffix>'",
        "name",
        "values:",
    ),
}


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    ws = Workspace.init(tmp_path_factory.mktemp("pivot_errors") / "ws", bare=True)
    (ws.root / "data" / "sales.csv").write_text(SALES)
    yield ws
    ws.close()


@pytest.mark.parametrize("case", list(ERRORS))
def test_what_cannot_work_is_refused_with_where_and_hint(bare: Workspace, case: str) -> None:
    body, message, where, hint = ERRORS[case]
    step = {"id": "bad", "pivot": {"input": "sales", "on": "channel", **body}}
    path = write_pipeline(
        bare, f"bad_{case}", [step, {"id": "out", "load": {"input": "bad", "table": "never"}}]
    )
    with pytest.raises(SpecError) as info:
        bare.validate(path)
    err = info.value
    assert message in err.message, err.message
    assert "'bad'" in err.message
    # `where` names the file, the line of the field at fault and the step
    lines = Path(path).read_text().splitlines()
    start = next(i for i, text in enumerate(lines) if '"id": "bad"' in text)
    line = next(i for i, text in enumerate(lines[start:], start + 1) if f'"{where}":' in text)
    assert err.where is not None and err.where.endswith(f".yaml:{line}, step 'bad'"), (err.where, where)
    assert err.hint is not None and hint in err.hint, err.hint
    runs = len(bare.list_runs(limit=1000))
    with pytest.raises(SpecError):
        bare.run(path)
    assert len(bare.list_runs(limit=1000)) == runs


def test_a_fill_the_aggregate_cannot_hold_is_refused_at_validation(bare: Workspace) -> None:
    step = {
        "id": "bad",
        "pivot": {"input": "sales", "on": "channel", "using": "max(product)", "values": ["web"]},
    }
    step["pivot"]["fill"] = 1
    path = write_pipeline(bare, "bad_fill", [step, {"id": "out", "load": {"input": "bad", "table": "never"}}])
    with pytest.raises(SpecError) as info:
        bare.validate(path)
    assert "Step 'bad' is invalid" in info.value.message
    assert "COALESCE" in info.value.message


# ---------------------------------------------------------------- system catalogs point to the catalog

CATALOG_HINT = "to see the tables and their columns, run `queryforge catalog`"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT table_name FROM information_schema.tables",
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'sales'",
        "SELECT * FROM pg_catalog.pg_tables",
        "SELECT name FROM sqlite_master",
        "SELECT * FROM duckdb_columns()",
    ],
)
def test_query_of_a_system_catalog_points_to_queryforge_catalog(bare: Workspace, sql: str) -> None:
    with pytest.raises(QueryBlocked) as info:
        bare.query(sql)
    assert CATALOG_HINT in info.value.message


def test_sql_step_reading_information_schema_points_to_queryforge_catalog(bare: Workspace) -> None:
    step = {"id": "cols", "sql": "SELECT table_name, column_name FROM information_schema.columns"}
    path = write_pipeline(bare, "peek", [step, {"id": "out", "load": {"input": "cols", "table": "never"}}])
    with pytest.raises(SpecError) as info:
        bare.validate(path)
    assert "information_schema.columns" in info.value.message
    assert CATALOG_HINT in info.value.message


def test_internal_tables_are_refused_without_the_catalog_pointer(bare: Workspace) -> None:
    with pytest.raises(QueryBlocked) as info:
        bare.query("SELECT * FROM _qf_staging.anything")
    assert "_qf_staging.anything is not allowed" in info.value.message
    assert "queryforge catalog" not in info.value.message


def test_cli_query_of_information_schema_points_to_queryforge_catalog(
    bare: Workspace, qf: Callable[..., Any]
) -> None:
    sql = "SELECT * FROM information_schema.tables"
    result = qf("query", "--workspace", str(bare.root), "--json", "--", sql, cwd=bare.root)
    assert result.code == 2, (result.stdout, result.stderr)
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "QueryBlocked"
    assert CATALOG_HINT in error["message"]
    # and the catalog it points to does list the tables and their columns
    listed = qf("catalog", "files", "--workspace", str(bare.root), "--json", cwd=bare.root)
    assert listed.code == 0, listed.stderr
    assert "sales" in listed.stdout and "channel" in listed.stdout
