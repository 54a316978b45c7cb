"""Tests for the deterministic demo dataset written by ``queryforge init``.

Every property is measured independently with DuckDB queries over the written files.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import duckdb
import pytest

from queryforge.scaffold.sample_data import (
    BAD_LATE_ORDER_DATE,
    COUNTRIES,
    ORDER_STATUSES,
    PRODUCT_CATEGORIES,
    generate_orders_csv,
    write_sample_data,
)

ORDER_COLUMNS = [
    ("order_id", "BIGINT"),
    ("customer_id", "BIGINT"),
    ("product_id", "BIGINT"),
    ("order_date", "DATE"),
    ("status", "VARCHAR"),
    ("quantity", "BIGINT"),
    ("amount", "DOUBLE"),
    ("updated_at", "TIMESTAMP"),
]
ALL_FILES = {"customers.csv", "products.csv", "products.parquet", "orders.csv", "orders_late.csv"}


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, dict[str, int]]:
    folder = tmp_path_factory.mktemp("sample") / "data"
    counts = write_sample_data(folder)
    return folder, counts


@pytest.fixture()
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    yield connection
    connection.close()


def _one(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    row = con.execute(sql).fetchone()
    assert row is not None
    return row[0]


def _schema(con: duckdb.DuckDBPyConnection, path: pathlib.Path) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in con.execute(f"DESCRIBE SELECT * FROM '{path}'").fetchall()]


def _two_decimals_violations(con: duckdb.DuckDBPyConnection, path: pathlib.Path, column: str) -> int:
    """Non-empty raw CSV values of ``column`` that are not written as ``digits.dd``."""
    raw = f"read_csv('{path}', all_varchar = true)"
    return int(
        _one(
            con,
            f"SELECT count(*) FROM {raw} WHERE {column} IS NOT NULL "
            f"AND NOT regexp_full_match({column}, '[0-9]+\\.[0-9]{{2}}')",
        )
    )


def _files(folder: pathlib.Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# --- determinism --------------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes(tmp_path: pathlib.Path) -> None:
    first = write_sample_data(tmp_path / "a", orders=3000, seed=11)
    second = write_sample_data(tmp_path / "b", orders=3000, seed=11)
    assert first == second
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert set(a) == ALL_FILES
    assert a == b


def test_rewrite_into_same_folder_is_identical(tmp_path: pathlib.Path) -> None:
    write_sample_data(tmp_path, orders=500)
    before = _files(tmp_path)
    write_sample_data(tmp_path, orders=500)
    assert _files(tmp_path) == before


def test_different_seed_gives_different_data(tmp_path: pathlib.Path) -> None:
    write_sample_data(tmp_path / "a", orders=500, seed=1)
    write_sample_data(tmp_path / "b", orders=500, seed=2)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a["orders.csv"] != b["orders.csv"]
    assert a["customers.csv"] != b["customers.csv"]


def test_generate_orders_csv_is_deterministic(tmp_path: pathlib.Path) -> None:
    generate_orders_csv(tmp_path / "a.csv", 20_000, seed=3)
    generate_orders_csv(tmp_path / "b.csv", 20_000, seed=3)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


# --- row counts and schemas ---------------------------------------------------------------------------


def test_returned_counts_match_files(
    sample: tuple[pathlib.Path, dict[str, int]], con: duckdb.DuckDBPyConnection
) -> None:
    folder, counts = sample
    assert set(counts) == ALL_FILES
    assert {p.name for p in folder.iterdir()} == ALL_FILES
    for name, expected in counts.items():
        assert _one(con, f"SELECT count(*) FROM '{folder / name}'") == expected, name
    assert counts["orders.csv"] == 5000
    assert counts["products.csv"] == counts["products.parquet"] == 100
    assert counts["orders_late.csv"] == 20
    distinct_customers = _one(con, f"SELECT count(DISTINCT customer_id) FROM '{folder / 'customers.csv'}'")
    assert distinct_customers == 1000
    assert 1000 < counts["customers.csv"] < 1050


@pytest.mark.parametrize("orders", [1, 7, 123])
def test_small_datasets_count_and_keep_dirt(
    tmp_path: pathlib.Path, con: duckdb.DuckDBPyConnection, orders: int
) -> None:
    counts = write_sample_data(tmp_path, orders=orders)
    assert counts["orders.csv"] == orders
    for name, expected in counts.items():
        assert _one(con, f"SELECT count(*) FROM '{tmp_path / name}'") == expected, name
    customers = tmp_path / "customers.csv"
    assert _one(con, f"SELECT count(*) FILTER (WHERE email IS NULL) FROM '{customers}'") >= 1
    assert _one(con, f"SELECT count(*) - count(DISTINCT customer_id) FROM '{customers}'") >= 1
    assert _one(con, f"SELECT count(*) FILTER (WHERE amount IS NULL) FROM '{tmp_path / 'orders.csv'}'") >= 1


def test_column_types_as_inferred_from_csv(
    sample: tuple[pathlib.Path, dict[str, int]], con: duckdb.DuckDBPyConnection
) -> None:
    folder, _ = sample
    assert _schema(con, folder / "customers.csv") == [
        ("customer_id", "BIGINT"),
        ("name", "VARCHAR"),
        ("email", "VARCHAR"),
        ("country", "VARCHAR"),
        ("signup_date", "DATE"),
        ("updated_at", "TIMESTAMP"),
    ]
    assert _schema(con, folder / "products.csv") == [
        ("product_id", "BIGINT"),
        ("name", "VARCHAR"),
        ("category", "VARCHAR"),
        ("price", "DOUBLE"),
    ]
    assert _schema(con, folder / "products.parquet") == [
        ("product_id", "BIGINT"),
        ("name", "VARCHAR"),
        ("category", "VARCHAR"),
        ("price", "DECIMAL(10,2)"),
    ]
    assert _schema(con, folder / "orders.csv") == ORDER_COLUMNS
    late = dict(ORDER_COLUMNS, order_date="VARCHAR")
    assert _schema(con, folder / "orders_late.csv") == list(late.items())


def test_csv_format_header_comma_iso_dates(sample: tuple[pathlib.Path, dict[str, int]]) -> None:
    folder, _ = sample
    lines = (folder / "orders.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == ",".join(name for name, _ in ORDER_COLUMNS)
    fields = lines[1].split(",")
    assert len(fields) == len(ORDER_COLUMNS)
    assert len(fields[3]) == 10 and fields[3][4] == "-" and fields[3][7] == "-"
    assert (
        (folder / "customers.csv")
        .read_text(encoding="utf-8")
        .startswith("customer_id,name,email,country,signup_date,updated_at\n")
    )


def test_parquet_matches_products_csv(
    sample: tuple[pathlib.Path, dict[str, int]], con: duckdb.DuckDBPyConnection
) -> None:
    folder, _ = sample
    diff = _one(
        con,
        f"""SELECT count(*) FROM (
              (SELECT product_id, name, category, price::DECIMAL(10,2) FROM '{folder / "products.csv"}'
               EXCEPT ALL SELECT * FROM '{folder / "products.parquet"}')
              UNION ALL
              (SELECT * FROM '{folder / "products.parquet"}'
               EXCEPT ALL
               SELECT product_id, name, category, price::DECIMAL(10,2) FROM '{folder / "products.csv"}'))""",
    )
    assert diff == 0


# --- value domains ------------------------------------------------------------------------------------


def test_products_domain(sample: tuple[pathlib.Path, dict[str, int]], con: duckdb.DuckDBPyConnection) -> None:
    folder, _ = sample
    products = folder / "products.csv"
    ids = [r[0] for r in con.execute(f"SELECT product_id FROM '{products}' ORDER BY 1").fetchall()]
    assert ids == list(range(1, 101))
    categories = {r[0] for r in con.execute(f"SELECT DISTINCT category FROM '{products}'").fetchall()}
    assert categories <= set(PRODUCT_CATEGORIES)
    assert 6 <= len(categories) <= 8
    assert _one(con, f"SELECT min(price) FROM '{products}'") > 0
    # at most two decimal places
    assert _two_decimals_violations(con, products, "price") == 0
    assert _one(con, f"SELECT count(*) FROM '{products}' WHERE name IS NULL OR name = ''") == 0


def test_customers_domain(
    sample: tuple[pathlib.Path, dict[str, int]], con: duckdb.DuckDBPyConnection
) -> None:
    folder, _ = sample
    customers = folder / "customers.csv"
    countries = {r[0] for r in con.execute(f"SELECT DISTINCT country FROM '{customers}'").fetchall()}
    assert countries == set(COUNTRIES)
    assert _one(con, f"SELECT min(customer_id) FROM '{customers}'") == 1
    assert _one(con, f"SELECT max(customer_id) FROM '{customers}'") == 1000
    assert _one(con, f"SELECT count(*) FROM '{customers}' WHERE updated_at < signup_date") == 0
    bad_email = (
        f"SELECT count(*) FROM '{customers}' WHERE email IS NOT NULL AND email NOT LIKE '%_@example.com'"
    )
    assert _one(con, bad_email) == 0


def test_orders_domain(sample: tuple[pathlib.Path, dict[str, int]], con: duckdb.DuckDBPyConnection) -> None:
    folder, _ = sample
    orders = folder / "orders.csv"
    assert _one(con, f"SELECT count(DISTINCT order_id) = count(*) FROM '{orders}'") is True
    assert _one(con, f"SELECT min(order_id) FROM '{orders}'") == 1
    assert _one(con, f"SELECT max(order_id) FROM '{orders}'") == 5000
    statuses = dict(con.execute(f"SELECT status, count(*) FROM '{orders}' GROUP BY 1").fetchall())
    assert set(statuses) == set(ORDER_STATUSES)
    assert 0.60 < statuses["shipped"] / 5000 < 0.70
    assert _one(con, f"SELECT min(order_date) >= DATE '2025-01-01' FROM '{orders}'") is True
    assert _one(con, f"SELECT max(order_date) <= DATE '2026-10-31' FROM '{orders}'") is True
    assert _one(con, f"SELECT count(*) FROM '{orders}' WHERE quantity NOT BETWEEN 1 AND 5") == 0
    assert _one(con, f"SELECT count(*) FROM '{orders}' WHERE amount <= 0") == 0
    assert _two_decimals_violations(con, orders, "amount") == 0
    assert _one(con, f"SELECT count(*) FROM '{orders}' WHERE updated_at < order_date") == 0
    assert _one(con, f"SELECT count(*) FROM '{orders}' WHERE product_id NOT BETWEEN 1 AND 100") == 0
    # amount is unit price x quantity
    mismatched = _one(
        con,
        f"""SELECT count(*) FROM '{orders}' o JOIN '{folder / "products.csv"}' p USING (product_id)
            WHERE o.amount IS NOT NULL AND round(o.amount, 2) <> round(p.price * o.quantity, 2)""",
    )
    assert mismatched == 0


# --- dirt ---------------------------------------------------------------------------------------------


def test_customers_have_missing_emails(
    sample: tuple[pathlib.Path, dict[str, int]], con: duckdb.DuckDBPyConnection
) -> None:
    folder, counts = sample
    missing = _one(
        con,
        f"SELECT count(*) FROM '{folder / 'customers.csv'}' WHERE email IS NULL OR trim(email) = ''",
    )
    assert 0.01 * counts["customers.csv"] <= missing <= 0.06 * counts["customers.csv"]


def test_customers_have_exact_duplicate_rows(
    sample: tuple[pathlib.Path, dict[str, int]], con: duckdb.DuckDBPyConnection
) -> None:
    folder, counts = sample
    customers = folder / "customers.csv"
    duplicated_ids = _one(con, f"SELECT count(*) - count(DISTINCT customer_id) FROM '{customers}'")
    exact_duplicates = _one(
        con,
        f"SELECT count(*) - (SELECT count(*) FROM (SELECT DISTINCT * FROM '{customers}')) FROM '{customers}'",
    )
    assert duplicated_ids >= 1
    # every repeated customer_id is an exact copy of the whole row
    assert exact_duplicates == duplicated_ids
    assert duplicated_ids <= 0.03 * counts["customers.csv"]


def test_customers_have_untrimmed_names(
    sample: tuple[pathlib.Path, dict[str, int]], con: duckdb.DuckDBPyConnection
) -> None:
    folder, _ = sample
    untrimmed = _one(con, f"SELECT count(*) FROM '{folder / 'customers.csv'}' WHERE name <> trim(name)")
    assert 1 <= untrimmed <= 50


def test_orders_have_orphan_customer_ids(
    sample: tuple[pathlib.Path, dict[str, int]], con: duckdb.DuckDBPyConnection
) -> None:
    folder, _ = sample
    orphans = _one(
        con,
        f"""SELECT count(*) FROM '{folder / "orders.csv"}' o
            ANTI JOIN '{folder / "customers.csv"}' c USING (customer_id)""",
    )
    assert 5 <= orphans <= 75  # ~0.5% of 5000


def test_orders_have_null_amounts(
    sample: tuple[pathlib.Path, dict[str, int]], con: duckdb.DuckDBPyConnection
) -> None:
    folder, _ = sample
    nulls = _one(con, f"SELECT count(*) FROM '{folder / 'orders.csv'}' WHERE amount IS NULL")
    assert 5 <= nulls <= 75  # ~0.5% of 5000


def test_bad_date_only_in_late_orders(
    sample: tuple[pathlib.Path, dict[str, int]], con: duckdb.DuckDBPyConnection
) -> None:
    folder, counts = sample
    orders, late = folder / "orders.csv", folder / "orders_late.csv"
    # orders.csv: order_date is read as a real DATE, nothing to reject
    raw = f"read_csv('{orders}', all_varchar = true)"
    assert _one(con, f"SELECT count(*) FROM {raw} WHERE try_cast(order_date AS DATE) IS NULL") == 0
    assert BAD_LATE_ORDER_DATE not in orders.read_text(encoding="utf-8")
    # orders_late.csv: exactly one row fails the cast
    bad = con.execute(
        f"SELECT order_date FROM '{late}' WHERE try_cast(order_date AS DATE) IS NULL"
    ).fetchall()
    assert bad == [(BAD_LATE_ORDER_DATE,)]
    with pytest.raises(duckdb.ConversionException):
        con.execute(f"SELECT CAST(order_date AS DATE) FROM '{late}'").fetchall()
    # late order ids continue after the main file, all other columns are clean
    assert _one(con, f"SELECT min(order_id) FROM '{late}'") == counts["orders.csv"] + 1
    assert _one(con, f"SELECT count(DISTINCT order_id) FROM '{late}'") == 20
    assert _one(con, f"SELECT count(*) FROM '{late}' WHERE amount IS NULL") == 0
    orphans = f"SELECT count(*) FROM '{late}' ANTI JOIN '{folder / 'customers.csv'}' USING (customer_id)"
    assert _one(con, orphans) == 0


# --- large generator ----------------------------------------------------------------------------------


def test_generate_orders_csv_100k(tmp_path: pathlib.Path, con: duckdb.DuckDBPyConnection) -> None:
    path = tmp_path / "nested" / "orders_big.csv"
    generate_orders_csv(path, 100_000, customers=2000, products=50, seed=5)
    assert _schema(con, path) == ORDER_COLUMNS
    stats = con.execute(
        f"""SELECT count(*), count(DISTINCT order_id), min(order_id), max(order_id),
                   min(customer_id), max(customer_id), min(product_id), max(product_id),
                   count(*) FILTER (WHERE amount IS NULL), min(order_date), max(order_date)
            FROM '{path}'"""
    ).fetchone()
    assert stats is not None
    rows, distinct, lo, hi, cmin, cmax, pmin, pmax, null_amounts, dmin, dmax = stats
    assert rows == distinct == 100_000
    assert (lo, hi) == (1, 100_000)
    assert cmin >= 1 and cmax <= 2000  # clean: no orphan customers
    assert pmin >= 1 and pmax <= 50
    assert null_amounts == 0
    assert str(dmin) >= "2025-01-01" and str(dmax) <= "2026-10-31"
    statuses = {r[0] for r in con.execute(f"SELECT DISTINCT status FROM '{path}'").fetchall()}
    assert statuses == set(ORDER_STATUSES)


def test_generate_orders_csv_zero_rows_writes_header(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "empty.csv"
    generate_orders_csv(path, 0)
    assert path.read_text(encoding="utf-8").strip() == ",".join(name for name, _ in ORDER_COLUMNS)


# --- argument validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"orders": 0}, ValueError),
        ({"orders": -5}, ValueError),
        ({"seed": -1}, ValueError),
        ({"orders": 10.5}, TypeError),
        ({"orders": True}, TypeError),
    ],
)
def test_write_sample_data_rejects_bad_arguments(
    tmp_path: pathlib.Path, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        write_sample_data(tmp_path, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"rows": -1}, ValueError),
        ({"rows": 10, "customers": 0}, ValueError),
        ({"rows": 10, "products": 0}, ValueError),
        ({"rows": "10"}, TypeError),
    ],
)
def test_generate_orders_csv_rejects_bad_arguments(
    tmp_path: pathlib.Path, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        generate_orders_csv(tmp_path / "x.csv", **kwargs)


def test_path_with_quote_is_supported(tmp_path: pathlib.Path, con: duckdb.DuckDBPyConnection) -> None:
    folder = tmp_path / "o'brien data"
    counts = write_sample_data(folder, orders=50)
    escaped = str(folder / "orders.csv").replace("'", "''")
    assert _one(con, f"SELECT count(*) FROM '{escaped}'") == counts["orders.csv"] == 50
