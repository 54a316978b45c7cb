"""The allow-list's own rules: name normalisation, per-dialect lists, scopes, limits, one gate."""

from __future__ import annotations

import pytest
import sqlglot
from sqlglot import exp

from queryforge.sql.generators import lateral_rows
from queryforge.sql.parse import SqlProblem, parse_expression, parse_order, parse_select, table_references
from queryforge.sql.policy import MAX_SQL_CHARS, MAX_TREE_DEPTH, UnsafeSql, function_names, typed_functions
from queryforge.sql.safety import check_query

TABLES = {"orders", "customers", "main.orders"}


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT \"load_file\"('/etc/hostname')",
        "SELECT LOAD_FILE('/etc/hostname')",
        "SELECT \"LoAd_FiLe\"('/etc/hostname')",
        "SELECT pg_catalog.load_file('/etc/hostname')",
        "SELECT '/etc/hostname'.load_file()",
    ],
)
def test_spelling_never_changes_the_verdict(sql: str) -> None:
    with pytest.raises(UnsafeSql, match=r"load_file\(\) is not on the allow-list"):
        check_query(sql, dialect="mysql")


def test_pg_catalog_qualification_is_normalised_not_trusted() -> None:
    assert check_query(
        "SELECT pg_catalog.lower(name) FROM customers", dialect="postgres", allowed_tables=TABLES
    )
    with pytest.raises(UnsafeSql, match="pg_read_file"):
        check_query("SELECT pg_catalog.pg_read_file('x')", dialect="postgres")


@pytest.mark.parametrize("schema", ["public", "evil", '"PUBLIC"', "dblink"])
def test_a_function_in_any_other_schema_is_somebody_elses_code(schema: str) -> None:
    with pytest.raises(UnsafeSql, match="schema-qualified function"):
        check_query(f"SELECT {schema}.lower(name) FROM customers", dialect="postgres")


@pytest.mark.parametrize(
    ("sql", "allowed_on", "refused_on"),
    [
        ("SELECT hash(name) FROM customers", "duckdb", "postgres"),
        ("SELECT age(order_date) FROM orders", "postgres", "sqlite"),
        ("SELECT date_format(order_date, '%Y') FROM orders", "mysql", "sqlite"),
        ("SELECT julianday(order_date) FROM orders", "sqlite", "postgres"),
    ],
)
def test_unknown_names_are_checked_against_the_dialect_that_runs_them(
    sql: str, allowed_on: str, refused_on: str
) -> None:
    check_query(sql, dialect=allowed_on, allowed_tables=TABLES)
    with pytest.raises(UnsafeSql, match=f"allow-list for {refused_on}"):
        check_query(sql, dialect=refused_on, allowed_tables=TABLES)


def test_a_near_miss_gets_the_nearest_allowed_name() -> None:
    with pytest.raises(UnsafeSql, match=r"did you mean length\(\)\?"):
        check_query("SELECT lenght(name) FROM customers", allowed_tables=TABLES)


def test_the_lists_leave_out_every_function_of_the_reproduced_attacks() -> None:
    forbidden = {
        "dblink",
        "dblink_exec",
        "dblink_connect",
        "query_to_xml",
        "table_to_xml",
        "database_to_xml",
        "load_file",
        "sleep",
        "sleep_ms",
        "pg_sleep",
        "benchmark",
        "get_lock",
        "current_setting",
        "set_config",
        "getenv",
        "read_csv",
        "read_text",
        "glob",
        "nextval",
        "setval",
        "lo_import",
        "lo_export",
        "pg_read_file",
        "version",
        "json_execute_serialized_sql",
        "query",
    }
    for dialect in ("duckdb", "postgres", "mysql", "sqlite"):
        # SQLite's glob(pattern, text) matches a string; DuckDB's glob(pattern) lists files
        assert not (forbidden - ({"glob"} if dialect == "sqlite" else set())) & function_names(dialect), (
            dialect
        )
    assert not {"ReadCSV", "ReadParquet", "CurrentUser", "CurrentVersion", "NextValueFor"} & typed_functions()


def test_a_cte_hides_only_unqualified_references() -> None:
    query = parse_select("WITH orders AS (SELECT 1 AS x) SELECT * FROM orders, other.orders")
    assert table_references(query) == ["other.orders"]
    with pytest.raises(UnsafeSql, match=r"unknown table 'other\.orders'"):
        check_query("WITH orders AS (SELECT 1 AS x) SELECT * FROM other.orders", allowed_tables=TABLES)


def test_cte_visibility_follows_sql_scoping() -> None:
    # a later CTE sees an earlier one; an earlier one does not see a later one; RECURSIVE sees itself
    later = parse_select("WITH a AS (SELECT 1 AS x), b AS (SELECT * FROM a) SELECT * FROM b")
    assert table_references(later) == []
    earlier = parse_select("WITH a AS (SELECT * FROM b), b AS (SELECT 1 AS x) SELECT * FROM a")
    assert table_references(earlier) == ["b"]
    recursive = parse_select(
        "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 3) SELECT * FROM s"
    )
    assert table_references(recursive) == []
    plain = parse_select("WITH s AS (SELECT * FROM s) SELECT * FROM s")
    assert table_references(plain) == ["s"]


def test_qualified_names_must_be_known_as_such() -> None:
    assert check_query("SELECT * FROM main.orders", allowed_tables=TABLES)
    with pytest.raises(UnsafeSql, match=r"unknown table 'warehouse\.main\.orders'"):
        check_query("SELECT * FROM warehouse.main.orders", allowed_tables=TABLES)


def test_values_is_a_query() -> None:
    assert check_query("VALUES (1, 'a'), (2, 'b')").sql("duckdb").startswith("SELECT * FROM (VALUES")


def test_size_and_depth_are_clear_errors_not_crashes() -> None:
    with pytest.raises(SqlProblem, match="characters long"):
        parse_select("SELECT " + "1 + " * (MAX_SQL_CHARS // 4) + "1")
    with pytest.raises(SqlProblem, match="nested"):
        parse_select("SELECT " + "(" * (MAX_TREE_DEPTH + 50) + "1" + ")" * (MAX_TREE_DEPTH + 50))
    with pytest.raises(SqlProblem):
        parse_expression("(" * 5000 + "1" + ")" * 5000)


def test_expressions_and_sort_terms_read_no_tables() -> None:
    parse_expression("amount > 10 AND status IN ('a', 'b')")
    with pytest.raises(UnsafeSql, match="unknown table"):
        parse_expression("order_id IN (SELECT order_id FROM orders)")
    assert [t.sql("duckdb") for t in parse_order("amount DESC, lower(name)")] == [
        "amount DESC",
        "LOWER(name)",
    ]
    for bad in ("amount LIMIT 1", "amount; DROP TABLE orders", "(SELECT 1 FROM orders)", "sleep_ms(10)"):
        with pytest.raises(SqlProblem):
            parse_order(bad)


def test_sql_the_generator_cannot_write_is_a_clear_refusal_not_a_crash() -> None:
    with pytest.raises(SqlProblem):
        check_query("SELECT datetime('now') AS d FROM orders", allowed_tables=TABLES)


@pytest.mark.parametrize("dialect", ["duckdb", "postgres", "mysql", "sqlite"])
def test_what_is_sent_is_vetted_too(dialect: str) -> None:
    """A raw word hiding SQL is refused, and the written text of an allowed query passes again."""
    with pytest.raises(UnsafeSql, match="not a plain name"):
        hidden = 'SELECT EXTRACT("epoch FROM now()), sleep_ms(1), extract(epoch" FROM now())'
        check_query(hidden, dialect=dialect)
    query = check_query(
        "SELECT status, count(*) FROM orders GROUP BY status", dialect=dialect, allowed_tables=TABLES
    )
    assert "COUNT(*)" in query.sql(dialect=dialect)


# ---------------------------------------------------------------- method calls and row generators


@pytest.mark.parametrize(
    ("sql", "sent"),
    [
        ("SELECT name.lower() FROM customers", "SELECT LOWER(name) FROM customers"),
        ("SELECT c.name.upper() FROM customers AS c", "SELECT UPPER(c.name) FROM customers AS c"),
        ("SELECT name.lower().upper() FROM customers", "SELECT UPPER(LOWER(name)) FROM customers"),
        ("SELECT 'abc'.upper()", "SELECT UPPER('abc')"),
        ("SELECT name.trim('x') FROM customers", "SELECT TRIM(name, 'x') FROM customers"),
        ("SELECT (name || 'x').length() FROM customers", "SELECT LENGTH((name || 'x')) FROM customers"),
    ],
)
def test_a_method_call_is_the_function_call_it_means(sql: str, sent: str) -> None:
    """What is checked and what is sent is the plain call: a schema function of the same name
    (DuckDB prefers `s.upper(x)` of schema `s` when it exists) can never run instead."""
    assert check_query(sql, allowed_tables=TABLES).sql("duckdb") == sent


@pytest.mark.parametrize(
    ("sql", "refusal"),
    [
        ("SELECT '/etc/passwd'.read_text()", r"read_text\(\) is not on the allow-list"),
        ("SELECT p.read_csv() FROM customers", r"read_csv\(\) is not allowed"),
        ("SELECT name.getenv() FROM customers", r"getenv\(\) is not on the allow-list"),
        ('SELECT name."load_file"() FROM customers', r"load_file\(\) is not on the allow-list"),
        ("SELECT name.lower().sleep_ms() FROM customers", r"sleep_ms\(\) is not on the allow-list"),
        # lower() takes one argument: `evil.lower(name)` can only be evil's own lower()
        ("SELECT evil.lower(name) FROM customers", "schema-qualified function"),
        ("SELECT mydb.public.upper('a') FROM customers", "schema-qualified function"),
    ],
)
def test_method_calls_are_checked_against_the_same_list(sql: str, refusal: str) -> None:
    with pytest.raises(UnsafeSql, match=refusal):
        check_query(sql, allowed_tables=TABLES)


def test_method_calls_in_expressions_and_sort_terms() -> None:
    assert parse_expression("name.lower() = 'x'").sql("duckdb") == "LOWER(name) = 'x'"
    assert parse_order("name.lower() DESC")[0].sql("duckdb") == "LOWER(name) DESC"
    with pytest.raises(UnsafeSql):
        parse_expression("'HOME'.getenv() IS NOT NULL")


SPINE = "SELECT * FROM generate_series(DATE '2026-01-01', DATE '2026-12-31', INTERVAL 1 DAY) AS d(day)"


@pytest.mark.parametrize(
    "sql",
    [
        SPINE,
        "SELECT * FROM generate_series(current_date - INTERVAL 30 DAY, current_date, INTERVAL '1 day') "
        "AS d(day)",
        "SELECT * FROM range(TIMESTAMP '2026-01-01', TIMESTAMP '2026-01-02', INTERVAL 1 HOUR) AS h(hour)",
        "SELECT n FROM range(10) AS t(n)",
        "SELECT * FROM range(1, 100, 7)",
        "SELECT * FROM generate_series(1, 100000000)",  # the cap itself
        "SELECT * FROM unnest([1, 2, 3]) AS t(x)",
        "SELECT * FROM unnest(range(5))",
        "SELECT d.day, count(o.order_id) FROM generate_series(DATE '2026-01-01', DATE '2026-01-31', "
        "INTERVAL 1 DAY) AS d(day) LEFT JOIN orders AS o ON o.order_date = d.day GROUP BY 1",
    ],
)
def test_row_generators_in_from_are_admitted(sql: str) -> None:
    for dialect in ("duckdb", "postgres"):
        check_query(sql, dialect=dialect, allowed_tables=TABLES)


@pytest.mark.parametrize(
    ("sql", "refusal"),
    [
        ("SELECT * FROM range(1e12)", "would make 1,000,000,000,000 rows"),
        ("SELECT * FROM generate_series(1, 100000001)", "at most 100,000,000"),
        ("SELECT * FROM unnest(range(1000000000))", "would make 1,000,000,000 rows"),
        (
            "SELECT * FROM generate_series(TIMESTAMP '2000-01-01', TIMESTAMP '2100-01-01', "
            "INTERVAL 1 SECOND)",
            "would make 3,155,760,001 rows",
        ),
        ("SELECT * FROM range(CAST(pow(10, 12) AS BIGINT))", "cannot count the rows"),
        ("SELECT * FROM generate_series(DATE '2026-01-01', DATE '2026-12-31')", "cannot count the rows"),
        ("SELECT * FROM generate_series(1, (SELECT count(*) FROM orders))", "may not read a table"),
        (
            "SELECT * FROM generate_series(1, (SELECT max(x) FROM _qf_staging.r01_orders))",
            "may not read a table",
        ),
        ("SELECT * FROM range((SELECT count(*) FROM read_csv('/etc/passwd')))", "may not read a table"),
        ("SELECT * FROM range(length(read_text('/etc/passwd')))", "may not be text"),
        ("SELECT * FROM range('/etc/passwd')", "may not be text"),
        ("SELECT * FROM orders AS o, range(o.amount * 1000)", "must be constants or columns"),
        ("SELECT * FROM evil.range(10)", "directly is not allowed|schema"),
        ("SELECT * FROM repeat(1, 10)", "directly is not allowed"),
    ],
)
def test_row_generators_are_refused_when_they_read_or_cannot_be_counted(sql: str, refusal: str) -> None:
    with pytest.raises(UnsafeSql, match=refusal):
        check_query(sql, allowed_tables=TABLES)


@pytest.mark.parametrize("dialect", ["mysql", "sqlite"])
def test_generate_series_in_from_only_where_the_database_has_it(dialect: str) -> None:
    with pytest.raises(UnsafeSql, match=f"not available on {dialect}"):
        check_query(SPINE, dialect=dialect)


# ---------------------------------------------------------------- lateral table functions


LATERAL_ADMITTED = [
    ("SELECT o.order_id, r.n FROM orders AS o, range(o.amount) AS r(n)", ("duckdb", "postgres")),
    (
        "SELECT o.order_id, r.n FROM orders AS o, range(o.quantity, o.amount, 2) AS r(n)",
        ("duckdb", "postgres"),
    ),
    ("SELECT * FROM orders AS o CROSS JOIN LATERAL range(o.amount) AS r(n)", ("duckdb", "postgres")),
    (
        "SELECT * FROM orders AS o, generate_series(o.order_date, o.shipped_date, INTERVAL 1 DAY) AS d(day)",
        ("duckdb", "postgres"),
    ),
    (
        "SELECT * FROM orders AS o LEFT JOIN LATERAL generate_series(o.order_date, "
        "o.order_date + INTERVAL 6 DAY, INTERVAL 1 DAY) AS d(day) ON TRUE",
        ("duckdb", "postgres"),
    ),
    ("SELECT * FROM orders AS o, unnest(range(o.amount, o.amount + 10)) AS r(n)", ("duckdb", "postgres")),
    ("SELECT * FROM orders AS o, unnest(o.tags) AS t(tag)", ("duckdb", "postgres")),
    (
        "SELECT * FROM orders AS o CROSS JOIN LATERAL unnest(o.tags) WITH ORDINALITY AS t(tag, i)",
        ("duckdb", "postgres"),
    ),
    ("SELECT * FROM orders AS o, json_each(o.payload) AS j", ("duckdb",)),
    ("SELECT * FROM orders AS o, json_tree(o.payload) AS j", ("duckdb",)),
    ("SELECT * FROM orders AS o, jsonb_array_elements(o.payload) AS e(value)", ("postgres",)),
    (
        "SELECT * FROM orders AS o CROSS JOIN LATERAL jsonb_array_elements(CAST(o.payload AS JSONB)) "
        "WITH ORDINALITY AS e(value, i)",
        ("postgres",),
    ),
    ("SELECT * FROM orders AS o, json_array_elements(o.payload -> 'items') AS e(value)", ("postgres",)),
    ("SELECT * FROM orders AS o, jsonb_each_text(o.payload) AS p(key, value)", ("postgres",)),
    ("SELECT * FROM orders AS o, regexp_split_to_table(o.status, ',') AS p(part)", ("postgres",)),
    (
        "SELECT * FROM orders AS o, LATERAL (SELECT max(x) AS m FROM unnest(o.tags) AS u(x)) AS s",
        ("duckdb", "postgres"),
    ),
    (
        "SELECT * FROM orders AS o CROSS JOIN LATERAL (SELECT n FROM range(o.amount) AS r(n)) AS s",
        ("duckdb", "postgres"),
    ),
]


@pytest.mark.parametrize(("sql", "dialects"), LATERAL_ADMITTED)
def test_lateral_table_functions_over_a_rows_values_are_admitted(sql: str, dialects: tuple[str, ...]) -> None:
    for dialect in dialects:
        check_query(sql, dialect=dialect, allowed_tables=TABLES)


@pytest.mark.parametrize(
    ("sql", "refusal"),
    [
        ("SELECT * FROM orders AS o, range(o.amount * 1000000000)", "not the computed value"),
        (
            "SELECT * FROM orders AS o CROSS JOIN LATERAL range(o.amount * 1000000000)",
            "not the computed value",
        ),
        ("SELECT * FROM orders AS o, unnest(range(o.amount * 1000000000))", "not the computed value"),
        ("SELECT * FROM orders AS o CROSS JOIN LATERAL range(1e12)", "would make 1,000,000,000,000 rows"),
        (
            "SELECT * FROM orders AS o CROSS JOIN LATERAL unnest(range(1e12))",
            "would make 1,000,000,000,000 rows",
        ),
        ("SELECT * FROM orders AS o, range(o.amount + 1e12)", "not the computed value"),
        ("SELECT * FROM orders AS o, range(o.amount, o.amount + 1e12)", "not the computed value"),
        (
            "SELECT * FROM orders AS o, generate_series(o.order_date, o.order_date + INTERVAL 100 YEAR, "
            "INTERVAL 1 SECOND)",
            "for each row it runs over",
        ),
        ("SELECT * FROM orders AS o, range(length(o.status))", "not the computed value"),
        ("SELECT * FROM orders AS o, range((SELECT max(order_id) FROM orders))", "may not read a table"),
        ("SELECT * FROM orders AS o, read_csv(o.status)", "directly is not allowed"),
        ("SELECT * FROM orders AS o CROSS JOIN LATERAL read_text(o.status)", "directly is not allowed"),
        (
            "SELECT * FROM orders AS o, LATERAL (SELECT * FROM read_text(o.status)) AS x",
            "directly is not allowed",
        ),
        ("SELECT * FROM orders AS o, json_each(read_text('/etc/passwd'))", "must be columns of the rows"),
        ("SELECT * FROM orders AS o, json_each(o.payload, getenv('HOME'))", "must be columns of the rows"),
        (
            "SELECT * FROM orders AS o, jsonb_array_elements(o.payload)",
            "directly is not allowed",
        ),  # not DuckDB's
        ("SELECT * FROM orders AS o, main.json_each(o.payload)", "directly is not allowed"),
        (
            "SELECT * FROM orders AS o, unnest((SELECT list(content) FROM read_text('/etc/passwd')))",
            "directly",
        ),
        (
            "SELECT * FROM orders AS o LEFT JOIN LATERAL range(o.amount) AS r(n) ON TRUE",
            "comma or CROSS JOIN",
        ),
        ("SELECT * FROM orders AS o JOIN range(o.amount) AS r(n) ON r.n > 1", "comma or CROSS JOIN"),
        ("SELECT * FROM orders AS o JOIN range(o.amount) AS r(n) ON TRUE", "comma or CROSS JOIN"),
        ("SELECT * FROM orders AS o, unnest(range(o.amount)) AS r(n)", "write the generator itself"),
    ],
)
def test_lateral_table_functions_stay_within_the_rules(sql: str, refusal: str) -> None:
    with pytest.raises(UnsafeSql, match=refusal):
        check_query(sql, dialect="duckdb", allowed_tables=TABLES)


@pytest.mark.parametrize(
    ("sql", "refusal"),
    [
        (
            "SELECT * FROM orders AS o, jsonb_array_elements(pg_read_file('/etc/passwd')::jsonb)",
            "must be columns",
        ),
        (
            "SELECT * FROM orders AS o, jsonb_array_elements((SELECT payload FROM orders LIMIT 1))",
            "must be columns",
        ),
        (
            "SELECT * FROM orders AS o, regexp_split_to_table(current_setting('data_directory'), '/')",
            "must be",
        ),
        ("SELECT * FROM orders AS o CROSS JOIN LATERAL pg_ls_dir(o.status)", "directly is not allowed"),
        ("SELECT * FROM orders AS o, dblink(o.status, 'SELECT 1') AS t(x INT)", "directly is not allowed"),
        ("SELECT * FROM orders AS o, json_tree(o.payload)", "directly is not allowed"),  # DuckDB's, not PG's
        ("SELECT * FROM orders AS o, range(o.amount * 1000000000)", "not the computed value"),
    ],
)
def test_lateral_table_functions_on_postgres_stay_within_the_rules(sql: str, refusal: str) -> None:
    with pytest.raises(UnsafeSql, match=refusal):
        check_query(sql, dialect="postgres", allowed_tables=TABLES)


@pytest.mark.parametrize(
    ("sql", "sent"),
    [
        (
            "SELECT * FROM orders AS o CROSS JOIN LATERAL range(o.amount) AS r(n)",
            "SELECT * FROM orders AS o, RANGE(0, o.amount) AS r(n)",
        ),
        (
            "SELECT * FROM orders AS o LEFT JOIN LATERAL json_each(o.payload) AS j ON TRUE",
            "SELECT * FROM orders AS o LEFT JOIN JSON_EACH(o.payload) AS j ON TRUE",
        ),
        (
            "SELECT * FROM orders AS o CROSS JOIN LATERAL unnest(o.tags) WITH ORDINALITY AS t(tag, i) "
            "JOIN customers AS c ON c.tag = t.tag",
            "SELECT * FROM orders AS o CROSS JOIN UNNEST(o.tags) WITH ORDINALITY AS t(tag, i) "
            "JOIN customers AS c ON c.tag = t.tag",
        ),
        (
            "SELECT * FROM orders AS o, LATERAL (SELECT 1 AS one) AS s",
            "SELECT * FROM orders AS o, LATERAL (SELECT 1 AS one) AS s",
        ),
    ],
)
def test_lateral_before_a_function_is_the_from_item_it_means(sql: str, sent: str) -> None:
    """A noise word on PostgreSQL, the default on DuckDB: one shape is checked and counted."""
    assert check_query(sql, allowed_tables=TABLES).sql("duckdb") == sent


def test_lateral_functions_only_where_the_database_has_them() -> None:
    with pytest.raises(UnsafeSql, match="not available on mysql"):
        check_query("SELECT * FROM orders AS o, range(o.amount)", dialect="mysql", allowed_tables=TABLES)


@pytest.mark.parametrize(
    ("call", "rows"),
    [
        ("range(o.n, o.n + 10)", 10),
        ("generate_series(o.n, (o.n + 10) - 1)", 10),  # how sqlglot writes the range above for PostgreSQL
        ("generate_series(o.n + 2, o.n + 5)", 4),
        ("generate_series(o.d, o.d + INTERVAL 6 DAY, INTERVAL 1 DAY)", 7),
        ("generate_series(o.d, (o.d + INTERVAL 1 WEEK) - INTERVAL 1 DAY, INTERVAL 1 DAY)", 7),
        ("range(o.n)", None),  # as many as the data says
        ("range(o.n, o.m + 10)", None),
        ("generate_series(o.n, o.n + INTERVAL 1 DAY - 1)", None),  # a number and an interval do not add up
    ],
)
def test_lateral_generator_counted_per_row_when_end_is_start_moved(call: str, rows: int | None) -> None:
    node = sqlglot.parse_one(f"SELECT * FROM o, {call}", read="duckdb").find(exp.GenerateSeries)
    assert node is not None
    assert lateral_rows(node) == rows
