"""The rules planner on paraphrases of the evaluation prompts that are NOT in cases.yaml.

`RulesPlanner().draft(request, ctx)` runs over a PlannerContext built by `build_context` on a
workspace holding a copy of the eval data (and, published, the `orders` table). The assertions
are about meaning, not step structure: each draft is executed with DuckDB (every extract step id
becomes a view over the step's source, then the `result` SQL runs over those views, or the extract
alone for a plain load) and the rows are compared, as multisets, with an independent DuckDB query
over the same files (the comparison of tests/planner_eval/harness.py: numbers rounded to 2 places,
column names and order ignored). What the load does (table, mode, keys), which checks are added,
and which requests are a question are asserted as they are; every draft must also say its reading
and pass the destination guard.

A paraphrase the planner gets wrong is marked xfail(strict=True, reason="planner: ...").
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from queryforge.planner.catalog import build_context
from queryforge.planner.context import PlannerContext
from queryforge.planner.guard import check_destinations
from queryforge.planner.rules import Draft, PlannerQuestion, RulesPlanner
from queryforge.sql.safety import check_query
from queryforge.workspace import Workspace
from tests.planner_eval.harness import Expected, as_multiset, describe_difference

EVAL_DATA = Path(__file__).resolve().parents[1] / "fixtures" / "planner_eval" / "data"
READERS = {".csv": "read_csv_auto", ".ndjson": "read_json_auto", ".json": "read_json_auto"}
READERS |= {".parquet": "read_parquet"}
DRAFT_KINDS = {"extract", "sql", "check", "load"}


@dataclass(frozen=True)
class Env:
    ctx: PlannerContext
    root: Path  # the workspace: data/ holds the eval data, .queryforge/warehouse.duckdb the `orders`


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """The eval data in data/, and the orders published as the warehouse table `orders`."""
    root = tmp_path_factory.mktemp("planner") / "ws"
    with Workspace.init(root, bare=True) as ws:
        for f in EVAL_DATA.iterdir():
            shutil.copy(f, root / "data" / f.name)
        outcome = ws.ask("Load data/orders.csv into orders", consent=lambda _: True, provider="rules")
        assert outcome.status == "succeeded", outcome.error
        conns = ws.connections()
        try:
            ctx = build_context(conns, ws.root)
        finally:
            conns.close()
    yield Env(ctx, root)


@pytest.fixture(scope="module")
def ctx(env: Env) -> PlannerContext:
    return env.ctx


@pytest.fixture(scope="module")
def expected() -> Iterator[Expected]:
    """Independent DuckDB over the eval files ('orders.csv'; SQLite tables as legacy__accounts)."""
    exp = Expected(EVAL_DATA)
    yield exp
    exp.close()


def draft(request: str, ctx: PlannerContext) -> Draft:
    """The draft, which must say its reading, name its target there and pass the destination guard."""
    d = RulesPlanner().draft(request, ctx)
    for step in d.pipeline["steps"]:
        kind = [k for k in step if k != "id"]
        assert len(kind) == 1 and kind[0] in DRAFT_KINDS, step
    check_destinations(request, d.pipeline, ctx)
    assert isinstance(d.reading, str) and d.reading.strip(), d
    assert load(d)["table"] in d.reading, d.reading
    return d


def bodies(d: Draft, kind: str) -> list[dict[str, Any]]:
    return [s[kind] for s in d.pipeline["steps"] if kind in s]


def only(d: Draft, kind: str) -> dict[str, Any]:
    found = bodies(d, kind)
    assert len(found) == 1, f"expected one {kind} step, got {found} in {d.pipeline['steps']}"
    return found[0]


def load(d: Draft) -> dict[str, Any]:
    body = only(d, "load")
    assert d.pipeline["steps"][-1].get("load") is body, "the load is the last step"
    return body


def extracts(d: Draft) -> list[dict[str, Any]]:
    return bodies(d, "extract")


# ---------------------------------------------------------------- executing a draft


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _copy_sqlite(con: duckdb.DuckDBPyConnection, view: str, db: Path, table: str) -> None:
    with closing(sqlite3.connect(db)) as src:
        cur = src.execute(f"SELECT * FROM {_quote(table)}")
        cols = [c[0] for c in cur.description]
        rows = cur.fetchall()
    marks = "(" + ",".join("?" * len(cols)) + ")"
    con.execute(
        f"CREATE TABLE {_quote(view)} AS SELECT * FROM (VALUES {','.join([marks] * len(rows))}) "
        f"t({','.join(_quote(c) for c in cols)})",
        [x for r in rows for x in r],
    )


def _bind_extract(con: duckdb.DuckDBPyConnection, root: Path, sid: str, body: dict[str, Any]) -> None:
    if body.get("path"):
        path = root / body["path"]
        assert path.is_file(), body
        if body.get("table"):  # a table of a database file
            _copy_sqlite(con, sid, path, body["table"])
            return
        reader = READERS[path.suffix.lower()]
        literal = str(path).replace("'", "''")
        con.execute(f"CREATE VIEW {_quote(sid)} AS SELECT * FROM {reader}('{literal}')")
        return
    assert body.get("connection") in (None, "warehouse") and body.get("table"), body
    con.execute(f"CREATE VIEW {_quote(sid)} AS SELECT * FROM wh.main.{_quote(body['table'])}")


def run_draft(d: Draft, env: Env) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and rows the draft's load would write, computed with plain DuckDB."""
    steps = {s["id"]: s for s in d.pipeline["steps"]}
    with closing(duckdb.connect()) as con:
        warehouse = str(env.root / ".queryforge" / "warehouse.duckdb").replace("'", "''")
        con.execute(f"ATTACH '{warehouse}' AS wh (READ_ONLY)")
        for sid, step in steps.items():
            if "extract" in step:
                _bind_extract(con, env.root, sid, step["extract"])
        node = steps[load(d)["input"]]
        while "check" in node:  # a check passes its input through unchanged
            node = steps[node["check"]["input"]]
        if "sql" in node:
            check_query(node["sql"], allowed_tables={s.lower() for s in steps})
            cur = con.execute(node["sql"])
        else:
            assert "extract" in node, node
            cur = con.execute(f"SELECT * FROM {_quote(node['id'])}")
        rows = cur.fetchall()
        columns = [c[0] for c in cur.description]
    return columns, rows


def assert_rows(d: Draft, env: Env, expected: Expected, want_sql: str) -> list[str]:
    """The draft yields exactly the rows of `want_sql`; returns the draft's column names."""
    columns, got = run_draft(d, env)
    want = expected.rows(want_sql)
    assert want, f"the expected query should return rows: {want_sql}"
    assert as_multiset(got) == as_multiset(want), describe_difference(got, want)
    return columns


def assert_top_n(d: Draft, env: Env, expected: Expected, source_sql: str, key: str, n: int) -> None:
    """n rows of the source whose `key` values are the n first by the order in `key` ('amount ASC').

    Ties at the boundary may be broken either way: the rows must be rows of the source, and the
    multiset of their key values must be that of the n first.
    """
    columns, got = run_draft(d, env)
    assert len(got) == n, got
    assert not as_multiset(got) - as_multiset(expected.rows(source_sql)), "rows that are not in the source"
    column, _ = key.split()
    keys = [r[columns.index(column)] for r in got]
    want = [r[0] for r in expected.rows(f"SELECT {column} FROM ({source_sql}) ORDER BY {key} LIMIT {n}")]
    assert as_multiset([k] for k in keys) == as_multiset([k] for k in want)


def assert_plain_load(d: Draft, path: str, table: str, mode: str = "replace") -> None:
    assert [e.get("path") for e in extracts(d)] == [path]
    assert not bodies(d, "sql"), "a plain load reads the file as it is"
    body = load(d)
    assert body["table"] == table
    assert body["mode"] == mode


# ---------------------------------------------------------------- loading, targets, formats


def test_get_parquet_into_a_copy(env: Env, expected: Expected) -> None:
    d = draft("Get products.parquet into products_copy", env.ctx)
    assert_plain_load(d, "data/products.parquet", "products_copy")
    assert_rows(d, env, expected, "SELECT * FROM 'products.parquet'")


def test_bring_parquet_into_a_table_called(env: Env, expected: Expected) -> None:
    d = draft("Bring products.parquet into a table called products_copy", env.ctx)
    assert_plain_load(d, "data/products.parquet", "products_copy")
    assert_rows(d, env, expected, "SELECT * FROM 'products.parquet'")


def test_put_csv_in_a_table_named(env: Env, expected: Expected) -> None:
    d = draft("Put customers.csv in a table named customers_copy", env.ctx)
    assert_plain_load(d, "data/customers.csv", "customers_copy")
    assert_rows(d, env, expected, "SELECT * FROM 'customers.csv'")


def test_import_ndjson_under_another_name(env: Env, expected: Expected) -> None:
    d = draft("Import events.ndjson into event_log", env.ctx)
    assert_plain_load(d, "data/events.ndjson", "event_log")
    assert_rows(d, env, expected, "SELECT * FROM read_json_auto('events.ndjson')")


def test_table_of_a_sqlite_file(env: Env, expected: Expected) -> None:
    d = draft("Bring the accounts table from data/legacy.sqlite into legacy_accounts", env.ctx)
    assert extracts(d) == [{"path": "data/legacy.sqlite", "table": "accounts"}]
    assert load(d)["table"] == "legacy_accounts"
    assert load(d)["mode"] == "replace"
    assert_rows(d, env, expected, "SELECT * FROM legacy__accounts")


def test_misspelt_file_is_matched_and_noted(env: Env, expected: Expected) -> None:
    d = draft("Load custmers.csv into customers_typo", env.ctx)
    assert_plain_load(d, "data/customers.csv", "customers_typo")
    assert any("customers.csv" in n for n in d.notes)
    assert_rows(d, env, expected, "SELECT * FROM 'customers.csv'")


def test_warehouse_table_as_source(env: Env, expected: Expected) -> None:
    d = draft("Copy the orders table into orders_backup", env.ctx)
    assert extracts(d) == [{"connection": "warehouse", "table": "orders"}]
    assert load(d)["table"] == "orders_backup"
    assert load(d)["mode"] == "replace"
    assert_rows(d, env, expected, "SELECT * FROM 'orders.csv'")


@pytest.mark.parametrize(
    ("request_text", "table"),
    [
        ("Load orders.csv into orders_new where amount > 10", "orders_new"),
        ("Copy the orders table into orders_backup", "orders_backup"),
        ("Load orders.csv into orders_1 where amount > 10", "orders_1"),
        ("Load orders.csv into orders_1 where amount > 10, replacing it", "orders_1"),
        ("Load orders.csv into orders2", "orders2"),
        ("Load customers.csv into orderz", "orderz"),
    ],
    ids=["new-suffix", "backup", "digit-suffix", "digit-suffix-replacing", "digit", "letter"],
)
def test_the_destination_is_the_name_given(ctx: PlannerContext, request_text: str, table: str) -> None:
    """A destination near an existing table's name is a new table, never the existing one."""
    d = RulesPlanner().draft(request_text, ctx)
    assert load(d)["table"] == table
    assert table in (d.reading or "")


# ---------------------------------------------------------------- filters


def test_copy_only_shipped_orders_to(env: Env, expected: Expected) -> None:
    d = draft("Copy only shipped orders from orders.csv to shipped", env.ctx)
    assert_rows(d, env, expected, "SELECT * FROM 'orders.csv' WHERE status = 'shipped'")
    assert load(d)["table"] == "shipped"


def test_where_country_is(env: Env, expected: Expected) -> None:
    d = draft("Import customers.csv into fr_customers where country is FR", env.ctx)
    assert_rows(d, env, expected, "SELECT * FROM 'customers.csv' WHERE country = 'FR'")
    assert load(d)["table"] == "fr_customers"


def test_keep_orders_over_in(env: Env, expected: Expected) -> None:
    d = draft("Keep orders over 250 from orders.csv in big", env.ctx)
    assert_rows(d, env, expected, "SELECT * FROM 'orders.csv' WHERE amount > 250")
    assert load(d)["table"] == "big"


def test_amount_above(env: Env, expected: Expected) -> None:
    d = draft("Import orders.csv into pricey_orders keeping orders with amount above 350", env.ctx)
    assert_rows(d, env, expected, "SELECT * FROM 'orders.csv' WHERE amount > 350")
    assert load(d)["table"] == "pricey_orders"


def test_price_at_least(env: Env, expected: Expected) -> None:
    d = draft("Load products.csv into pricey_products keeping products with price at least 100", env.ctx)
    assert_rows(d, env, expected, "SELECT * FROM 'products.csv' WHERE price >= 100")
    assert load(d)["table"] == "pricey_products"


def test_amount_between(env: Env, expected: Expected) -> None:
    d = draft("Load orders.csv into mid_orders where amount is between 100 and 200", env.ctx)
    assert_rows(d, env, expected, "SELECT * FROM 'orders.csv' WHERE amount BETWEEN 100 AND 200")
    assert load(d)["table"] == "mid_orders"


def test_bare_status_value(env: Env, expected: Expected) -> None:
    d = draft("Load orders.csv into open_orders with status pending", env.ctx)
    assert_rows(d, env, expected, "SELECT * FROM 'orders.csv' WHERE status = 'pending'")
    assert load(d)["table"] == "open_orders"


def test_status_one_of_two(env: Env, expected: Expected) -> None:
    d = draft("Import the orders with status shipped or pending from orders.csv into active_orders", env.ctx)
    assert_rows(d, env, expected, "SELECT * FROM 'orders.csv' WHERE status IN ('shipped', 'pending')")
    assert load(d)["table"] == "active_orders"


def test_excluding_a_status(env: Env, expected: Expected) -> None:
    d = draft("Load orders.csv into orders_not_shipped excluding rows where status is shipped", env.ctx)
    assert_rows(d, env, expected, "SELECT * FROM 'orders.csv' WHERE status <> 'shipped'")
    assert load(d)["table"] == "orders_not_shipped"


def test_excluding_a_country(env: Env, expected: Expected) -> None:
    d = draft("Load customers.csv into non_de_customers excluding customers whose country is DE", env.ctx)
    assert_rows(d, env, expected, "SELECT * FROM 'customers.csv' WHERE country <> 'DE'")
    assert load(d)["table"] == "non_de_customers"


def test_placed_in_a_year(env: Env, expected: Expected) -> None:
    d = draft("Load orders from orders.csv placed in 2025 into orders_2025_only", env.ctx)
    assert_rows(d, env, expected, "SELECT * FROM 'orders.csv' WHERE year(order_date) = 2025")
    assert load(d)["table"] == "orders_2025_only"


def test_status_and_year_combined(env: Env, expected: Expected) -> None:
    d = draft("Load orders.csv into orders_pending_2026 with status pending placed in 2026", env.ctx)
    assert_rows(
        d, env, expected, "SELECT * FROM 'orders.csv' WHERE status = 'pending' AND year(order_date) = 2026"
    )
    assert load(d)["table"] == "orders_pending_2026"


def test_removing_rows_with_empty_email(env: Env, expected: Expected) -> None:
    d = draft("Import customers.csv into customers_nonempty, removing rows where email is empty", env.ctx)
    assert_rows(d, env, expected, "SELECT * FROM 'customers.csv' WHERE coalesce(email, '') <> ''")
    assert load(d)["table"] == "customers_nonempty"


def test_sql_condition_over_a_warehouse_table(env: Env, expected: Expected) -> None:
    d = draft("Build big_shipped from the orders table where amount > 300 and status = 'shipped'", env.ctx)
    assert extracts(d) == [{"connection": "warehouse", "table": "orders"}]
    assert_rows(d, env, expected, "SELECT * FROM 'orders.csv' WHERE amount > 300 AND status = 'shipped'")
    assert load(d)["table"] == "big_shipped"


# ---------------------------------------------------------------- columns, rows


def test_just_some_columns(env: Env, expected: Expected) -> None:
    d = draft(
        "Load just the customer_id, name and country columns from customers.csv into customer_names",
        env.ctx,
    )
    columns = assert_rows(d, env, expected, "SELECT customer_id, name, country FROM 'customers.csv'")
    assert columns == ["customer_id", "name", "country"]
    assert load(d)["table"] == "customer_names"


def test_dropping_a_column(env: Env, expected: Expected) -> None:
    d = draft("Load orders.csv into orders_no_date, dropping the column order_date", env.ctx)
    columns = assert_rows(d, env, expected, "SELECT * EXCLUDE (order_date) FROM 'orders.csv'")
    assert "order_date" not in columns
    assert load(d)["table"] == "orders_no_date"


def test_renaming_a_column(env: Env, expected: Expected) -> None:
    d = draft("Load products.csv into products_renamed, renaming the column price to unit_price", env.ctx)
    columns = assert_rows(d, env, expected, "SELECT * FROM 'products.csv'")
    assert sorted(columns) == sorted(["product_id", "name", "category", "unit_price"])
    assert load(d)["table"] == "products_renamed"


def test_adding_a_derived_column(env: Env, expected: Expected) -> None:
    d = draft(
        "Load orders.csv into orders_tax adding a column amount_with_tax equal to amount times 1.2", env.ctx
    )
    columns = assert_rows(d, env, expected, "SELECT *, amount * 1.2 FROM 'orders.csv'")
    assert columns[-1] == "amount_with_tax"
    assert load(d)["table"] == "orders_tax"


def test_removing_duplicates_by_key(env: Env, expected: Expected) -> None:
    d = draft("Load orders.csv into orders_dedup, removing duplicates by order_id", env.ctx)
    assert_rows(
        d, env, expected, "SELECT * FROM 'orders.csv' QUALIFY row_number() OVER (PARTITION BY order_id) = 1"
    )
    assert load(d)["table"] == "orders_dedup"


def test_stacking_two_files(env: Env, expected: Expected) -> None:
    d = draft("Stack orders_2025.csv and orders_2026.csv together into orders_all", env.ctx)
    assert sorted(e["path"] for e in extracts(d)) == ["data/orders_2025.csv", "data/orders_2026.csv"]
    assert_rows(d, env, expected, "SELECT * FROM 'orders_2025.csv' UNION ALL SELECT * FROM 'orders_2026.csv'")
    assert load(d)["table"] == "orders_all"


def test_join_on_a_named_key(env: Env, expected: Expected) -> None:
    d = draft("Load orders.csv and products.csv joined on product_id into orders_products", env.ctx)
    assert sorted(e["path"] for e in extracts(d)) == ["data/orders.csv", "data/products.csv"]
    assert_rows(
        d,
        env,
        expected,
        "SELECT o.*, p.name, p.category, p.price FROM 'orders.csv' o "
        "JOIN 'products.csv' p ON o.product_id = p.product_id",
    )
    assert load(d)["table"] == "orders_products"


def test_smallest_n(env: Env, expected: Expected) -> None:
    d = draft("Put the 3 smallest orders by amount from orders.csv into smallest_orders", env.ctx)
    assert_top_n(d, env, expected, "SELECT * FROM 'orders.csv'", "amount ASC", 3)
    assert load(d)["table"] == "smallest_orders"


def test_most_recent_n(env: Env, expected: Expected) -> None:
    d = draft("Load the 10 most recent orders from orders.csv into latest_orders", env.ctx)
    assert_top_n(d, env, expected, "SELECT * FROM 'orders.csv'", "order_date DESC", 10)
    assert load(d)["table"] == "latest_orders"


# ---------------------------------------------------------------- aggregates


def test_number_of_orders_per_status(env: Env, expected: Expected) -> None:
    d = draft("Load orders.csv into status_counts with the number of orders per status", env.ctx)
    assert_rows(d, env, expected, "SELECT status, count(*) FROM 'orders.csv' GROUP BY status")
    assert load(d)["table"] == "status_counts"


def test_how_many_per_status_save_as(env: Env, expected: Expected) -> None:
    d = draft("How many orders per status? Save it as status_counts from orders.csv", env.ctx)
    assert_rows(d, env, expected, "SELECT status, count(*) FROM 'orders.csv' GROUP BY status")
    assert load(d)["table"] == "status_counts"


def test_total_amount_per_status(env: Env, expected: Expected) -> None:
    d = draft("Total amount per status from orders.csv into amount_by_status", env.ctx)
    assert_rows(d, env, expected, "SELECT status, sum(amount) FROM 'orders.csv' GROUP BY status")
    assert load(d)["table"] == "amount_by_status"


def test_average_price_per_category(env: Env, expected: Expected) -> None:
    d = draft("Average price per category from products.csv into avg_price", env.ctx)
    assert_rows(d, env, expected, "SELECT category, avg(price) FROM 'products.csv' GROUP BY category")
    assert load(d)["table"] == "avg_price"


def test_maximum_per_status(env: Env, expected: Expected) -> None:
    d = draft("Maximum amount per status from orders.csv into max_amount", env.ctx)
    assert_rows(d, env, expected, "SELECT status, max(amount) FROM 'orders.csv' GROUP BY status")
    assert load(d)["table"] == "max_amount"


def test_distinct_products_per_status(env: Env, expected: Expected) -> None:
    d = draft("Number of distinct products per status from orders.csv into products_per_status", env.ctx)
    assert_rows(
        d, env, expected, "SELECT status, count(DISTINCT product_id) FROM 'orders.csv' GROUP BY status"
    )
    assert load(d)["table"] == "products_per_status"


@pytest.mark.parametrize(
    ("request_text", "table", "want_sql"),
    [
        (
            "Sum of amount per customer_id from orders.csv into spend_per_customer",
            "spend_per_customer",
            "SELECT customer_id, sum(amount) FROM 'orders.csv' GROUP BY customer_id",
        ),
        (
            "Count the orders per customer from orders.csv into orders_per_customer",
            "orders_per_customer",
            "SELECT customer_id, count(*) FROM 'orders.csv' GROUP BY customer_id",
        ),
    ],
    ids=["sum-per-customer-id", "count-per-customer"],
)
def test_per_numeric_key(env: Env, expected: Expected, request_text: str, table: str, want_sql: str) -> None:
    d = draft(request_text, env.ctx)
    assert_rows(d, env, expected, want_sql)
    assert load(d)["table"] == table


def test_count_per_month(env: Env, expected: Expected) -> None:
    d = draft("Count orders per month from orders.csv into monthly_counts", env.ctx)
    assert_rows(
        d,
        env,
        expected,
        "SELECT make_date(year(order_date), month(order_date), 1) AS m, count(*) "
        "FROM 'orders.csv' GROUP BY m",
    )
    assert load(d)["table"] == "monthly_counts"


def test_total_per_status_from_a_warehouse_table(env: Env, expected: Expected) -> None:
    d = draft("Create status_totals from the orders table with the total amount per status", env.ctx)
    assert extracts(d) == [{"connection": "warehouse", "table": "orders"}]
    assert_rows(d, env, expected, "SELECT status, sum(amount) FROM 'orders.csv' GROUP BY status")
    assert load(d)["table"] == "status_totals"


def test_top_customers_by_spend(env: Env, expected: Expected) -> None:
    d = draft("Top 3 customers by total amount from orders.csv into best_customers", env.ctx)
    assert_rows(
        d,
        env,
        expected,
        "SELECT customer_id, sum(amount) AS s FROM 'orders.csv' GROUP BY customer_id ORDER BY s DESC LIMIT 3",
    )
    assert load(d)["table"] == "best_customers"


# ---------------------------------------------------------------- load modes, checks, questions


@pytest.mark.parametrize(
    "request_text",
    [
        "Merge orders_updates.csv into orders by order_id",
        "Upsert orders_updates.csv into the orders table keyed by order_id",
    ],
)
def test_merge_on_a_key(env: Env, expected: Expected, request_text: str) -> None:
    d = draft(request_text, env.ctx)
    assert_plain_load(d, "data/orders_updates.csv", "orders", mode="merge")
    assert load(d)["keys"] == ["order_id"]
    assert_rows(d, env, expected, "SELECT * FROM 'orders_updates.csv'")


def test_append_to_a_table(env: Env, expected: Expected) -> None:
    d = draft("Append orders_2026.csv to the hist table", env.ctx)
    assert_plain_load(d, "data/orders_2026.csv", "hist", mode="append")
    assert_rows(d, env, expected, "SELECT * FROM 'orders_2026.csv'")


def test_checks_are_added_not_filters(env: Env, expected: Expected) -> None:
    d = draft(
        "Load customers.csv into customers_clean and make sure customer_id is never null, "
        "email is never empty",
        env.ctx,
    )
    rules = only(d, "check")["rules"]
    assert {"not_null": ["customer_id"]} in rules
    assert {"not_empty": ["email"]} in rules
    # A check never filters: what is loaded is the whole file, empty e-mails included.
    assert_rows(d, env, expected, "SELECT * FROM 'customers.csv'")
    assert load(d)["table"] == "customers_clean"


def test_positive_check(env: Env, expected: Expected) -> None:
    d = draft("Load products.csv into products_ok and ensure price is positive", env.ctx)
    (rule,) = only(d, "check")["rules"]
    assert rule["range"]["column"] == "price"
    assert rule["range"]["min"] == 0
    assert_rows(d, env, expected, "SELECT * FROM 'products.csv'")
    assert load(d)["table"] == "products_ok"


@pytest.mark.parametrize(
    "request_text",
    [
        "Load it into the table",
        "Put the data somewhere useful",
        "Merge orders_updates.csv into orders",
    ],
    ids=["no-source", "no-source-no-target", "merge-without-key"],
)
def test_ambiguity_is_a_question(ctx: PlannerContext, request_text: str) -> None:
    with pytest.raises(PlannerQuestion) as info:
        RulesPlanner().draft(request_text, ctx)
    assert info.value.message.endswith("?")
    assert info.value.hint
    assert info.value.candidates
    assert not info.value.refusal


def test_no_source_question_offers_the_files(ctx: PlannerContext) -> None:
    with pytest.raises(PlannerQuestion) as info:
        RulesPlanner().draft("Load it into the table", ctx)
    assert "data/orders.csv" in info.value.candidates


def test_drafts_are_deterministic(ctx: PlannerContext) -> None:
    request = "Import the orders with status shipped or pending from orders.csv into active_orders"
    first = draft(request, ctx)
    again = draft(request, ctx)
    assert first.pipeline == again.pipeline
    assert first.reading == again.reading


# ---------------------------------------------------------------- classes of wording added to the rules


@pytest.mark.parametrize(
    "request_text",
    [
        "Load products.csv into products_tiered with a tier column: 'premium' if the price is over 100, "
        "'regular' for everything else",
        "products.csv plus tier: anything above 100 is 'premium', all the others are 'regular'; save as "
        "products_tiered",
        "Sort the products in products.csv into a tier of 'premium' (price > 100) or 'regular' (the rest), "
        "into products_tiered",
    ],
    ids=["label-if-else", "label-condition-first", "label-in-brackets"],
)
def test_a_label_column_from_a_condition(env: Env, expected: Expected, request_text: str) -> None:
    d = draft(request_text, env.ctx)
    columns = assert_rows(
        d,
        env,
        expected,
        "SELECT *, CASE WHEN price > 100 THEN 'premium' ELSE 'regular' END FROM 'products.csv'",
    )
    assert "tier" in columns
    assert load(d)["table"] == "products_tiered"


@pytest.mark.parametrize(
    "request_text",
    [
        "products.csv into products_by_price with a price_position column where 1 is the cheapest product",
        "Give every product in products.csv a rank column, 1 meaning the cheapest; store as "
        "products_by_price",
    ],
    ids=["named-rank-column", "rank-column-one-means"],
)
def test_a_rank_column_whose_first_is_said(env: Env, expected: Expected, request_text: str) -> None:
    d = draft(request_text, env.ctx)
    assert_rows(d, env, expected, "SELECT *, rank() OVER (ORDER BY price ASC) FROM 'products.csv'")
    assert load(d)["table"] == "products_by_price"


@pytest.mark.parametrize(
    "request_text",
    [
        "orders.csv with an extra order_month column taken from order_date, into orders_months",
        "Could you put the month each order was placed in a new column and keep everything else, orders.csv "
        "into orders_months?",
    ],
    ids=["named-part-column", "part-as-a-new-column"],
)
def test_a_date_part_as_a_new_column(env: Env, expected: Expected, request_text: str) -> None:
    d = draft(request_text, env.ctx)
    assert_rows(d, env, expected, "SELECT *, month(order_date) FROM 'orders.csv'")
    assert load(d)["table"] == "orders_months"


def test_a_formula_in_brackets_and_a_row_level_for_every(env: Env, expected: Expected) -> None:
    for text in (
        "Add a column called gross_amount to orders.csv, the amount with tax added (amount * 1.2), "
        "and save it in orders_gross",
        "compute gross_amount as amount times 1.2 for each order of orders.csv, saved as orders_gross",
    ):
        d = draft(text, env.ctx)
        assert_rows(d, env, expected, "SELECT *, amount * 1.2 FROM 'orders.csv'")


@pytest.mark.parametrize(
    "request_text",
    [
        "Each product category's percentage of the total order amount (orders.csv with products.csv) "
        "into category_share",
        "Sales share by category in percent, orders.csv joined to products.csv, into category_share",
    ],
    ids=["percentage-of-total-measure", "measure-share"],
)
def test_share_of_a_measure(env: Env, expected: Expected, request_text: str) -> None:
    d = draft(request_text, env.ctx)
    assert_rows(
        d,
        env,
        expected,
        "SELECT p.category, 100.0 * sum(o.amount) / sum(sum(o.amount)) OVER () FROM 'orders.csv' o "
        "JOIN (SELECT DISTINCT * FROM 'products.csv') p USING (product_id) GROUP BY p.category",
    )


@pytest.mark.parametrize(
    "request_text",
    [
        "Shipment rate per product_id as a fraction from 0 to 1, orders.csv into ship_rate",
        "For each product_id of orders.csv, what fraction (0 to 1) of its orders were shipped? Save as "
        "ship_rate",
        "per product_id in orders.csv divide the number of shipped orders by the number of all orders, a "
        "value between 0 and 1, into ship_rate",
    ],
    ids=["noun-form-of-a-value", "what-fraction-of-its", "divide-by-all"],
)
def test_rate_of_a_value_per_group(env: Env, expected: Expected, request_text: str) -> None:
    d = draft(request_text, env.ctx)
    assert_rows(
        d,
        env,
        expected,
        "SELECT product_id, 1.0 * count(*) FILTER (WHERE status = 'shipped') / count(*) FROM 'orders.csv' "
        "GROUP BY product_id",
    )


def test_per_cent_is_one_word(env: Env, expected: Expected) -> None:
    d = draft(
        "By country, what per cent of the orders were cancelled? orders.csv and customers.csv, into x_pct",
        env.ctx,
    )
    assert_rows(
        d,
        env,
        expected,
        "SELECT c.country, 100.0 * count(*) FILTER (WHERE o.status = 'cancelled') / count(*) "
        "FROM 'orders.csv' o "
        "JOIN (SELECT DISTINCT * FROM 'customers.csv') c USING (customer_id) GROUP BY c.country",
    )


def test_counts_of_values_as_columns(env: Env, expected: Expected) -> None:
    want = (
        "SELECT page, count(*) FILTER (WHERE event_type = 'click'), count(*) FILTER (WHERE event_type = "
        "'signup') FROM read_json_auto('events.ndjson') GROUP BY page"
    )
    for text in (
        "events.ndjson by page: clicks, signups -> page_activity",
        "for each page of events.ndjson one column counting the clicks and another counting the signups, "
        "into page_activity",
    ):
        assert_rows(draft(text, env.ctx), env, expected, want)


def test_years_as_adjectives_side_by_side(env: Env, expected: Expected) -> None:
    want = (
        "SELECT status, sum(amount) FILTER (WHERE year(order_date) = 2025), sum(amount) FILTER (WHERE "
        "year(order_date) = 2026) FROM 'orders.csv' GROUP BY status"
    )
    for text in (
        "per status the 2025 revenue and the 2026 revenue next to each other, orders.csv into status_years",
        "by status, 2025 total and 2026 total as two columns from orders.csv into status_years",
    ):
        assert_rows(draft(text, env.ctx), env, expected, want)


def test_anti_join_with_a_year_or_zero(env: Env, expected: Expected) -> None:
    want = (
        "SELECT * FROM 'products.csv' p WHERE NOT EXISTS (SELECT 1 FROM 'orders.csv' o WHERE o.product_id = "
        "p.product_id AND o.order_date >= DATE '2025-12-01' AND o.order_date < DATE '2026-01-01')"
    )
    for text in (
        "products of products.csv without any orders in December 2025 (orders.csv) into unsold_2025",
        "Which products in products.csv had zero orders in December 2025 according to orders.csv? "
        "Into unsold_2025",
        "products.csv products that haven't been ordered at all during December 2025 (see orders.csv), "
        "into unsold_2025",
    ):
        assert_rows(draft(text, env.ctx), env, expected, want)


def test_unique_rows_of_the_main_source(env: Env, expected: Expected) -> None:
    d = draft(
        "unique customers of customers.csv who did not place any order in 2025 (orders.csv) into quiet_2025",
        env.ctx,
    )
    assert_rows(
        d,
        env,
        expected,
        "SELECT DISTINCT * FROM 'customers.csv' c WHERE NOT EXISTS (SELECT 1 FROM 'orders.csv' o WHERE "
        "o.customer_id = c.customer_id AND year(o.order_date) = 2025)",
    )


def test_files_described_and_merged_into_one_table(env: Env, expected: Expected) -> None:
    want = "SELECT * FROM 'orders_2025.csv' UNION ALL SELECT * FROM 'orders_2026.csv'"
    for text in (
        "Stack the two annual files orders_2025.csv and orders_2026.csv into all_years",
        "orders_2025.csv and orders_2026.csv merged into a single table called all_years",
        "Combine the 2025 and 2026 files (orders_2025.csv, orders_2026.csv) into all_years",
    ):
        d = draft(text, env.ctx)
        assert load(d)["mode"] == "replace"
        assert_rows(d, env, expected, want)


def test_column_lists_drops_and_renames_without_keywords(env: Env, expected: Expected) -> None:
    cases = [
        ("products.csv name and price into price_list", "SELECT name, price FROM 'products.csv'"),
        (
            "The category and price of every products.csv row, with no other columns, into price_list",
            "SELECT category, price FROM 'products.csv'",
        ),
        (
            "remove email from customers.csv and keep the rest in no_email",
            "SELECT * EXCLUDE (email) FROM 'customers.csv'",
        ),
        ("customers.csv into no_email with email left out", "SELECT * EXCLUDE (email) FROM 'customers.csv'"),
    ]
    for text, want in cases:
        assert_rows(draft(text, env.ctx), env, expected, want)
    for text in (
        "orders.csv, amount -> order_value, into orders_value",
        "orders.csv with the amount column called order_value instead, into orders_value",
    ):
        columns = assert_rows(draft(text, env.ctx), env, expected, "SELECT * FROM 'orders.csv'")
        assert "order_value" in columns and "amount" not in columns


def test_measures_said_as_verbs(env: Env, expected: Expected) -> None:
    want = "SELECT status, count(*), sum(amount) FROM 'orders.csv' GROUP BY status"
    for text in (
        "per status, how many orders there are in orders.csv and what they add up to in amount, "
        "into status_sums",
        "for every status count the orders of orders.csv and add up their amounts into status_sums",
    ):
        assert_rows(draft(text, env.ctx), env, expected, want)
    d = draft(
        "per category the cheapest and the most expensive price of products.csv into price_span", env.ctx
    )
    assert_rows(
        d, env, expected, "SELECT category, min(price), max(price) FROM 'products.csv' GROUP BY category"
    )


def test_top_n_said_with_a_relative_clause(env: Env, expected: Expected) -> None:
    d = draft(
        "the 5 products that sold the most in orders.csv, product_id and total, into top_sellers", env.ctx
    )
    assert_rows(
        d,
        env,
        expected,
        "SELECT product_id, sum(amount) AS t FROM 'orders.csv' GROUP BY product_id ORDER BY t DESC LIMIT 5",
    )


def test_latest_row_per_key_in_other_words(env: Env, expected: Expected) -> None:
    want = (
        "SELECT * FROM 'orders.csv' QUALIFY row_number() OVER (PARTITION BY status ORDER BY amount DESC) = 1"
    )
    for text in (
        "For each status, only its largest order should be kept from orders.csv, into top_order_per_status",
        "per status in orders.csv keep only the order with the highest amount, into top_order_per_status",
    ):
        assert_rows(draft(text, env.ctx), env, expected, want)
    d = draft("the most recent order each customer made (orders.csv) into newest_orders", env.ctx)
    assert_rows(
        d,
        env,
        expected,
        "SELECT * FROM 'orders.csv' QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY order_date "
        "DESC) = 1",
    )


def test_sorted_and_ranged_rows_in_other_words(env: Env, expected: Expected) -> None:
    d = draft("orders.csv ordered by amount descending, first 4 rows, into big_four", env.ctx)
    assert_top_n(d, env, expected, "SELECT * FROM 'orders.csv'", "amount DESC", 4)
    d = draft("products.csv products with a price from 20 to 40 into mid_price", env.ctx)
    assert_rows(d, env, expected, "SELECT * FROM 'products.csv' WHERE price BETWEEN 20 AND 40")
    d = draft("orders.csv by status and by month of order_date, counted, into status_months", env.ctx)
    assert_rows(
        d,
        env,
        expected,
        "SELECT status, date_trunc('month', order_date), count(*) FROM 'orders.csv' GROUP BY ALL",
    )


def test_columns_of_another_source_added_to_the_rows(env: Env, expected: Expected) -> None:
    d = draft(
        "add the category and price from products.csv to every order of orders.csv into orders_cat", env.ctx
    )
    assert_rows(
        d,
        env,
        expected,
        "SELECT o.*, p.category, p.price FROM 'orders.csv' o JOIN (SELECT DISTINCT * FROM 'products.csv') p "
        "USING (product_id)",
    )
    d = draft(
        "Games orders that were cancelled (products.csv for the category), keep the columns of orders.csv, "
        "into cancelled_games",
        env.ctx,
    )
    assert_rows(
        d,
        env,
        expected,
        "SELECT o.* FROM 'orders.csv' o JOIN (SELECT DISTINCT * FROM 'products.csv') p USING (product_id) "
        "WHERE p.category = 'games' AND o.status = 'cancelled'",
    )


def test_the_table_read_is_not_the_destination(env: Env, expected: Expected) -> None:
    d = draft("Total amount by status in the orders table; save as status_amounts", env.ctx)
    assert load(d)["table"] == "status_amounts"
    assert_rows(d, env, expected, "SELECT status, sum(amount) FROM 'orders.csv' GROUP BY status")


def test_year_to_date_running_total_is_not_a_filter(env: Env, expected: Expected) -> None:
    d = draft(
        "orders.csv summed per month of 2025 with a year-to-date running total, into ytd_2025",
        env.ctx,
    )
    assert_rows(
        d,
        env,
        expected,
        "SELECT date_trunc('month', order_date) m, sum(amount), sum(sum(amount)) OVER (ORDER BY "
        "date_trunc('month', order_date)) FROM 'orders.csv' WHERE year(order_date) = 2025 GROUP BY m",
    )


def test_hyphenated_prefixes_and_singular_values(env: Env, expected: Expected) -> None:
    d = draft("re-load products.csv, de-duplicated, into products_once", env.ctx)
    assert_rows(d, env, expected, "SELECT DISTINCT * FROM 'products.csv'")
    d = draft("every game product of products.csv into game_products", env.ctx)
    assert_rows(d, env, expected, "SELECT * FROM 'products.csv' WHERE category = 'games'")


def test_more_shares_and_rates(env: Env, expected: Expected) -> None:
    d = draft(
        "orders.csv, per status the total amount expressed as a percentage of the overall total, "
        "into status_pct",
        env.ctx,
    )
    assert_rows(
        d,
        env,
        expected,
        "SELECT status, 100.0 * sum(amount) / sum(sum(amount)) OVER () FROM 'orders.csv' GROUP BY status",
    )
    d = draft(
        "What fraction of each category's orders were shipped? orders.csv with products.csv, "
        "into shipped_share",
        env.ctx,
    )
    assert_rows(
        d,
        env,
        expected,
        "SELECT p.category, 1.0 * count(*) FILTER (WHERE o.status = 'shipped') / count(*) "
        "FROM 'orders.csv' o JOIN (SELECT DISTINCT * FROM 'products.csv') p USING (product_id) "
        "GROUP BY p.category",
    )


def test_more_columns_and_entities(env: Env, expected: Expected) -> None:
    d = draft("products.csv with a new half_price column which is price divided by 2, into halved", env.ctx)
    assert_rows(d, env, expected, "SELECT *, price / 2 FROM 'products.csv'")
    d = draft("orders.csv minus order_date into orders_undated", env.ctx)
    assert_rows(d, env, expected, "SELECT * EXCLUDE (order_date) FROM 'orders.csv'")
    d = draft(
        "products of products.csv that have never been ordered in December 2025 (orders.csv) into unordered",
        env.ctx,
    )
    assert_rows(
        d,
        env,
        expected,
        "SELECT * FROM 'products.csv' p WHERE NOT EXISTS (SELECT 1 FROM 'orders.csv' o WHERE o.product_id = "
        "p.product_id AND o.order_date >= DATE '2025-12-01' AND o.order_date < DATE '2026-01-01')",
    )
    d = draft(
        "Which statuses in orders.csv have more than 170 orders? status and count into big_statuses", env.ctx
    )
    assert_rows(
        d, env, expected, "SELECT status, count(*) FROM 'orders.csv' GROUP BY status HAVING count(*) > 170"
    )


# ---------------------------------------------------------------- second pass (2026-12-06)
@pytest.mark.parametrize(
    ("request_text", "want_sql"),
    [
        (
            "customers.csv where signup_date < 2024-03-01 -> early",
            "SELECT * FROM 'customers.csv' WHERE signup_date < DATE '2024-03-01'",
        ),
        (
            "orders.csv: order_date = 2026-03-14 -> one_day",
            "SELECT * FROM 'orders.csv' WHERE order_date = DATE '2026-03-14'",
        ),
        (
            "orders.csv order_date <= 2025-01-31 -> january_and_before",
            "SELECT * FROM 'orders.csv' WHERE order_date <= DATE '2025-01-31'",
        ),
    ],
    ids=["less-than", "equals", "at-most"],
)
def test_date_compared_with_an_operator(
    env: Env, expected: Expected, request_text: str, want_sql: str
) -> None:
    assert_rows(draft(request_text, env.ctx), env, expected, want_sql)


def test_misspellings_one_swap_or_edit_away(env: Env, expected: Expected) -> None:
    """Swapped letters count as one slip ('frist'), a rare dictionary word near a keyword is one too."""
    d = draft("the frist 4 customers by signup_date from customers.csv -> earliest_four", env.ctx)
    assert_rows(d, env, expected, "SELECT * FROM 'customers.csv' ORDER BY signup_date LIMIT 4")
    d = draft("orders.csv exept the cancelled ones -> not_cancelled", env.ctx)
    assert_rows(d, env, expected, "SELECT * FROM 'orders.csv' WHERE status <> 'cancelled'")


def test_sort_on_two_keys_then_limit(env: Env, expected: Expected) -> None:
    d = draft("products.csv order by category desc, price asc, limit 7 -> p7", env.ctx)
    assert_rows(d, env, expected, "SELECT * FROM 'products.csv' ORDER BY category DESC, price ASC LIMIT 7")


def test_exclusive_conditions_become_columns_beside_a_measure_and_or_without(
    env: Env, expected: Expected
) -> None:
    """'shipped and returned' can't both hold for one row: two counts per group, or either one."""
    d = draft("orders.csv per product_id: returned orders and shipped orders as two columns -> rs", env.ctx)
    assert_rows(
        d,
        env,
        expected,
        "SELECT product_id, count(*) FILTER (WHERE status = 'returned'), count(*) FILTER (WHERE status = "
        "'shipped') FROM 'orders.csv' GROUP BY product_id",
    )
    d = draft("orders.csv returned and pending orders -> rp", env.ctx)
    assert_rows(d, env, expected, "SELECT * FROM 'orders.csv' WHERE status IN ('returned', 'pending')")


def test_window_columns(env: Env, expected: Expected) -> None:
    d = draft("products.csv with each product's price rank within its category -> ranked", env.ctx)
    assert_rows(
        d,
        env,
        expected,
        "SELECT *, rank() OVER (PARTITION BY category ORDER BY price DESC) FROM 'products.csv'",
    )
    d = draft("events.ndjson: add the ts of the same user's next event -> with_next", env.ctx)
    assert_rows(
        d,
        env,
        expected,
        "SELECT *, lead(ts) OVER (PARTITION BY user_id ORDER BY ts) FROM read_json_auto('events.ndjson')",
    )


def test_rates_of_a_sum_and_of_present_values(env: Env, expected: Expected) -> None:
    d = draft("orders.csv per customer_id, pending amount divided by total amount -> pending_share", env.ctx)
    assert_rows(
        d,
        env,
        expected,
        "SELECT customer_id, sum(amount) FILTER (WHERE status = 'pending') / sum(amount) FROM 'orders.csv' "
        "GROUP BY customer_id",
    )
    d = draft("customers.csv: percentage of customers without an email per country -> no_email", env.ctx)
    assert_rows(
        d,
        env,
        expected,
        "SELECT country, 100.0 * count(*) FILTER (WHERE email IS NULL OR email = '') / count(*) "
        "FROM 'customers.csv' GROUP BY country",
    )


@pytest.mark.parametrize(
    "request_text",
    [
        "keep the Dutch customers of customers.csv and write them back into customers.csv",
        "Copy orders.csv into the accounts table of legacy.sqlite",
        "orders.csv joined with customers.csv, rows where the date is in 2025 -> j",
        "orders.csv with customers.csv and products.csv, rows whose name ends with 'a' -> j",
        "products.csv products with more than 4 ratings -> rated",
        "customers.csv customers who are not subscribed to the newsletter -> unsubscribed",
    ],
    ids=["write-back", "other-database", "which-date", "whose-name", "unknown-noun", "lost-negation"],
)
def test_never_guesses_a_destination_a_column_or_a_condition(ctx: PlannerContext, request_text: str) -> None:
    with pytest.raises(PlannerQuestion) as info:
        RulesPlanner().draft(request_text, ctx)
    assert info.value.message


def test_sql_calls_and_partition_words_in_terse_requests(env: Env, expected: Expected) -> None:
    d = draft("orders.csv where amount > avg(amount) -> above_avg", env.ctx)
    assert_rows(
        d, env, expected, "SELECT * FROM 'orders.csv' WHERE amount > (SELECT avg(amount) FROM 'orders.csv')"
    )
    d = draft("orders.csv + cumsum(amount) partitioned by customer_id, order by order_id -> running", env.ctx)
    assert_rows(
        d,
        env,
        expected,
        "SELECT *, sum(amount) OVER (PARTITION BY customer_id ORDER BY order_id) FROM 'orders.csv'",
    )
    d = draft("events.ndjson count(distinct user_id) by page -> users_per_page", env.ctx)
    assert_rows(
        d,
        env,
        expected,
        "SELECT page, count(DISTINCT user_id) FROM read_json_auto('events.ndjson') GROUP BY page",
    )


def test_counts_of_one_kind_of_row_compared_per_group(env: Env, expected: Expected) -> None:
    want = (
        "SELECT user_id, count(*) FROM read_json_auto('events.ndjson') WHERE event_type = 'purchase' "
        "GROUP BY user_id HAVING count(*) >= 3"
    )
    for text in (
        "users with 3+ purchase events in events.ndjson (user and count) -> repeat",
        "events.ndjson users who purchased three or more times, with the number of purchases -> repeat",
    ):
        assert_rows(draft(text, env.ctx), env, expected, want)


def test_measures_of_both_ends_of_a_column(env: Env, expected: Expected) -> None:
    d = draft(
        "For each category in products.csv, the lowest price, the highest price and the gap between the two "
        "-> price_range",
        env.ctx,
    )
    assert_rows(
        d,
        env,
        expected,
        "SELECT category, min(price), max(price), max(price) - min(price) FROM 'products.csv' "
        "GROUP BY category",
    )
    d = draft("days from first order to last order per customer_id, orders.csv -> span", env.ctx)
    assert_rows(
        d,
        env,
        expected,
        "SELECT customer_id, date_diff('day', min(order_date), max(order_date)) FROM 'orders.csv' "
        "GROUP BY customer_id",
    )


def test_a_value_and_all_rows_side_by_side_and_shares_of_every_value(env: Env, expected: Expected) -> None:
    d = draft("orders.csv per year: sum amount where shipped, sum amount overall -> shipped_vs_all", env.ctx)
    assert_rows(
        d,
        env,
        expected,
        "SELECT year(order_date), sum(amount) FILTER (WHERE status = 'shipped'), sum(amount) "
        "FROM 'orders.csv' GROUP BY 1",
    )
    d = draft(
        "what share of the orders in orders.csv is shipped, pending, returned or cancelled, as a percentage? "
        "-> shares",
        env.ctx,
    )
    assert_rows(
        d,
        env,
        expected,
        "SELECT status, 100.0 * count(*) / sum(count(*)) OVER () FROM 'orders.csv' GROUP BY status",
    )


def test_negation_after_the_rows_and_the_root_page_as_a_value(env: Env, expected: Expected) -> None:
    d = draft(
        "Could you filter the click events out of events.ndjson and keep the rest in no_clicks?", env.ctx
    )
    assert_rows(d, env, expected, "SELECT * FROM read_json_auto('events.ndjson') WHERE event_type <> 'click'")
    want = "SELECT * FROM read_json_auto('events.ndjson') WHERE event_type = 'view' AND page = '/'"
    for text in (
        "events.ndjson, views of / only -> home_views",
        "View events on the home page from events.ndjson -> hv",
    ):
        assert_rows(draft(text, env.ctx), env, expected, want)
    d = draft("fill the empty email values in customers.csv with unknown -> filled", env.ctx)
    assert_rows(
        d,
        env,
        expected,
        "SELECT * REPLACE (coalesce(NULLIF(email, ''), 'unknown') AS email) FROM 'customers.csv'",
    )


@pytest.mark.parametrize(
    "request_text",
    [
        "combine the accounts table in legacy.sqlite with orders.csv into account_orders",
        "accounts in legacy.sqlite that were closed before 2023, store them in closed_accounts",
        "French customers from customers.csv who opted in to the newsletter -> fr_newsletter",
        "Count the distinct sessions per day in events.ndjson -> daily_sessions",
        "replace the missing values in customers.csv and save it as customers_filled",
        "events.ndjson purchases by hour of ts, busiest hour only -> peak_hour",
        "make the orders better and put it in improved_orders",
        "Work out the revenue per status from orders.csv into status_revenue, and after that remove the "
        "returned rows from orders.csv",
        "For each year in orders.csv, the average total per customer among those who came back -> x",
    ],
    ids=[
        "source-dropped",
        "other-date",
        "unread-clause",
        "unknown-distinct",
        "fill-what",
        "unread-ranking",
        "vague-change",
        "embedded-removal",
        "unread-average",
    ],
)
def test_asks_when_a_source_a_clause_or_a_quantity_word_is_not_read(
    ctx: PlannerContext, request_text: str
) -> None:
    with pytest.raises(PlannerQuestion) as info:
        RulesPlanner().draft(request_text, ctx)
    assert info.value.message


def test_negations_typed_without_apostrophes_or_with_do(env: Env, expected: Expected) -> None:
    want = "SELECT * FROM read_json_auto('events.ndjson') WHERE event_type <> 'click'"
    assert_rows(
        draft("evrything in events.ndjson that isnt a clik event -> no_clicks", env.ctx), env, expected, want
    )
    d = draft("orders.csv orders that dont have status shipped -> not_shipped", env.ctx)
    assert_rows(d, env, expected, "SELECT * FROM 'orders.csv' WHERE status <> 'shipped'")
    d = draft("customers who haven't ordered in orders_2026.csv, from customers.csv -> idle", env.ctx)
    assert_rows(
        d,
        env,
        expected,
        "SELECT * FROM 'customers.csv' c WHERE NOT EXISTS (SELECT 1 FROM 'orders_2026.csv' o "
        "WHERE o.customer_id = c.customer_id)",
    )


def test_columns_wanted_and_top_n_per_group_after_a_described_source(env: Env, expected: Expected) -> None:
    d = draft("i just need order_id, amount and order_date out of orders_2026.csv -> slim", env.ctx)
    assert_rows(d, env, expected, "SELECT order_id, amount, order_date FROM 'orders_2026.csv'")
    d = draft(
        "For every category in the products.parquet catalogue, the two dearest products -> top2", env.ctx
    )
    assert_rows(
        d,
        env,
        expected,
        "SELECT * EXCLUDE (r) FROM (SELECT *, row_number() OVER (PARTITION BY category ORDER BY price DESC) "
        "AS r FROM 'products.parquet') WHERE r <= 2",
    )
    d = draft("The 10 smallest orders by amount in orders_2025.csv -> smallest", env.ctx)
    assert_rows(d, env, expected, "SELECT * FROM 'orders_2025.csv' ORDER BY amount LIMIT 10")


def test_a_new_column_defined_in_brackets_never_overwrites_a_column(env: Env, expected: Expected) -> None:
    want = "SELECT *, amount * 1.21 FROM 'orders_2026.csv'"
    for text in (
        "Add a column to orders_2026.csv with the amount including 21% VAT (amount times 1.21) -> vat",
        "orders_2026.csv with an extra column for the gross amount (amount * 1.21) -> gross",
    ):
        assert_rows(draft(text, env.ctx), env, expected, want)


def test_date_ranges_with_the_year_said_once_and_text_patterns(env: Env, expected: Expected) -> None:
    want = "SELECT * FROM 'orders.csv' WHERE order_date BETWEEN DATE '2026-04-01' AND DATE '2026-06-30'"
    for text in (
        "every order from orders.csv dated between 1 April and 30 June 2026 -> q2",
        "orders.csv between April 1 and June 30, 2026 -> q2",
    ):
        assert_rows(draft(text, env.ctx), env, expected, want)
    want = "SELECT * FROM 'products.csv' WHERE name ILIKE '%kitchen%'"
    for text in (
        "products.csv where name ilike '%kitchen%' -> k",
        "which products in products.csv have 'kitchen' somewhere in their name, whatever the "
        "capitalisation? -> k",
    ):
        assert_rows(draft(text, env.ctx), env, expected, want)


def test_parts_of_text_columns_as_groups_and_as_new_columns(env: Env, expected: Expected) -> None:
    d = draft(
        "Count unique customers in customers.csv by the first letter of their name -> by_initial", env.ctx
    )
    assert_rows(
        d, env, expected, "SELECT left(name, 1), count(DISTINCT customer_id) FROM 'customers.csv' GROUP BY 1"
    )
    d = draft(
        "Can you extract the username (everything before the '@') from each email in customers.csv into "
        "a new column? Store it as with_user",
        env.ctx,
    )
    assert_rows(d, env, expected, "SELECT *, split_part(email, '@', 1) FROM 'customers.csv'")
    d = draft("customers.csv number of customers per email domain -> domains", env.ctx)
    assert_rows(
        d,
        env,
        expected,
        "SELECT split_part(email, '@', 2), count(DISTINCT customer_id) FROM 'customers.csv' GROUP BY 1",
    )


def test_groups_ranked_by_a_count_of_one_kind_of_row(env: Env, expected: Expected) -> None:
    purchases = "FROM read_json_auto('events.ndjson') WHERE event_type = 'purchase'"
    d = draft(
        "the 2 pages with the most purchase events in events.ndjson, with their purchase count -> p", env.ctx
    )
    assert_rows(
        d, env, expected, f"SELECT page, count(*) AS n {purchases} GROUP BY page ORDER BY n DESC LIMIT 2"
    )
    d = draft(
        "The hour of the day (0-23) with the most purchase events in events.ndjson, with its purchase "
        "count -> h",
        env.ctx,
    )
    assert_rows(
        d, env, expected, f"SELECT hour(ts), count(*) AS n {purchases} GROUP BY 1 ORDER BY n DESC LIMIT 1"
    )


def test_key_columns_of_other_names_paired_by_the_request(env: Env, expected: Expected) -> None:
    d = draft(
        "Customers in customers.csv who have no events in events.ndjson (user_id is the customer_id) "
        "-> silent",
        env.ctx,
    )
    assert_rows(
        d,
        env,
        expected,
        "SELECT * FROM 'customers.csv' c WHERE NOT EXISTS (SELECT 1 FROM read_json_auto('events.ndjson') e "
        "WHERE e.user_id = c.customer_id)",
    )
    d = draft(
        "orders.csv joined with events.ndjson on customer_id = user_id, count per page -> by_page", env.ctx
    )
    assert_rows(
        d,
        env,
        expected,
        "SELECT e.page, count(*) FROM 'orders.csv' o "
        "JOIN (SELECT DISTINCT * FROM read_json_auto('events.ndjson')) e "
        "ON o.customer_id = e.user_id GROUP BY e.page",
    )


def test_update_rows_laid_over_base_rows_into_a_new_table(env: Env, expected: Expected) -> None:
    want = (
        "SELECT * FROM 'orders_updates.csv' UNION ALL SELECT * FROM 'orders.csv' "
        "WHERE order_id NOT IN (SELECT order_id FROM 'orders_updates.csv')"
    )
    for text in (
        "Apply orders_updates.csv to orders.csv: rows with an existing order_id replace the old ones, "
        "new order_ids are added; save as orders_current",
        "can you merge orders_updates.csv over orders.csv by order_id (updated rows win, unseen ones "
        "appended) into orders_current?",
    ):
        d = draft(text, env.ctx)
        assert d.pipeline["steps"][-1]["load"]["mode"] == "replace"
        assert_rows(d, env, expected, want)


def test_parts_of_a_date_compared_and_hours_said_over_a_vague_word(env: Env, expected: Expected) -> None:
    want = "SELECT * FROM read_json_auto('events.ndjson') WHERE hour(ts) < 12"
    for text in (
        "events.ndjson, hour of ts < 12 -> morning",
        "All morning events in events.ndjson, meaning a time of day before 12:00; save as morning",
        "events.ndjson events whose timestamp is earlier than midday, whatever the date -> morning",
    ):
        assert_rows(draft(text, env.ctx), env, expected, want)
    d = draft("orders.csv where month(order_date) >= 10 -> late_months", env.ctx)
    assert_rows(d, env, expected, "SELECT * FROM 'orders.csv' WHERE month(order_date) >= 10")


def test_an_average_of_measures_per_group(env: Env, expected: Expected) -> None:
    want = (
        "SELECT y, avg(n) FROM (SELECT year(order_date) AS y, customer_id, count(*) AS n FROM 'orders.csv' "
        "GROUP BY 1, 2) GROUP BY y"
    )
    for text in (
        "For each year in orders.csv, the average number of orders per customer -> avg_orders",
        "orders.csv: orders per customer per year, averaged per year -> avg_orders",
    ):
        assert_rows(draft(text, env.ctx), env, expected, want)


def test_examples_and_remarks_in_brackets_are_no_conditions(env: Env, expected: Expected) -> None:
    d = draft(
        "Number of orders per day of the week (Monday, Tuesday, ...) from orders.csv -> by_weekday", env.ctx
    )
    assert_rows(d, env, expected, "SELECT dayname(order_date), count(*) FROM 'orders.csv' GROUP BY 1")
    d = draft("Summarise orders.csv by status with the median amount (not the mean) -> medians", env.ctx)
    assert_rows(d, env, expected, "SELECT status, median(amount) FROM 'orders.csv' GROUP BY status")
    d = draft(
        "For each customer in orders.csv, the date of their first and of their last order -> span", env.ctx
    )
    assert_rows(
        d, env, expected, "SELECT customer_id, min(order_date), max(order_date) FROM 'orders.csv' GROUP BY 1"
    )


def test_rounding_ratios_of_measures_and_letter_case(env: Env, expected: Expected) -> None:
    d = draft("products.csv average price per category, rounded to one decimal -> r1", env.ctx)
    assert_rows(
        d, env, expected, "SELECT category, round(avg(price), 1) FROM 'products.csv' GROUP BY category"
    )
    d = draft("orders.csv: amount rounded to whole numbers -> r0", env.ctx)
    assert_rows(d, env, expected, "SELECT * REPLACE (round(amount, 0) AS amount) FROM 'orders.csv'")
    d = draft("orders.csv per status: total amount divided by number of orders -> aov", env.ctx)
    assert_rows(d, env, expected, "SELECT status, sum(amount) / count(*) FROM 'orders.csv' GROUP BY status")
    d = draft("customers.csv with the name in upper case -> shouting", env.ctx)
    assert_rows(d, env, expected, "SELECT * REPLACE (upper(name) AS name) FROM 'customers.csv'")
    d = draft("customers.csv names in lowercase as a new column -> quiet", env.ctx)
    assert_rows(d, env, expected, "SELECT *, lower(name) FROM 'customers.csv'")


def test_a_measure_in_two_years_and_its_change(env: Env, expected: Expected) -> None:
    years = (
        "sum(amount) FILTER (WHERE year(order_date) = 2025) AS a, "
        "sum(amount) FILTER (WHERE year(order_date) = 2026) AS b"
    )
    d = draft("orders.csv total amount per status in 2025 and 2026 and the change -> c", env.ctx)
    assert_rows(
        d,
        env,
        expected,
        f"SELECT status, a, b, b - a FROM (SELECT status, {years} FROM 'orders.csv' GROUP BY 1)",
    )
    d = draft(
        "How did each status's sales (sum of amount in orders.csv) change from 2025 to 2026 in percent? "
        "I want status, the 2025 total, the 2026 total and the % change -> yoy",
        env.ctx,
    )
    assert_rows(
        d,
        env,
        expected,
        f"SELECT status, a, b, 100.0 * (b - a) / a "
        f"FROM (SELECT status, {years} FROM 'orders.csv' GROUP BY 1)",
    )


def test_moving_averages_over_groups_and_rows(env: Env, expected: Expected) -> None:
    d = draft(
        "Monthly total amount from orders.csv (month as its first day) with a 3-month moving average -> ma3",
        env.ctx,
    )
    assert_rows(
        d,
        env,
        expected,
        "SELECT m, t, avg(t) OVER (ORDER BY m ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) FROM "
        "(SELECT date_trunc('month', order_date) AS m, sum(amount) AS t FROM 'orders.csv' GROUP BY 1)",
    )
    d = draft("orders.csv daily order count with a 7-day rolling average -> r7", env.ctx)
    assert_rows(
        d,
        env,
        expected,
        "SELECT d, n, avg(n) OVER (ORDER BY d ROWS BETWEEN 6 PRECEDING AND CURRENT ROW) FROM "
        "(SELECT order_date AS d, count(*) AS n FROM 'orders.csv' GROUP BY 1)",
    )


def test_cohorts_by_the_period_of_the_first_row(env: Env, expected: Expected) -> None:
    want = (
        "SELECT date_trunc('month', f), count(*) FROM (SELECT customer_id, min(order_date) AS f "
        "FROM 'orders.csv' GROUP BY 1) GROUP BY 1"
    )
    for text in (
        "Number of customers by the month of their first order in orders.csv (month as its first day) "
        "-> cohorts",
        "How many customers placed their very first order in each month, according to orders.csv? -> cohorts",
    ):
        assert_rows(draft(text, env.ctx), env, expected, want)


def test_keys_with_one_event_and_a_later_other(env: Env, expected: Expected) -> None:
    want = (
        "SELECT DISTINCT a.user_id FROM read_json_auto('events.ndjson') a WHERE a.event_type = 'signup' "
        "AND EXISTS "
        "(SELECT 1 FROM read_json_auto('events.ndjson') b WHERE b.user_id = a.user_id "
        "AND b.event_type = 'purchase' AND b.ts > a.ts)"
    )
    for text in (
        "The user_ids in events.ndjson that have a signup event followed later by a purchase event "
        "-> converted",
        "events.ndjson, distinct users who converted: a purchase event with a later timestamp than one of "
        "their signup events -> converted",
    ):
        d = draft(text, env.ctx)
        assert "sql" in d.pipeline["steps"][1]
        assert_rows(d, env, expected, want)


def test_percentiles_deviations_day_counts_and_buckets(env: Env, expected: Expected) -> None:
    d = draft("the 90th percentile of amount per status from orders.csv -> p90", env.ctx)
    assert_rows(d, env, expected, "SELECT status, quantile_cont(amount, 0.9) FROM 'orders.csv' GROUP BY 1")
    d = draft("standard deviation of price per category in products.csv -> sd", env.ctx)
    assert_rows(d, env, expected, "SELECT category, stddev_samp(price) FROM 'products.csv' GROUP BY 1")
    d = draft(
        "customers.csv with the number of days from signup_date to 2026-12-31 as a new column -> tenure",
        env.ctx,
    )
    assert_rows(
        d, env, expected, "SELECT *, date_diff('day', signup_date, DATE '2026-12-31') FROM 'customers.csv'"
    )
    d = draft("number of orders per amount bucket of 100 from orders.csv -> hist", env.ctx)
    assert_rows(d, env, expected, "SELECT floor(amount / 100) * 100, count(*) FROM 'orders.csv' GROUP BY 1")


def test_sorted_by_the_date_is_no_grouping_and_an_entity_by_its_key(env: Env, expected: Expected) -> None:
    d = draft("orders.csv orders over 100 sorted by date, newest first -> big", env.ctx)
    assert_rows(d, env, expected, "SELECT * FROM 'orders.csv' WHERE amount > 100")
    assert "ORDER BY order_date DESC" in d.pipeline["steps"][1]["sql"]
    d = draft("top 3 products by revenue from orders.csv and products.csv -> t3", env.ctx)
    assert_rows(
        d,
        env,
        expected,
        "SELECT product_id, sum(amount) FROM 'orders.csv' GROUP BY 1 ORDER BY 2 DESC LIMIT 3",
    )


def test_unique_entities_per_period_are_counted_and_offsets_and_with_clauses_ask(
    env: Env, expected: Expected, ctx: PlannerContext
) -> None:
    d = draft("events.ndjson unique users per day -> dau", env.ctx)
    assert_rows(
        d,
        env,
        expected,
        "SELECT CAST(ts AS DATE), count(DISTINCT user_id) FROM read_json_auto('events.ndjson') GROUP BY 1",
    )
    for text in (
        "orders.csv the second most expensive order -> o2",
        "customers.csv customers with gmail addresses -> gm",
    ):
        with pytest.raises(PlannerQuestion):
            RulesPlanner().draft(text, ctx)


def test_neither_nor_and_an_entity_left_out_of_a_total(
    env: Env, expected: Expected, ctx: PlannerContext
) -> None:
    d = draft("orders.csv orders whose status is neither shipped nor cancelled -> open", env.ctx)
    assert_rows(d, env, expected, "SELECT * FROM 'orders.csv' WHERE status NOT IN ('shipped', 'cancelled')")
    with pytest.raises(PlannerQuestion) as info:
        RulesPlanner().draft(
            "orders.csv customers and their total spend, but only for shipped orders -> ts", ctx
        )
    assert "per customers (customer_id)" in info.value.message


def test_an_entity_said_with_its_number_and_weeks_not_read(
    env: Env, expected: Expected, ctx: PlannerContext
) -> None:
    d = draft("orders.csv sum of amount for orders of product 7 -> p7", env.ctx)
    assert_rows(d, env, expected, "SELECT sum(amount) FROM 'orders.csv' WHERE product_id = 7")
    d = draft("orders.csv all orders except those from customer 5 -> x5", env.ctx)
    assert_rows(d, env, expected, "SELECT * FROM 'orders.csv' WHERE customer_id <> 5")
    with pytest.raises(PlannerQuestion):
        RulesPlanner().draft("orders.csv orders in the first week of March 2026 -> w1", ctx)


def test_period_words_before_a_money_word_and_counts_of_a_column_as_shares(
    env: Env, expected: Expected
) -> None:
    d = draft("orders.csv monthly revenue for 2025, months as numbers 1-12 -> mr", env.ctx)
    assert_rows(
        d,
        env,
        expected,
        "SELECT month(order_date), sum(amount) FROM 'orders.csv' WHERE year(order_date) = 2025 GROUP BY 1",
    )
    d = draft("orders.csv status counts as percentages of all orders -> pct", env.ctx)
    assert_rows(
        d,
        env,
        expected,
        "SELECT status, 100.0 * count(*) / sum(count(*)) OVER () FROM 'orders.csv' GROUP BY 1",
    )
    d = draft("number of customers per country from customers.csv -> by_country", env.ctx)
    assert_rows(
        d, env, expected, "SELECT country, count(DISTINCT customer_id) FROM 'customers.csv' GROUP BY country"
    )


def test_rows_ranked_within_each_period_and_two_rankings_ask(
    env: Env, expected: Expected, ctx: PlannerContext
) -> None:
    d = draft("orders.csv the 2 largest orders in each year -> y2", env.ctx)
    assert_rows(
        d,
        env,
        expected,
        "SELECT * EXCLUDE (r) FROM (SELECT *, row_number() OVER (PARTITION BY year(order_date) "
        "ORDER BY amount DESC) AS r FROM 'orders.csv') WHERE r <= 2",
    )
    with pytest.raises(PlannerQuestion):
        RulesPlanner().draft(
            "products.csv the cheapest and the most expensive product per category -> ce", ctx
        )
