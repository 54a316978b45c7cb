"""The rules planner on paraphrases of the evaluation prompts that are NOT in cases.yaml.

`RulesPlanner().draft(request, ctx)` runs over a PlannerContext built by `build_context` on a
workspace holding a copy of the eval data (and, published, the `orders` table). The assertions
are about meaning, not YAML text: which step kinds appear, what the load does, which rows a filter
keeps (evaluated with DuckDB over the same files), what an aggregate groups by and computes.

A paraphrase the planner gets wrong is marked xfail(strict=True, reason="planner: ...").
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlglot

from queryforge.planner.catalog import build_context
from queryforge.planner.context import PlannerContext
from queryforge.planner.rules import Draft, PlannerQuestion, RulesPlanner
from queryforge.sql.safety import check_expression
from queryforge.workspace import Workspace

EVAL_DATA = Path(__file__).resolve().parents[1] / "fixtures" / "planner_eval" / "data"
STEP_KINDS = {
    "extract",
    "filter",
    "select",
    "rename",
    "derive",
    "dedupe",
    "join",
    "union",
    "aggregate",
    "sort",
    "limit",
    "check",
    "load",
    "sql",
    "pivot",
}


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlannerContext]:
    """The eval data in data/, and the orders published as the warehouse table `orders`."""
    root = tmp_path_factory.mktemp("planner") / "ws"
    with Workspace.init(root, bare=True) as ws:
        for f in EVAL_DATA.iterdir():
            shutil.copy(f, root / "data" / f.name)
        outcome = ws.ask("Load data/orders.csv into orders", consent=lambda _: True, provider="rules")
        assert outcome.status == "succeeded", outcome.error
        conns = ws.connections()
        try:
            yield build_context(conns, ws.root)
        finally:
            conns.close()


def draft(request: str, ctx: PlannerContext) -> Draft:
    return RulesPlanner().draft(request, ctx)


def kinds(d: Draft) -> list[str]:
    out = []
    for step in d.pipeline["steps"]:
        kind = [k for k in step if k != "id"]
        assert len(kind) == 1 and kind[0] in STEP_KINDS, step
        out.append(kind[0])
    return out


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


def norm(expr: str) -> str:
    return sqlglot.parse_one(expr, read="duckdb").sql(dialect="duckdb").lower()


def measures(d: Draft) -> Counter[str]:
    """The aggregate's measure expressions, normalised, ignoring their names."""
    return Counter(norm(e) for e in only(d, "aggregate")["measures"].values())


def kept_rows(file: str, where: str) -> Counter[tuple[Any, ...]]:
    with closing(duckdb.connect()) as con:
        rows = con.execute(f"SELECT * FROM read_csv_auto('{EVAL_DATA / file}') WHERE {where}").fetchall()
    return Counter(rows)


def assert_filter(d: Draft, file: str, expected: str) -> None:
    """The drafted filter keeps exactly the rows `expected` keeps, over the eval file."""
    where = only(d, "filter")["where"]
    check_expression(where)
    got, want = kept_rows(file, where), kept_rows(file, expected)
    assert want, "the expected filter should keep some rows"
    assert got == want, f"filter {where!r} keeps {sum(got.values())} rows, want {sum(want.values())}"


def assert_plain_load(d: Draft, path: str, table: str, mode: str = "replace") -> None:
    assert [e.get("path") for e in extracts(d)] == [path]
    body = load(d)
    assert body["table"] == table
    assert body["mode"] == mode


# ---------------------------------------------------------------- loading, targets, formats


def test_get_parquet_into_a_copy(ctx: PlannerContext) -> None:
    d = draft("Get products.parquet into products_copy", ctx)
    assert kinds(d) == ["extract", "load"]
    assert_plain_load(d, "data/products.parquet", "products_copy")


def test_bring_parquet_into_a_table_called(ctx: PlannerContext) -> None:
    d = draft("Bring products.parquet into a table called products_copy", ctx)
    assert kinds(d) == ["extract", "load"]
    assert_plain_load(d, "data/products.parquet", "products_copy")


def test_put_csv_in_a_table_named(ctx: PlannerContext) -> None:
    d = draft("Put customers.csv in a table named customers_copy", ctx)
    assert kinds(d) == ["extract", "load"]
    assert_plain_load(d, "data/customers.csv", "customers_copy")


def test_import_ndjson_under_another_name(ctx: PlannerContext) -> None:
    d = draft("Import events.ndjson into event_log", ctx)
    assert kinds(d) == ["extract", "load"]
    assert_plain_load(d, "data/events.ndjson", "event_log")


def test_table_of_a_sqlite_file(ctx: PlannerContext) -> None:
    d = draft("Bring the accounts table from data/legacy.sqlite into legacy_accounts", ctx)
    assert kinds(d) == ["extract", "load"]
    assert extracts(d) == [{"path": "data/legacy.sqlite", "table": "accounts"}]
    assert load(d)["table"] == "legacy_accounts"


def test_misspelt_file_is_matched_and_noted(ctx: PlannerContext) -> None:
    d = draft("Load custmers.csv into customers_typo", ctx)
    assert_plain_load(d, "data/customers.csv", "customers_typo")
    assert any("customers.csv" in n for n in d.notes)


def test_warehouse_table_as_source(ctx: PlannerContext) -> None:
    d = draft("Copy the orders table into orders_backup", ctx)
    assert kinds(d) == ["extract", "load"]
    assert extracts(d) == [{"connection": "warehouse", "table": "orders"}]
    assert load(d)["table"] == "orders_backup"


# ---------------------------------------------------------------- filters


def test_copy_only_shipped_orders_to(ctx: PlannerContext) -> None:
    d = draft("Copy only shipped orders from orders.csv to shipped", ctx)
    assert_filter(d, "orders.csv", "status = 'shipped'")
    assert load(d)["table"] == "shipped"


def test_where_country_is(ctx: PlannerContext) -> None:
    d = draft("Import customers.csv into fr_customers where country is FR", ctx)
    assert kinds(d) == ["extract", "filter", "load"]
    assert_filter(d, "customers.csv", "country = 'FR'")
    assert load(d)["table"] == "fr_customers"


def test_keep_orders_over_in(ctx: PlannerContext) -> None:
    d = draft("Keep orders over 250 from orders.csv in big", ctx)
    assert_filter(d, "orders.csv", "amount > 250")
    assert load(d)["table"] == "big"


def test_amount_above(ctx: PlannerContext) -> None:
    d = draft("Import orders.csv into pricey_orders keeping orders with amount above 350", ctx)
    assert_filter(d, "orders.csv", "amount > 350")
    assert load(d)["table"] == "pricey_orders"


def test_price_at_least(ctx: PlannerContext) -> None:
    d = draft("Load products.csv into pricey_products keeping products with price at least 100", ctx)
    assert_filter(d, "products.csv", "price >= 100")


def test_amount_between(ctx: PlannerContext) -> None:
    d = draft("Load orders.csv into mid_orders where amount is between 100 and 200", ctx)
    assert_filter(d, "orders.csv", "amount BETWEEN 100 AND 200")


def test_bare_status_value(ctx: PlannerContext) -> None:
    d = draft("Load orders.csv into open_orders with status pending", ctx)
    assert_filter(d, "orders.csv", "status = 'pending'")


def test_status_one_of_two(ctx: PlannerContext) -> None:
    d = draft("Import the orders with status shipped or pending from orders.csv into active_orders", ctx)
    assert_filter(d, "orders.csv", "status IN ('shipped', 'pending')")
    assert load(d)["table"] == "active_orders"


def test_excluding_a_status(ctx: PlannerContext) -> None:
    d = draft("Load orders.csv into orders_not_shipped excluding rows where status is shipped", ctx)
    assert_filter(d, "orders.csv", "status <> 'shipped'")


def test_excluding_a_country(ctx: PlannerContext) -> None:
    d = draft("Load customers.csv into non_de_customers excluding customers whose country is DE", ctx)
    assert_filter(d, "customers.csv", "country <> 'DE'")


def test_placed_in_a_year(ctx: PlannerContext) -> None:
    d = draft("Load orders from orders.csv placed in 2025 into orders_2025_only", ctx)
    assert_filter(d, "orders.csv", "year(order_date) = 2025")
    assert load(d)["table"] == "orders_2025_only"


def test_status_and_year_combined(ctx: PlannerContext) -> None:
    d = draft("Load orders.csv into orders_pending_2026 with status pending placed in 2026", ctx)
    assert_filter(d, "orders.csv", "status = 'pending' AND year(order_date) = 2026")


def test_removing_rows_with_empty_email(ctx: PlannerContext) -> None:
    d = draft("Import customers.csv into customers_nonempty, removing rows where email is empty", ctx)
    assert_filter(d, "customers.csv", "email IS NOT NULL AND email <> ''")


def test_sql_condition_over_a_warehouse_table(ctx: PlannerContext) -> None:
    d = draft("Build big_shipped from the orders table where amount > 300 and status = 'shipped'", ctx)
    assert extracts(d) == [{"connection": "warehouse", "table": "orders"}]
    assert_filter(d, "orders.csv", "amount > 300 AND status = 'shipped'")
    assert load(d)["table"] == "big_shipped"


# ---------------------------------------------------------------- columns, rows


def test_just_some_columns(ctx: PlannerContext) -> None:
    d = draft(
        "Load just the customer_id, name and country columns from customers.csv into customer_names", ctx
    )
    assert only(d, "select")["columns"] == ["customer_id", "name", "country"]
    assert load(d)["table"] == "customer_names"


def test_dropping_a_column(ctx: PlannerContext) -> None:
    d = draft("Load orders.csv into orders_no_date, dropping the column order_date", ctx)
    assert only(d, "select").get("exclude") == ["order_date"]


def test_renaming_a_column(ctx: PlannerContext) -> None:
    d = draft("Load products.csv into products_renamed, renaming the column price to unit_price", ctx)
    assert only(d, "rename")["columns"] == {"price": "unit_price"}


def test_adding_a_derived_column(ctx: PlannerContext) -> None:
    d = draft(
        "Load orders.csv into orders_tax adding a column amount_with_tax equal to amount times 1.2", ctx
    )
    columns = only(d, "derive")["columns"]
    assert list(columns) == ["amount_with_tax"]
    assert norm(columns["amount_with_tax"]) == norm("amount * 1.2")


def test_removing_duplicates_by_key(ctx: PlannerContext) -> None:
    d = draft("Load orders.csv into orders_dedup, removing duplicates by order_id", ctx)
    assert only(d, "dedupe").get("keys") == ["order_id"]


def test_stacking_two_files(ctx: PlannerContext) -> None:
    d = draft("Stack orders_2025.csv and orders_2026.csv together into orders_all", ctx)
    assert sorted(e["path"] for e in extracts(d)) == ["data/orders_2025.csv", "data/orders_2026.csv"]
    assert len(only(d, "union")["inputs"]) == 2
    assert "join" not in kinds(d)
    assert load(d)["table"] == "orders_all"


def test_join_on_a_named_key(ctx: PlannerContext) -> None:
    d = draft("Load orders.csv and products.csv joined on product_id into orders_products", ctx)
    join = only(d, "join")
    assert join["on"] == ["product_id"]
    assert join.get("how", "inner") == "inner"
    assert load(d)["table"] == "orders_products"


def test_smallest_n(ctx: PlannerContext) -> None:
    d = draft("Put the 3 smallest orders by amount from orders.csv into smallest_orders", ctx)
    assert [norm(b) for b in only(d, "sort")["by"]] == [norm("amount ASC")]
    assert only(d, "limit")["n"] == 3
    assert kinds(d).index("sort") < kinds(d).index("limit")


def test_most_recent_n(ctx: PlannerContext) -> None:
    d = draft("Load the 10 most recent orders from orders.csv into latest_orders", ctx)
    assert [norm(b) for b in only(d, "sort")["by"]] == [norm("order_date DESC")]
    assert only(d, "limit")["n"] == 10


# ---------------------------------------------------------------- aggregates


def test_number_of_orders_per_status(ctx: PlannerContext) -> None:
    d = draft("Load orders.csv into status_counts with the number of orders per status", ctx)
    agg = only(d, "aggregate")
    assert agg["group_by"] == ["status"]
    assert measures(d) == Counter([norm("count(*)")])
    assert load(d)["table"] == "status_counts"


def test_how_many_per_status_save_as(ctx: PlannerContext) -> None:
    d = draft("How many orders per status? Save it as status_counts from orders.csv", ctx)
    assert only(d, "aggregate")["group_by"] == ["status"]
    assert measures(d) == Counter([norm("count(*)")])
    assert load(d)["table"] == "status_counts"


def test_total_amount_per_status(ctx: PlannerContext) -> None:
    d = draft("Total amount per status from orders.csv into amount_by_status", ctx)
    assert only(d, "aggregate")["group_by"] == ["status"]
    assert measures(d) == Counter([norm("sum(amount)")])


def test_average_price_per_category(ctx: PlannerContext) -> None:
    d = draft("Average price per category from products.csv into avg_price", ctx)
    assert only(d, "aggregate")["group_by"] == ["category"]
    assert measures(d) == Counter([norm("avg(price)")])


def test_maximum_per_status(ctx: PlannerContext) -> None:
    d = draft("Maximum amount per status from orders.csv into max_amount", ctx)
    assert only(d, "aggregate")["group_by"] == ["status"]
    assert measures(d) == Counter([norm("max(amount)")])


def test_distinct_products_per_status(ctx: PlannerContext) -> None:
    d = draft("Number of distinct products per status from orders.csv into products_per_status", ctx)
    assert only(d, "aggregate")["group_by"] == ["status"]
    assert measures(d) == Counter([norm("count(DISTINCT product_id)")])


@pytest.mark.parametrize(
    "request_text",
    [
        "Sum of amount per customer_id from orders.csv into spend_per_customer",
        "Count the orders per customer from orders.csv into orders_per_customer",
    ],
    ids=["sum-per-customer-id", "count-per-customer"],
)
def test_per_numeric_key(ctx: PlannerContext, request_text: str) -> None:
    d = draft(request_text, ctx)
    assert only(d, "aggregate")["group_by"] == ["customer_id"]


def test_count_per_month(ctx: PlannerContext) -> None:
    d = draft("Count orders per month from orders.csv into monthly_counts", ctx)
    assert kinds(d) == ["extract", "derive", "aggregate", "load"]
    (name, expr), *_ = only(d, "derive")["columns"].items()
    assert norm(expr) == norm("date_trunc('month', order_date)")
    assert only(d, "aggregate")["group_by"] == [name]
    assert measures(d) == Counter([norm("count(*)")])


def test_total_per_status_from_a_warehouse_table(ctx: PlannerContext) -> None:
    d = draft("Create status_totals from the orders table with the total amount per status", ctx)
    assert extracts(d) == [{"connection": "warehouse", "table": "orders"}]
    assert only(d, "aggregate")["group_by"] == ["status"]
    assert measures(d) == Counter([norm("sum(amount)")])
    assert load(d)["table"] == "status_totals"


def test_top_customers_by_spend(ctx: PlannerContext) -> None:
    d = draft("Top 3 customers by total amount from orders.csv into best_customers", ctx)
    agg = only(d, "aggregate")
    assert agg["group_by"] == ["customer_id"]
    assert measures(d) == Counter([norm("sum(amount)")])
    (by,) = only(d, "sort")["by"]
    assert by.split()[-1].upper() == "DESC"
    assert by.split()[0] in agg["measures"]
    assert only(d, "limit")["n"] == 3


# ---------------------------------------------------------------- load modes, checks, questions


@pytest.mark.parametrize(
    "request_text",
    [
        "Merge orders_updates.csv into orders by order_id",
        "Upsert orders_updates.csv into the orders table keyed by order_id",
    ],
)
def test_merge_on_a_key(ctx: PlannerContext, request_text: str) -> None:
    d = draft(request_text, ctx)
    assert kinds(d) == ["extract", "load"]
    assert_plain_load(d, "data/orders_updates.csv", "orders", mode="merge")
    assert load(d)["keys"] == ["order_id"]


def test_append_to_a_table(ctx: PlannerContext) -> None:
    d = draft("Append orders_2026.csv to the hist table", ctx)
    assert_plain_load(d, "data/orders_2026.csv", "hist", mode="append")


def test_checks_are_added_not_filters(ctx: PlannerContext) -> None:
    d = draft(
        "Load customers.csv into customers_clean and make sure customer_id is never null, "
        "email is never empty",
        ctx,
    )
    assert "filter" not in kinds(d)
    rules = only(d, "check")["rules"]
    assert {"not_null": ["customer_id"]} in rules
    assert {"not_empty": ["email"]} in rules
    assert load(d)["table"] == "customers_clean"


def test_positive_check(ctx: PlannerContext) -> None:
    d = draft("Load products.csv into products_ok and ensure price is positive", ctx)
    (rule,) = only(d, "check")["rules"]
    assert rule["range"]["column"] == "price"
    assert rule["range"]["min"] == 0


@pytest.mark.parametrize(
    "request_text",
    ["Load it into the table", "Put the data somewhere useful", "Merge orders_updates.csv into orders"],
    ids=["no-source", "no-source-no-target", "merge-without-key"],
)
def test_ambiguity_is_a_question(ctx: PlannerContext, request_text: str) -> None:
    with pytest.raises(PlannerQuestion) as info:
        draft(request_text, ctx)
    assert info.value.message.endswith("?")
    assert info.value.hint


def test_drafts_are_deterministic(ctx: PlannerContext) -> None:
    request = "Import the orders with status shipped or pending from orders.csv into active_orders"
    assert draft(request, ctx).pipeline == draft(request, ctx).pipeline
