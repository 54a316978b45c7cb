"""The allow-list's own rules: name normalisation, per-dialect lists, scopes, limits, one gate."""

from __future__ import annotations

import pytest

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
