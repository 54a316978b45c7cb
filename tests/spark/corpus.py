"""The golden corpus: transforms that must give the same rows on DuckDB and on Spark.

Every case is one or more steps over the demo workspace's sample data (extracts `orders`,
`customers`, `products`, `products_pq`, `late`); the last step of a case is loaded into the
warehouse table `c_<case>`. The corpus covers every transform op, and SQL that exercises the
translation fixes of `engine/spark_sql.py` (day numbering, rounding, casts, division by zero,
BY NAME unions, stars with EXCLUDE/REPLACE, QUALIFY, percentiles, ISO weekdays).

Ties are broken in every ranking and every "first" so that one right answer exists.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

BASE_STEPS: list[dict[str, Any]] = [
    {"id": "orders", "extract": {"path": "data/orders.csv"}},
    {"id": "customers", "extract": {"path": "data/customers.csv"}},
    {"id": "products", "extract": {"path": "data/products.csv"}},
    {"id": "products_pq", "extract": {"path": "data/products.parquet"}},
    {"id": "late", "extract": {"path": "data/orders_late.csv"}},
    {"id": "doubles", "extract": {"path": "data/doubles.csv"}},
]


def write_doubles(folder: Path, n: int = 3000) -> None:
    """Doubles that sit on decimal halves (2.675, -0.125) and random ones, for rounding."""
    rng = random.Random(7)
    ties = [362.45, 269.95, 0.285, 1.005, 2.675, 0.125, -0.125, -2.675, 1.5, 2.5, -2.5, 0.0, -0.0]
    values = ties + [round(rng.uniform(-1000, 1000), rng.randint(1, 4)) for _ in range(n)]
    values += [rng.uniform(-1e6, 1e6) for _ in range(n // 3)]
    (folder / "doubles.csv").write_text("id,x\n" + "".join(f"{i},{v!r}\n" for i, v in enumerate(values)))


def sql(text: str) -> list[dict[str, Any]]:
    return [{"sql": text}]


def op(kind: str, **body: Any) -> list[dict[str, Any]]:
    return [{kind: body}]


CASES: dict[str, list[dict[str, Any]]] = {
    # ---- the ops
    "filter_eq": op("filter", input="orders", where="status = 'shipped'"),
    "filter_or_not": op(
        "filter",
        input="orders",
        where="NOT (quantity > 3 OR amount < 10) AND status IN ('shipped', 'pending')",
    ),
    "filter_dates": op(
        "filter", input="orders", where="order_date BETWEEN DATE '2026-01-01' AND DATE '2026-03-31'"
    ),
    "filter_timestamp": op("filter", input="orders", where="updated_at >= TIMESTAMP '2026-06-01 00:00:00'"),
    "filter_like": op("filter", input="customers", where="name LIKE '%son%' OR email ILIKE 'A%'"),
    "filter_null": op("filter", input="customers", where="email IS NULL OR country IS NULL"),
    "select_columns": op("select", input="orders", columns=["order_id", "amount"]),
    "select_exclude": op("select", input="orders", exclude=["updated_at", "status"]),
    "rename": op("rename", input="customers", columns={"country": "country_code", "name": "customer_name"}),
    "cast_decimal": op("cast", input="orders", columns={"amount": "DECIMAL(12,2)", "order_id": "INTEGER"}),
    "cast_double_to_int": op("cast", input="orders", columns={"amount": "INTEGER"}),
    "cast_to_text": op("cast", input="orders", columns={"order_date": "VARCHAR", "quantity": "VARCHAR"}),
    "derive": op(
        "derive",
        input="customers",
        columns={
            "name": "trim(name)",
            "domain": "lower(split_part(email, '@', 2))",
            "initial": "left(trim(name), 1)",
        },
    ),
    "join_inner": op("join", left="orders", right="customers", on=["customer_id"]),
    "join_left": op("join", left="orders", right="products", on=["product_id"], how="left"),
    "join_full": op("join", left="customers", right="orders", on=["customer_id"], how="full"),
    "join_semi": op("join", left="customers", right="orders", on=["customer_id"], how="semi"),
    "join_anti": op("join", left="customers", right="orders", on=["customer_id"], how="anti"),
    "union_all": op("union", inputs=["orders", "late"]),
    "union_distinct": op("union", inputs=["products", "products_pq"], distinct=True),
    "union_positional": op("union", inputs=["orders", "late"], by_name=False),
    "aggregate": op(
        "aggregate",
        input="orders",
        group_by=["status"],
        measures={
            "n": "count(*)",
            "revenue": "sum(amount)",
            "mean": "avg(amount)",
            "lo": "min(amount)",
            "hi": "max(amount)",
            "buyers": "count(DISTINCT customer_id)",
        },
    ),
    "aggregate_conditional": op(
        "aggregate",
        input="orders",
        group_by=["customer_id"],
        measures={
            "big": "count(*) FILTER (WHERE amount > 500)",
            "shipped": "sum(CASE WHEN status = 'shipped' THEN amount ELSE 0 END)",
        },
    ),
    "aggregate_no_groups": op(
        "aggregate", input="orders", group_by=[], measures={"n": "count(*)", "total": "sum(quantity)"}
    ),
    "dedupe_latest": op(
        "dedupe", input="orders", keys=["customer_id"], order_by=["updated_at DESC", "order_id DESC"]
    ),
    "dedupe_rows": op("dedupe", input="late"),
    "sort_limit": [
        {"id": "sorted", "sort": {"input": "orders", "by": ["amount DESC", "order_id"]}},
        {"limit": {"input": "sorted", "n": 10}},
    ],
    "limit_offset": [
        {"id": "by_id", "sort": {"input": "customers", "by": ["customer_id"]}},
        {"limit": {"input": "by_id", "n": 5, "offset": 20}},
    ],
    "pivot": [
        {
            "id": "per_cat",
            "aggregate": {
                "input": "orders",
                "group_by": ["product_id", "status"],
                "measures": {"revenue": "sum(amount)"},
            },
        },
        {
            "pivot": {
                "input": "per_cat",
                "on": "status",
                "using": "sum(revenue)",
                "group_by": ["product_id"],
                "values": ["shipped", "pending", "cancelled", "returned"],
            }
        },
    ],
    "unpivot": [
        {"id": "wide", "sql": "SELECT product_id, price, price * 2 AS double_price FROM products"},
        {
            "unpivot": {
                "input": "wide",
                "columns": ["price", "double_price"],
                "name": "kind",
                "value": "value",
            }
        },
    ],
    # ---- SQL: grouping, joins, subqueries, set operations
    "sql_group_by_all": sql("SELECT status, count(DISTINCT customer_id) AS c FROM orders GROUP BY ALL"),
    "sql_having": sql("SELECT country, count(*) AS n FROM customers GROUP BY country HAVING count(*) > 100"),
    "sql_three_way_join": sql(
        "SELECT o.order_id, p.category, c.country FROM orders o JOIN products p USING (product_id) "
        "JOIN customers c USING (customer_id)"
    ),
    "sql_not_exists": sql(
        "SELECT c.customer_id FROM customers c WHERE NOT EXISTS "
        "(SELECT 1 FROM orders o WHERE o.customer_id = c.customer_id)"
    ),
    "sql_in_subquery": sql(
        "SELECT customer_id, name FROM customers WHERE customer_id IN (SELECT customer_id FROM orders WHERE amount > 900)"
    ),
    "sql_cte": sql(
        "WITH t AS (SELECT customer_id, sum(amount) AS s FROM orders GROUP BY 1) SELECT * FROM t WHERE s > 1000"
    ),
    "sql_derived_table": sql(
        "SELECT * FROM (SELECT customer_id, sum(amount) AS s FROM orders GROUP BY 1) AS t WHERE s > 2000"
    ),
    "sql_union": sql("SELECT status AS v FROM orders UNION SELECT country FROM customers"),
    "sql_except": sql("SELECT customer_id FROM customers EXCEPT SELECT customer_id FROM orders"),
    "sql_intersect": sql("SELECT customer_id FROM customers INTERSECT SELECT customer_id FROM orders"),
    "sql_union_by_name": sql(
        "SELECT order_id, amount FROM orders UNION ALL BY NAME SELECT amount, order_id, status AS note FROM late"
    ),
    "sql_rollup": sql("SELECT status, count(*) AS n FROM orders GROUP BY ROLLUP (status)"),
    "sql_distinct": sql("SELECT DISTINCT status, quantity FROM orders"),
    # ---- SQL: windows
    "sql_qualify_star": sql(
        "SELECT * FROM orders QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY updated_at DESC, order_id) = 1"
    ),
    "sql_rank": sql(
        "SELECT order_id, rank() OVER (PARTITION BY status ORDER BY amount DESC) AS r FROM orders"
    ),
    "sql_dense_rank": sql("SELECT order_id, dense_rank() OVER (ORDER BY quantity) AS r FROM orders"),
    "sql_running_total": sql(
        "SELECT order_id, sum(amount) OVER (PARTITION BY customer_id ORDER BY order_date, order_id "
        "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS running FROM orders"
    ),
    "sql_lag_lead": sql(
        "SELECT order_id, lag(amount) OVER (PARTITION BY customer_id ORDER BY order_id) AS prev, "
        "lead(amount, 2) OVER (PARTITION BY customer_id ORDER BY order_id) AS nxt FROM orders"
    ),
    "sql_moving_avg": sql(
        "SELECT order_id, avg(amount) OVER (ORDER BY order_id ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS ma FROM orders"
    ),
    "sql_ntile": sql("SELECT order_id, ntile(4) OVER (ORDER BY amount, order_id) AS quartile FROM orders"),
    "sql_first_value": sql(
        "SELECT order_id, first_value(amount) OVER (PARTITION BY customer_id ORDER BY order_id) AS f FROM orders"
    ),
    "sql_top_n_per_group": sql(
        "SELECT * FROM (SELECT status, order_id, amount, row_number() OVER (PARTITION BY status ORDER BY amount DESC, order_id) AS rn "
        "FROM orders) WHERE rn <= 3"
    ),
    # ---- SQL: dates and times
    "sql_date_trunc": sql(
        "SELECT date_trunc('month', order_date) AS m, sum(amount) AS s FROM orders GROUP BY 1"
    ),
    "sql_year_month": sql(
        "SELECT year(order_date) AS y, month(order_date) AS m, count(*) AS n FROM orders GROUP BY 1, 2"
    ),
    "sql_quarter": sql("SELECT extract(quarter FROM order_date) AS q, count(*) AS n FROM orders GROUP BY 1"),
    "sql_hour": sql("SELECT hour(updated_at) AS h, count(*) AS n FROM orders GROUP BY 1"),
    "sql_dayofweek": sql("SELECT dayofweek(order_date) AS d, count(*) AS n FROM orders GROUP BY 1"),
    "sql_isodow": sql("SELECT isodow(order_date) AS d, count(*) AS n FROM orders GROUP BY 1"),
    "sql_day_and_month_names": sql(
        "SELECT order_id, dayname(order_date) AS dn, monthname(order_date) AS mn FROM orders"
    ),
    "sql_date_plus_interval": sql("SELECT order_id, order_date + INTERVAL 7 DAY AS due FROM orders"),
    "sql_datediff": sql(
        "SELECT order_id, datediff('day', order_date, CAST(updated_at AS DATE)) AS lag_days FROM orders"
    ),
    "sql_strftime": sql("SELECT order_id, strftime(order_date, '%Y-%m') AS ym FROM orders"),
    "sql_date_casts": sql(
        "SELECT CAST(order_date AS VARCHAR) AS d, CAST(updated_at AS DATE) AS u FROM orders"
    ),
    "sql_last_day": sql("SELECT order_id, last_day(order_date) AS l FROM orders"),
    "sql_make_date": sql("SELECT order_id, make_date(2026, 1, 1) <= order_date AS this_year FROM orders"),
    # ---- SQL: text
    "sql_text_functions": sql(
        "SELECT upper(name) AS u, lower(email) AS l, trim(name) AS t, length(name) AS n FROM customers"
    ),
    "sql_substrings": sql(
        "SELECT substring(name, 1, 3) AS s, left(email, 4) AS l, right(email, 4) AS r FROM customers"
    ),
    "sql_concat": sql("SELECT concat(name, ' <', email, '>') AS c, name || '!' AS d FROM customers"),
    "sql_split_part": sql(
        "SELECT split_part(email, '@', 2) AS domain, count(*) AS n FROM customers GROUP BY 1"
    ),
    "sql_regexp_matches": sql("SELECT name FROM customers WHERE regexp_matches(email, '^[a-c]')"),
    "sql_regexp_replace_all": sql("SELECT regexp_replace(name, '[aeiou]', '_', 'g') AS r FROM customers"),
    "sql_regexp_extract": sql("SELECT regexp_extract(email, '@(.*)$', 1) AS d FROM customers"),
    "sql_replace": sql("SELECT replace(email, 'example', 'ex') AS e FROM customers"),
    "sql_string_agg": sql(
        "SELECT status, string_agg(DISTINCT CAST(quantity AS VARCHAR), ',' ORDER BY CAST(quantity AS VARCHAR)) AS qs "
        "FROM orders GROUP BY status"
    ),
    "sql_starts_contains": sql(
        "SELECT order_id, starts_with(status, 'ship') AS s, contains(status, 'end') AS c FROM orders"
    ),
    "sql_md5": sql("SELECT customer_id, md5(email) AS h FROM customers"),
    # ---- SQL: numbers and logic
    "sql_case": sql(
        "SELECT order_id, CASE WHEN amount > 500 THEN 'big' WHEN amount > 100 THEN 'mid' ELSE 'small' END AS size FROM orders"
    ),
    "sql_if_coalesce_nullif": sql(
        "SELECT order_id, if(amount > 500, 'big', 'small') AS size, coalesce(country, 'unknown') AS c, "
        "nullif(status, 'pending') AS s FROM orders JOIN customers USING (customer_id)"
    ),
    "sql_round": sql(
        "SELECT round(amount, 1) AS r, floor(amount) AS f, ceil(amount) AS c, abs(amount - 300) AS d FROM orders"
    ),
    "sql_round_halves": sql(
        "SELECT id, round(x) AS r0, round(x, 1) AS r1, round(x, 2) AS r2, round(x, 3) AS r3 FROM doubles"
    ),
    "sql_round_decimal": sql("SELECT round(CAST(amount AS DECIMAL(12, 2)), 1) AS r FROM orders"),
    "sql_division": sql(
        "SELECT order_id, amount / quantity AS unit, quantity // 2 AS half, quantity % 2 AS odd FROM orders"
    ),
    "sql_division_by_zero": sql(
        "SELECT order_id, quantity / (quantity - quantity) AS inf, (quantity - quantity) / (quantity - quantity) AS nan, "
        "-quantity / 0 AS minus_inf FROM orders"
    ),
    "sql_math": sql(
        "SELECT order_id, ln(amount) AS l, sqrt(amount) AS s, power(amount, 2) AS p, greatest(amount, 100) AS g FROM orders"
    ),
    "sql_median_percentile": sql(
        "SELECT status, median(amount) AS med, quantile_cont(amount, 0.9) AS p90 FROM orders GROUP BY status"
    ),
    "sql_stddev_var": sql(
        "SELECT status, stddev_samp(amount) AS sd, var_samp(amount) AS v FROM orders GROUP BY status"
    ),
    "sql_bool_aggregates": sql(
        "SELECT status, bool_or(amount > 900) AS any_big, bool_and(quantity > 0) AS all_pos FROM orders GROUP BY status"
    ),
    "sql_count_nulls": sql(
        "SELECT count(*) AS n, count(email) AS e, count(*) - count(email) AS missing FROM customers"
    ),
    "sql_arg_max": sql(
        "SELECT customer_id, arg_max(order_id, updated_at) AS latest FROM orders GROUP BY customer_id"
    ),
    "sql_more_functions": sql(
        "SELECT customer_id, initcap(lower(name)) AS i, strpos(email, '@') AS at, concat_ws('-', country, name) AS cw, "
        "dayofmonth(signup_date) AS dm, dayofyear(signup_date) AS dy, week(signup_date) AS w, minute(updated_at) AS mi, "
        "second(updated_at) AS se, signup_date - INTERVAL 3 DAY AS minus3, sign(customer_id - 500) AS sg, "
        "exp(customer_id / 1000) AS e, log(customer_id) AS lg FROM customers"
    ),
    "sql_more_aggregates": sql(
        "SELECT status, count_if(amount > 100) AS ci, stddev_pop(amount) AS sp, var_pop(amount) AS vp, "
        "corr(amount, quantity) AS r, covar_samp(amount, quantity) AS cs, covar_pop(amount, quantity) AS cp, "
        "arg_min(order_id, amount * 10000 + order_id) AS cheapest, max(log(2, amount)) AS lg2 FROM orders GROUP BY status"
    ),
    "sql_more_windows": sql(
        "SELECT order_id, cume_dist() OVER (ORDER BY amount, order_id) AS cd, last_value(amount) OVER "
        "(PARTITION BY customer_id ORDER BY order_id ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS lv, "
        "percent_rank() OVER (ORDER BY amount, order_id) AS pr FROM orders"
    ),
    "sql_star_exclude": sql("SELECT * EXCLUDE (updated_at) FROM orders"),
    "sql_star_replace": sql("SELECT * REPLACE (amount * 2 AS amount) FROM orders"),
    "sql_unaliased": sql("SELECT status, count(*), sum(amount) FROM orders GROUP BY status"),
}

# What Spark would answer differently and no rewrite fixes: refused when the pipeline is validated.
REFUSED: dict[str, tuple[str, str]] = {
    "regexp_first_match": ("SELECT regexp_replace(name, '[aeiou]', '_') AS r FROM customers", "first match"),
    "ordered_list": (
        "SELECT status, list(order_id ORDER BY order_id) AS ids FROM orders GROUP BY status",
        "ArrayAgg",
    ),
    "epoch": ("SELECT order_id, epoch(updated_at) AS e FROM orders", "TimeToUnix"),
    "dow_part": ("SELECT extract(dow FROM order_date) AS d FROM orders", "date part"),
    "unknown_function": (
        "SELECT order_id, jaro_winkler_similarity(status, 'shipped') AS s FROM orders",
        "jaro",
    ),
}


# The same, for an op: a pivot whose columns come from the data is DuckDB's own PIVOT statement.
REFUSED_STEPS: dict[str, tuple[dict[str, Any], str]] = {
    "data_pivot": (
        {"pivot": {"input": "orders", "on": "status", "using": "sum(amount)", "group_by": ["customer_id"]}},
        "values",
    ),
}


def pipeline(cases: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """One pipeline holding every case: the base extracts, each case's steps, a load per case."""
    steps: list[dict[str, Any]] = [dict(s) for s in BASE_STEPS]
    for name, case_steps in cases.items():
        for i, step in enumerate(case_steps):
            step = dict(step)
            last = i == len(case_steps) - 1
            step["id"] = f"c_{name}" if last else f"c_{name}__{step.get('id', i)}"
            renamed = {s.get("id", j): f"c_{name}__{s.get('id', j)}" for j, s in enumerate(case_steps[:i])}
            steps.append(_rename_inputs(step, renamed))
        steps.append(
            {"id": f"load_{name}", "load": {"input": f"c_{name}", "table": f"c_{name}", "mode": "replace"}}
        )
    return {"name": "spark_corpus", "steps": steps}


def _rename_inputs(step: dict[str, Any], renamed: dict[Any, str]) -> dict[str, Any]:
    """A case's later step names the case's earlier steps by their short ids; give it the full ones."""
    for kind, body in step.items():
        if kind == "id" or not isinstance(body, dict):
            continue
        body = dict(body)
        for key in ("input", "left", "right"):
            if body.get(key) in renamed:
                body[key] = renamed[body[key]]
        if "inputs" in body:
            body["inputs"] = [renamed.get(x, x) for x in body["inputs"]]
        step[kind] = body
    return step
