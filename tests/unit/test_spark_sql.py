"""The canonical → Spark SQL translation, without a JVM: what is rewritten, what is refused."""

from __future__ import annotations

import pytest
import sqlglot

from queryforge.engine.spark_sql import NotOnSpark, spark_type, to_spark, vet
from tests.spark.corpus import REFUSED

ORDERS = {
    "orders": [
        ("order_id", "BIGINT"),
        ("order_date", "DATE"),
        ("status", "VARCHAR"),
        ("amount", "DOUBLE"),
        ("price", "DECIMAL(12,2)"),
    ],
    "late": [("order_id", "BIGINT"), ("order_date", "VARCHAR"), ("note", "VARCHAR")],
}


def spark(sql: str) -> str:
    return to_spark(sqlglot.parse_one(sql, read="duckdb"), ORDERS)


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_constructs_without_a_faithful_translation_are_refused_from_the_syntax_alone(case: str) -> None:
    text, reason = REFUSED[case]
    with pytest.raises(NotOnSpark, match=f"(?i){reason}"):
        vet(sqlglot.parse_one(text, read="duckdb"))


def test_day_numbers_and_names_follow_duckdb() -> None:
    assert "DAYOFWEEK(`orders`.`order_date`) - 1" in spark("SELECT dayofweek(order_date) AS d FROM orders")
    assert "DATE_FORMAT(`orders`.`order_date`, 'EEEE')" in spark(
        "SELECT dayname(order_date) AS d FROM orders"
    )


def test_rounding_and_casting_follow_duckdb_for_doubles_and_decimals() -> None:
    doubled = spark("SELECT round(amount, 2) AS r, CAST(amount AS INTEGER) AS i FROM orders")
    assert "134217729.0" in doubled  # the exact split of x * 100
    assert "CAST(BROUND(`orders`.`amount`) AS INT)" in doubled  # a double rounds half to even
    decimal = spark("SELECT round(price, 2) AS r, CAST(price AS INTEGER) AS i FROM orders")
    assert "ROUND(`orders`.`price`, 2)" in decimal and "134217729" not in decimal
    assert "CAST(ROUND(`orders`.`price`) AS INT)" in decimal  # a decimal rounds half away from zero
    kept = spark("SELECT TRY_CAST(amount AS INTEGER) AS i FROM orders")
    assert "TRY_CAST(BROUND(" in kept


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("SELECT CAST(amount AS VARCHAR) AS t FROM orders", "written as text"),
        ("SELECT round(median(amount), 2) AS r FROM orders", "type is not known"),
        ("SELECT datediff('month', order_date, order_date) AS m FROM orders", "datediff"),
        ("SELECT status FROM orders WHERE status LIKE 'a\\_%'", "LIKE"),
        ("SELECT regexp_matches(status, 'a', 'i') AS m FROM orders", "options"),
        ("SELECT regexp_replace(status, '(a)', '\\1x', 'g') AS m FROM orders", "replacement"),
        ("SELECT strftime(order_date, '%j') AS d FROM orders", "strftime"),
        ("SELECT substring(status, 0, 3) AS s FROM orders", "substring"),
        ("SELECT date_trunc('decade', order_date) AS d FROM orders", "date_trunc"),
        ("SELECT extract(second FROM order_date) AS s FROM orders", "date part"),
    ],
)
def test_what_would_differ_in_detail_is_refused(sql: str, reason: str) -> None:
    with pytest.raises(NotOnSpark, match=f"(?i){reason}"):
        spark(sql)


def test_stars_are_expanded_so_exclude_replace_and_qualify_mean_the_same() -> None:
    excluded = spark("SELECT * EXCLUDE (amount, price) FROM orders")
    assert "`amount`" not in excluded and "`status`" in excluded and "*" not in excluded
    replaced = spark("SELECT * REPLACE (amount * 2 AS amount) FROM orders")
    assert "`orders`.`amount` * 2 AS `amount`" in replaced
    latest = spark(
        "SELECT * FROM orders QUALIFY row_number() OVER (PARTITION BY status ORDER BY order_id) = 1"
    )
    outer = latest.split(" FROM (", 1)[0]
    assert "_w" not in outer and "`order_id`" in outer


def test_union_by_name_becomes_positional_with_nulls_and_a_mixed_type_union_is_refused() -> None:
    sql = spark("SELECT order_id, status FROM orders UNION ALL BY NAME SELECT note, order_id FROM late")
    assert "BY NAME" not in sql and "NULL AS `note`" in sql and "NULL AS `status`" in sql
    with pytest.raises(NotOnSpark, match="cast them to one type"):
        spark(
            "WITH u AS (SELECT order_id, order_date FROM orders "
            "UNION ALL BY NAME SELECT order_date, order_id FROM late) "
            "SELECT count(*) AS n FROM u"
        )
    with pytest.raises(NotOnSpark, match="mixes the types"):
        spark(
            "SELECT count(*) AS n FROM (SELECT order_date FROM orders UNION ALL SELECT order_date FROM late)"
        )


def test_division_by_zero_gives_duckdbs_ieee_values() -> None:
    sql = spark("SELECT amount / (order_id - order_id) AS x FROM orders")
    assert "'Infinity'" in sql and "'-Infinity'" in sql and "'NaN'" in sql


@pytest.mark.parametrize(
    ("duckdb_type", "spark_name"),
    [
        ("TIMESTAMP", "TIMESTAMP_NTZ"),
        ("TIMESTAMP WITH TIME ZONE", "TIMESTAMP_LTZ"),
        ("HUGEINT", "DECIMAL(38, 0)"),
        ("UBIGINT", "DECIMAL(20, 0)"),
        ("VARCHAR[]", "ARRAY<STRING>"),
        ("STRUCT(a HUGEINT, b VARCHAR)", "STRUCT<a: DECIMAL(38, 0), b: STRING>"),
    ],
)
def test_canonical_types_map_to_spark_types_that_hold_every_value(duckdb_type: str, spark_name: str) -> None:
    assert spark_type(duckdb_type) == spark_name


def test_a_type_spark_lacks_is_refused() -> None:
    with pytest.raises(NotOnSpark, match="TIME"):
        spark_type("TIME")
