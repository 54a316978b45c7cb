"""Every built-in transform op (and `sql` steps), run for real and compared with plain DuckDB SQL.

Each case writes small CSVs into a bare workspace, runs a pipeline with `Workspace.run` that
publishes into the default warehouse, and compares the published table with the same
computation written independently as DuckDB SQL over the same CSV files (as multisets, and
in order where the pipeline sorts).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from queryforge.errors import SpecError, StepFailed
from queryforge.runs.executor import RunOutcome
from queryforge.workspace import Workspace

FILES = {
    "orders": """\
order_id,customer_id,status,amount,qty,day
1,10,shipped,12.5,1,2024-01-01
2,10,pending,7.0,2,2024-01-01
3,11,shipped,30.0,1,2024-01-02
3,11,shipped,30.0,1,2024-01-02
4,12,cancelled,5.0,3,2024-01-02
5,13,shipped,,2,2024-01-03
6,11,pending,30.0,5,2024-01-03
7,99,shipped,1.5,4,2024-01-03
""",
    "customers": """\
customer_id,name,country,status
10,Ann,NO,active
11,Bob,SE,inactive
12,Cid,,active
14,Dan,DK,active
""",
    "accounts": """\
cust_id,segment,amount
10,retail,100
11,b2b,200
15,retail,300
""",
    "returns_a": """\
id,amount,reason
1,5.0,damaged
2,3.5,late
2,3.5,late
""",
    "returns_b": """\
reason,id,amount
late,2,3.5
lost,9,20.0
""",
    "returns_c": """\
id,reason,amount,channel
2,late,3.5,web
10,damaged,1.0,shop
""",
    "wide": """\
id,q1,q2,q3
1,10,20,30
2,5,6,7
3,0,0,1
""",
}

Rows = list[tuple[Any, ...]]


def extracts_for(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Extract steps for the CSVs that `steps` read."""
    text = json.dumps(steps)
    return [
        {"id": name, "extract": {"path": f"data/{name}.csv"}}
        for name in FILES
        if re.search(rf"\b{name}\b", text)
    ]


def write_pipeline(ws: Workspace, name: str, steps: list[dict[str, Any]]) -> str:
    path = ws.root / "pipelines" / f"{name}.yaml"
    path.write_text(json.dumps({"name": name, "steps": steps}, indent=1))  # JSON is YAML
    return str(path)


def new_workspace(root: Path) -> Workspace:
    workspace = Workspace.init(root, bare=True)
    for name, text in FILES.items():
        (workspace.root / "data" / f"{name}.csv").write_text(text)
    return workspace


def published(ws: Workspace, table: str) -> tuple[list[str], list[str], Rows]:
    with duckdb.connect(str(ws.root / ".queryforge" / "warehouse.duckdb"), read_only=True) as con:
        rel = con.sql(f'SELECT * FROM "{table}"')
        return list(rel.columns), [str(t) for t in rel.types], rel.fetchall()


def expected(ws: Workspace, sql: str) -> tuple[list[str], list[str], Rows]:
    """The independent computation: plain DuckDB SQL with one view per CSV file."""
    with duckdb.connect() as con:
        for name in FILES:
            path = str(ws.root / "data" / f"{name}.csv").replace("'", "''")
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_csv('{path}')")
        rel = con.sql(sql)
        return list(rel.columns), [str(t) for t in rel.types], rel.fetchall()


def by_name(columns: list[str], rows: Rows) -> Counter[tuple[tuple[str, Any], ...]]:
    """Rows as a multiset keyed by column name, for ops whose column order is not part of the contract."""
    return Counter(tuple(sorted(zip(columns, row, strict=True))) for row in rows)


# ---------------------------------------------------------------- cases: steps -> independent SQL

CASES: dict[str, tuple[list[dict[str, Any]], str]] = {
    "filter": (
        [{"id": "op_filter", "filter": {"input": "orders", "where": "status = 'shipped' AND amount > 10"}}],
        "SELECT * FROM orders WHERE status = 'shipped' AND amount > 10",
    ),
    "select_columns": (
        [{"id": "op_select_columns", "select": {"input": "orders", "columns": ["amount", "order_id"]}}],
        "SELECT amount, order_id FROM orders",
    ),
    "select_exclude": (
        [{"id": "op_select_exclude", "select": {"input": "orders", "exclude": ["day", "QTY"]}}],
        "SELECT order_id, customer_id, status, amount FROM orders",
    ),
    "rename": (
        [
            {
                "id": "op_rename",
                "rename": {"input": "orders", "columns": {"amount": "total", "status": "state"}},
            }
        ],
        "SELECT order_id, customer_id, status AS state, amount AS total, qty, day FROM orders",
    ),
    "cast": (
        [
            {
                "id": "op_cast",
                "cast": {"input": "orders", "columns": {"amount": "DECIMAL(10,2)", "qty": "VARCHAR"}},
            }
        ],
        "SELECT order_id, customer_id, status, CAST(amount AS DECIMAL(10,2)) AS amount,"
        " CAST(qty AS VARCHAR) AS qty, day FROM orders",
    ),
    "derive_new_and_replaced": (
        [
            {
                "id": "op_derive_new_and_replaced",
                "derive": {
                    "input": "orders",
                    "columns": {"amount": "amount * 2", "total": "amount * qty", "big": "amount > 10"},
                },
            }
        ],
        "SELECT order_id, customer_id, status, amount * 2 AS amount, qty, day,"
        " amount * qty AS total, amount > 10 AS big FROM orders",
    ),
    "join_inner_collision": (
        [
            {
                "id": "op_join_inner_collision",
                "join": {"left": "orders", "right": "customers", "on": ["customer_id"]},
            }
        ],
        "SELECT o.*, c.name, c.country, c.status AS status_customers"
        " FROM orders o JOIN customers c ON o.customer_id = c.customer_id",
    ),
    "join_left": (
        [
            {
                "id": "op_join_left",
                "join": {"left": "orders", "right": "customers", "on": ["customer_id"], "how": "left"},
            }
        ],
        "SELECT o.*, c.name, c.country, c.status AS status_customers"
        " FROM orders o LEFT JOIN customers c ON o.customer_id = c.customer_id",
    ),
    "join_right": (
        [
            {
                "id": "op_join_right",
                "join": {"left": "orders", "right": "customers", "on": ["customer_id"], "how": "right"},
            }
        ],
        "SELECT o.order_id, coalesce(o.customer_id, c.customer_id) AS customer_id, o.status, o.amount,"
        " o.qty, o.day, c.name, c.country, c.status AS status_customers"
        " FROM orders o RIGHT JOIN customers c ON o.customer_id = c.customer_id",
    ),
    "join_full": (
        [
            {
                "id": "op_join_full",
                "join": {"left": "orders", "right": "customers", "on": ["customer_id"], "how": "full"},
            }
        ],
        "SELECT o.order_id, coalesce(o.customer_id, c.customer_id) AS customer_id, o.status, o.amount,"
        " o.qty, o.day, c.name, c.country, c.status AS status_customers"
        " FROM orders o FULL JOIN customers c ON o.customer_id = c.customer_id",
    ),
    "join_semi": (
        [
            {
                "id": "op_join_semi",
                "join": {"left": "orders", "right": "customers", "on": ["customer_id"], "how": "semi"},
            }
        ],
        "SELECT * FROM orders WHERE customer_id IN (SELECT customer_id FROM customers)",
    ),
    "join_anti": (
        [
            {
                "id": "op_join_anti",
                "join": {"left": "orders", "right": "customers", "on": ["customer_id"], "how": "anti"},
            }
        ],
        "SELECT * FROM orders WHERE customer_id NOT IN (SELECT customer_id FROM customers)",
    ),
    "join_dict_on_inner": (
        [
            {
                "id": "op_join_dict_on_inner",
                "join": {"left": "orders", "right": "accounts", "on": {"customer_id": "cust_id"}},
            }
        ],
        "SELECT o.*, a.cust_id, a.segment, a.amount AS amount_accounts"
        " FROM orders o JOIN accounts a ON o.customer_id = a.cust_id",
    ),
    "join_dict_on_full": (
        [
            {
                "id": "op_join_dict_on_full",
                "join": {
                    "left": "orders",
                    "right": "accounts",
                    "on": {"customer_id": "cust_id"},
                    "how": "full",
                },
            }
        ],
        "SELECT o.*, a.cust_id, a.segment, a.amount AS amount_accounts"
        " FROM orders o FULL JOIN accounts a ON o.customer_id = a.cust_id",
    ),
    "join_dict_on_anti": (
        [
            {
                "id": "op_join_dict_on_anti",
                "join": {
                    "left": "accounts",
                    "right": "orders",
                    "on": {"cust_id": "customer_id"},
                    "how": "anti",
                },
            }
        ],
        "SELECT * FROM accounts WHERE cust_id NOT IN (SELECT customer_id FROM orders)",
    ),
    "union_all_by_name": (
        [{"id": "op_union_all_by_name", "union": {"inputs": ["returns_a", "returns_b"]}}],
        "SELECT id, amount, reason FROM returns_a UNION ALL SELECT id, amount, reason FROM returns_b",
    ),
    "union_distinct_by_name": (
        [
            {
                "id": "op_union_distinct_by_name",
                "union": {"inputs": ["returns_a", "returns_b"], "distinct": True},
            }
        ],
        "SELECT id, amount, reason FROM returns_a UNION SELECT id, amount, reason FROM returns_b",
    ),
    "union_three_with_extra_column": (
        [
            {
                "id": "op_union_three_with_extra_column",
                "union": {"inputs": ["returns_a", "returns_b", "returns_c"]},
            }
        ],
        "SELECT id, amount, reason, NULL::VARCHAR AS channel FROM returns_a"
        " UNION ALL SELECT id, amount, reason, NULL AS channel FROM returns_b"
        " UNION ALL SELECT id, amount, reason, channel FROM returns_c",
    ),
    "union_positional": (
        [{"id": "op_union_positional", "union": {"inputs": ["returns_a", "returns_a"], "by_name": False}}],
        "SELECT * FROM returns_a UNION ALL SELECT * FROM returns_a",
    ),
    "aggregate_grouped": (
        [
            {
                "id": "op_aggregate_grouped",
                "aggregate": {
                    "input": "orders",
                    "group_by": ["status", "day"],
                    "measures": {"n": "count(*)", "revenue": "sum(amount)", "avg_qty": "avg(qty)"},
                },
            }
        ],
        "SELECT status, day, count(*) AS n, sum(amount) AS revenue, avg(qty) AS avg_qty"
        " FROM orders GROUP BY status, day",
    ),
    "aggregate_total": (
        [
            {
                "id": "op_aggregate_total",
                "aggregate": {
                    "input": "orders",
                    "measures": {"n": "count(*)", "with_amount": "count(amount)", "top": "max(amount)"},
                },
            }
        ],
        "SELECT count(*) AS n, count(amount) AS with_amount, max(amount) AS top FROM orders",
    ),
    "dedupe_all_columns": (
        [{"id": "op_dedupe_all_columns", "dedupe": {"input": "orders"}}],
        "SELECT DISTINCT * FROM orders",
    ),
    "dedupe_keys_order_by": (
        [
            {
                "id": "op_dedupe_keys_order_by",
                "dedupe": {"input": "orders", "keys": ["customer_id"], "order_by": ["qty DESC", "order_id"]},
            }
        ],
        "SELECT * FROM orders o WHERE NOT EXISTS (SELECT 1 FROM orders b WHERE b.customer_id = o.customer_id"
        " AND (b.qty > o.qty OR (b.qty = o.qty AND b.order_id < o.order_id)))",
    ),
    "pivot_values_grouped": (
        [
            {
                "id": "op_pivot_values_grouped",
                "pivot": {
                    "input": "orders",
                    "on": "status",
                    "using": "sum(amount)",
                    "group_by": ["day"],
                    "values": ["shipped", "pending", "refunded"],
                },
            }
        ],
        "SELECT day, sum(amount) FILTER (WHERE status = 'shipped') AS shipped,"
        " sum(amount) FILTER (WHERE status = 'pending') AS pending,"
        " sum(amount) FILTER (WHERE status = 'refunded') AS refunded FROM orders GROUP BY day",
    ),
    "pivot_numeric_values_total": (
        [
            {
                "id": "op_pivot_numeric_values_total",
                "pivot": {"input": "orders", "on": "qty", "using": "count(*)", "values": [1, 2, 5]},
            }
        ],
        'SELECT count(*) FILTER (WHERE qty = 1) AS "1", count(*) FILTER (WHERE qty = 2) AS "2",'
        ' count(*) FILTER (WHERE qty = 5) AS "5" FROM orders',
    ),
    "unpivot": (
        [
            {
                "id": "op_unpivot",
                "unpivot": {"input": "wide", "columns": ["q1", "q3"], "name": "quarter", "value": "units"},
            }
        ],
        "SELECT id, q2, 'q1' AS quarter, q1 AS units FROM wide"
        " UNION ALL SELECT id, q2, 'q3' AS quarter, q3 AS units FROM wide",
    ),
    "unpivot_default_names": (
        [{"id": "op_unpivot_default_names", "unpivot": {"input": "wide", "columns": ["q1", "q2", "q3"]}}],
        "SELECT id, 'q1' AS name, q1 AS value FROM wide UNION ALL SELECT id, 'q2', q2 FROM wide"
        " UNION ALL SELECT id, 'q3', q3 FROM wide",
    ),
    "sql_step": (
        [
            {
                "id": "op_sql_step",
                "sql": "SELECT c.country, count(*) AS orders, sum(o.amount) AS revenue\n"
                "FROM orders o JOIN customers c USING (customer_id)\nGROUP BY ALL",
            }
        ],
        "SELECT c.country, count(*) AS orders, sum(o.amount) AS revenue"
        " FROM orders o JOIN customers c ON o.customer_id = c.customer_id GROUP BY c.country",
    ),
    "sql_step_with_cte_and_chained_ops": (
        [
            {"id": "chain_shipped", "filter": {"input": "orders", "where": "status = 'shipped'"}},
            {
                "id": "chain_q",
                "sql": "WITH per AS (SELECT customer_id, sum(amount) AS spent FROM chain_shipped GROUP BY 1) "
                "SELECT per.*, customers.name FROM per LEFT JOIN customers USING (customer_id)",
            },
            {"id": "chain_r", "rename": {"input": "chain_q", "columns": {"spent": "total_spent"}}},
        ],
        "SELECT o.customer_id, sum(o.amount) AS total_spent, any_value(c.name) AS name"
        " FROM orders o LEFT JOIN customers c ON o.customer_id = c.customer_id"
        " WHERE o.status = 'shipped' GROUP BY o.customer_id",
    ),
}

UNORDERED_COLUMNS = {"sql_step_with_cte_and_chained_ops"}

# Cases whose result is checked by a property rather than one expected table.
OTHER_CASES: dict[str, list[dict[str, Any]]] = {
    "sort": [{"id": "op_sort", "sort": {"input": "orders", "by": ["amount DESC", "order_id"]}}],
    "sort_limit_offset": [
        {"id": "op_sort_qty", "sort": {"input": "orders", "by": ["qty DESC", "order_id DESC"]}},
        {"id": "op_top", "limit": {"input": "op_sort_qty", "n": 3, "offset": 2}},
    ],
    "limit": [{"id": "op_limit", "limit": {"input": "orders", "n": 3}}],
    "limit_zero": [{"id": "op_limit_zero", "limit": {"input": "orders", "n": 0}}],
    "dedupe_keys_any_row": [
        {"id": "op_dedupe_any", "dedupe": {"input": "orders", "keys": ["status", "day"]}}
    ],
}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Workspace, RunOutcome]]:
    """One workspace and one run with every case, each case loading its own table `result_<case>`.

    One run keeps the module fast; each case still reads only its own published table.
    """
    ws = new_workspace(tmp_path_factory.mktemp("ops") / "ws")
    cases = {**{c: steps for c, (steps, _) in CASES.items()}, **OTHER_CASES}
    every = [step for steps in cases.values() for step in steps]
    ids = [step["id"] for step in every]
    assert len(ids) == len(set(ids)), "step ids must be unique across cases"
    loads = [
        {"id": f"load_{case}", "load": {"input": steps[-1]["id"], "table": f"result_{case}"}}
        for case, steps in cases.items()
    ]
    outcome = ws.run(write_pipeline(ws, "all_ops", [*extracts_for(every), *every, *loads]))
    yield ws, outcome
    ws.close()


def result_of(shared: tuple[Workspace, RunOutcome], case: str) -> tuple[list[str], list[str], Rows]:
    ws, outcome = shared
    assert outcome.error is None, outcome.error
    assert outcome.status == "succeeded"
    assert ("warehouse", f"result_{case}") in [(t.connection, t.table) for t in outcome.published]
    return published(ws, f"result_{case}")


@pytest.mark.parametrize("case", list(CASES))
def test_op_matches_plain_duckdb(shared: tuple[Workspace, RunOutcome], case: str) -> None:
    names, types, rows = result_of(shared, case)
    want_names, want_types, want_rows = expected(shared[0], CASES[case][1])
    if case in UNORDERED_COLUMNS:
        assert by_name(names, rows) == by_name(want_names, want_rows)
        return
    assert names == want_names
    assert types == want_types
    assert Counter(rows) == Counter(want_rows)


def test_sort_publishes_rows_in_order(shared: tuple[Workspace, RunOutcome]) -> None:
    names, _, rows = result_of(shared, "sort")
    want_names, _, want_rows = expected(shared[0], "SELECT * FROM orders ORDER BY amount DESC, order_id")
    assert names == want_names
    assert rows == want_rows


def test_sort_then_limit_and_offset_gives_the_top_rows(shared: tuple[Workspace, RunOutcome]) -> None:
    _, _, rows = result_of(shared, "sort_limit_offset")
    _, _, want = expected(shared[0], "SELECT * FROM orders ORDER BY qty DESC, order_id DESC LIMIT 3 OFFSET 2")
    assert rows == want


def test_limit_without_sort_takes_n_input_rows(shared: tuple[Workspace, RunOutcome]) -> None:
    _, _, rows = result_of(shared, "limit")
    _, _, every = expected(shared[0], "SELECT * FROM orders")
    assert len(rows) == 3
    assert not Counter(rows) - Counter(every)  # a sub-multiset of the input


def test_limit_zero_publishes_an_empty_table_with_the_columns(shared: tuple[Workspace, RunOutcome]) -> None:
    names, types, rows = result_of(shared, "limit_zero")
    want_names, want_types, _ = expected(shared[0], "SELECT * FROM orders")
    assert (names, types, rows) == (want_names, want_types, [])


def test_dedupe_keys_without_order_keeps_one_input_row_per_key(shared: tuple[Workspace, RunOutcome]) -> None:
    names, _, rows = result_of(shared, "dedupe_keys_any_row")
    _, _, every = expected(shared[0], "SELECT * FROM orders")
    key = [names.index("status"), names.index("day")]
    keys = [tuple(r[i] for i in key) for r in rows]
    assert len(keys) == len(set(keys))
    assert set(keys) == {tuple(r[i] for i in key) for r in every}
    assert not Counter(rows) - Counter(every)


def test_published_table_reads_back_through_the_workspace(shared: tuple[Workspace, RunOutcome]) -> None:
    """`Workspace.read_table` returns what DuckDB sees in the warehouse."""
    ws = shared[0]
    names, rows = ws.read_table("result_filter")
    want_names, _, want_rows = expected(ws, CASES["filter"][1])
    assert names == want_names
    assert Counter(rows) == Counter(want_rows)


def test_each_case_ran_as_its_own_isolated_pipeline_too(tmp_path: Path) -> None:
    """One case run alone gives the same table as inside the shared run (no cross-talk)."""
    ws = new_workspace(tmp_path / "ws")
    try:
        steps, sql = CASES["join_full"]
        load = {"id": "publish", "load": {"input": steps[-1]["id"], "table": "alone"}}
        outcome = ws.run(write_pipeline(ws, "alone", [*extracts_for(steps), *steps, load]))
        assert outcome.status == "succeeded", outcome.error
        names, _, rows = published(ws, "alone")
        want_names, _, want_rows = expected(ws, sql)
        assert names == want_names
        assert Counter(rows) == Counter(want_rows)
    finally:
        ws.close()


def test_pivot_without_values_finds_them_in_the_data(tmp_path: Path) -> None:
    ws = new_workspace(tmp_path / "ws")
    try:
        steps = [
            {
                "id": "p",
                "pivot": {"input": "orders", "on": "status", "using": "sum(qty)", "group_by": ["day"]},
            }
        ]
        load = {"id": "publish", "load": {"input": "p", "table": "pivoted"}}
        outcome = ws.run(write_pipeline(ws, "pivot", [*extracts_for(steps), *steps, load]))
        assert outcome.status == "succeeded", outcome.error
        names, _, rows = published(ws, "pivoted")
        want_names, _, want_rows = expected(
            ws,
            "SELECT day, sum(qty) FILTER (WHERE status = 'shipped') AS shipped,"
            " sum(qty) FILTER (WHERE status = 'pending') AS pending,"
            " sum(qty) FILTER (WHERE status = 'cancelled') AS cancelled FROM orders GROUP BY day",
        )
        assert sorted(names) == sorted(want_names)
        assert by_name(names, rows) == by_name(want_names, want_rows)
    finally:
        ws.close()


# ---------------------------------------------------------------- compile errors: unknown columns

UNKNOWN_COLUMN: dict[str, dict[str, Any]] = {
    "filter": {"filter": {"input": "orders", "where": "amout > 1"}},
    "select_columns": {"select": {"input": "orders", "columns": ["order_id", "amout"]}},
    "select_exclude": {"select": {"input": "orders", "exclude": ["amout"]}},
    "rename": {"rename": {"input": "orders", "columns": {"amout": "total"}}},
    "cast": {"cast": {"input": "orders", "columns": {"amout": "INTEGER"}}},
    "derive": {"derive": {"input": "orders", "columns": {"double": "amout * 2"}}},
    "join_left_key": {"join": {"left": "orders", "right": "customers", "on": ["custmer_id"]}},
    "join_dict_right_key": {
        "join": {"left": "orders", "right": "accounts", "on": {"customer_id": "cust_idd"}}
    },
    "aggregate_group_by": {
        "aggregate": {"input": "orders", "group_by": ["statu"], "measures": {"n": "count(*)"}}
    },
    "aggregate_measure": {"aggregate": {"input": "orders", "measures": {"n": "sum(amout)"}}},
    "dedupe_keys": {"dedupe": {"input": "orders", "keys": ["custmer_id"]}},
    "dedupe_order_by": {"dedupe": {"input": "orders", "keys": ["customer_id"], "order_by": ["amout DESC"]}},
    "sort": {"sort": {"input": "orders", "by": ["amout DESC"]}},
    "pivot_on": {"pivot": {"input": "orders", "on": "statu", "using": "sum(qty)", "values": ["a"]}},
    "pivot_using": {"pivot": {"input": "orders", "on": "status", "using": "sum(amout)", "values": ["a"]}},
    "pivot_group_by": {
        "pivot": {
            "input": "orders",
            "on": "status",
            "using": "sum(qty)",
            "group_by": ["dya"],
            "values": ["a"],
        }
    },
    "unpivot": {"unpivot": {"input": "wide", "columns": ["q1", "q22"]}},
}
SUGGESTION = {
    "filter": "amount",
    "select_columns": "amount",
    "select_exclude": "amount",
    "rename": "amount",
    "cast": "amount",
    "derive": "amount",
    "join_left_key": "customer_id",
    "join_dict_right_key": "cust_id",
    "aggregate_group_by": "status",
    "aggregate_measure": "amount",
    "dedupe_keys": "customer_id",
    "dedupe_order_by": "amount",
    "sort": "amount",
    "pivot_on": "status",
    "pivot_using": "amount",
    "pivot_group_by": "day",
    "unpivot": "q2",
}


def error_case(ws: Workspace, name: str, steps: list[dict[str, Any]]) -> str:
    """A pipeline file of its own (in the shared workspace) with `steps` and a load of the last one."""
    load = {"id": "publish", "load": {"input": steps[-1]["id"], "table": f"never_{name}"}}
    return write_pipeline(ws, f"bad_{name}", [*extracts_for(steps), *steps, load])


@pytest.mark.parametrize("case", list(UNKNOWN_COLUMN))
def test_unknown_column_is_a_spec_error_with_did_you_mean(
    shared: tuple[Workspace, RunOutcome], case: str
) -> None:
    ws = shared[0]
    path = error_case(ws, case, [{"id": "bad_step", **UNKNOWN_COLUMN[case]}])
    with pytest.raises(SpecError) as info:
        ws.validate(path)
    err = info.value
    assert "Unknown column" in err.message
    assert "bad_step" in err.message
    assert err.where is not None and "step 'bad_step'" in err.where
    assert err.hint == f"did you mean '{SUGGESTION[case]}'?"
    # running refuses in the same way, before a run is created or anything is published
    runs_before = len(ws.list_runs(limit=1000))
    with pytest.raises(SpecError):
        ws.run(path)
    assert len(ws.list_runs(limit=1000)) == runs_before


def test_unknown_column_in_sql_step_suggests_the_column(shared: tuple[Workspace, RunOutcome]) -> None:
    ws = shared[0]
    path = error_case(ws, "sql_column", [{"id": "q", "sql": "SELECT order_id, amout FROM orders"}])
    with pytest.raises(SpecError) as info:
        ws.validate(path)
    assert "amout" in info.value.message
    assert info.value.hint is not None and "amount" in info.value.hint


def test_sql_step_reading_an_unknown_step_suggests_it(shared: tuple[Workspace, RunOutcome]) -> None:
    ws = shared[0]
    sql = "SELECT * FROM ordrs UNION ALL SELECT * FROM orders"
    path = error_case(ws, "sql_table", [{"id": "q", "sql": sql}])
    with pytest.raises(SpecError) as info:
        ws.validate(path)
    assert "ordrs" in info.value.message
    assert info.value.hint == "did you mean 'orders'?"


def test_select_needs_columns_or_exclude(shared: tuple[Workspace, RunOutcome]) -> None:
    ws = shared[0]
    path = error_case(ws, "select", [{"id": "s", "select": {"input": "orders"}}])
    with pytest.raises(SpecError) as info:
        ws.validate(path)
    assert "'columns' or 'exclude'" in info.value.message


def run_bad_cast(root: Path) -> tuple[Workspace, RunOutcome]:
    ws = new_workspace(root)
    steps = [{"id": "c", "cast": {"input": "orders", "columns": {"status": "INTEGER"}}}]
    load = {"id": "publish", "load": {"input": "c", "table": "casted"}}
    return ws, ws.run(write_pipeline(ws, "bad_cast", [*extracts_for(steps), *steps, load]))


def test_a_cast_that_fails_on_the_data_fails_the_run_and_publishes_nothing(tmp_path: Path) -> None:
    ws, outcome = run_bad_cast(tmp_path / "ws")
    try:
        assert outcome.status == "failed"
        assert isinstance(outcome.error, StepFailed)
        assert outcome.error.exit_code == 2
        assert outcome.published == []
        db = ws.root / ".queryforge" / "warehouse.duckdb"
        if db.exists():  # created only if a load got as far as staging
            with duckdb.connect(str(db), read_only=True) as con:
                assert con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall() == []
    finally:
        ws.close()


def test_a_cast_that_fails_on_the_data_names_a_real_step(tmp_path: Path) -> None:
    ws, outcome = run_bad_cast(tmp_path / "ws")
    ws.close()
    assert outcome.error is not None
    assert "'read'" not in outcome.error.message
    assert "'c'" in outcome.error.message or "'publish'" in outcome.error.message


def test_cast_to_an_unknown_type_is_a_spec_error(shared: tuple[Workspace, RunOutcome]) -> None:
    ws = shared[0]
    steps = [{"id": "c", "cast": {"input": "orders", "columns": {"amount": "MONEYS(("}}}]
    with pytest.raises(SpecError) as info:
        ws.validate(error_case(ws, "cast", steps))
    assert "amount" in info.value.message
    assert info.value.hint is not None and "DECIMAL" in info.value.hint
