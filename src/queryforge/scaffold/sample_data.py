"""Deterministic demo dataset for new workspaces (``queryforge init``).

Everything is generated with DuckDB SQL over ``range()``: every pseudo-random column is a function of
``hash(row_index, seed, '<column salt>')``, so the same seed (and the same DuckDB version) always yields
byte-identical files, and ten million order rows take seconds instead of minutes.

Files written by :func:`write_sample_data`:

* ``customers.csv``   - customers with realistic dirt: ~3% missing emails (NULL or ``""``), ~1% exact
  duplicate rows, a few names with leading/trailing spaces.
* ``products.csv`` / ``products.parquet`` - 100 products in 7 categories.
* ``orders.csv``      - orders with ~0.5% orphan ``customer_id`` values and ~0.5% NULL ``amount``;
  ``order_date`` is always a valid ISO date.
* ``orders_late.csv`` - 20 late-arriving orders (same columns); exactly one row has the impossible
  ``order_date`` ``2026-02-30`` so a demo pipeline can show a cast failure.
"""

from __future__ import annotations

import pathlib

import duckdb

__all__ = [
    "BAD_LATE_ORDER_DATE",
    "COUNTRIES",
    "LATE_ORDER_ROWS",
    "ORDER_STATUSES",
    "PRODUCT_CATEGORIES",
    "PRODUCT_ROWS",
    "generate_orders_csv",
    "write_sample_data",
]

COUNTRIES: tuple[str, ...] = ("DE", "FR", "US", "GB", "NL", "ES", "IT", "SE", "PL", "BR")
ORDER_STATUSES: tuple[str, ...] = ("shipped", "pending", "cancelled", "returned")
PRODUCT_CATEGORIES: tuple[str, ...] = (
    "Electronics",
    "Books",
    "Home",
    "Garden",
    "Toys",
    "Sports",
    "Grocery",
)
PRODUCT_ROWS = 100
LATE_ORDER_ROWS = 20
BAD_LATE_ORDER_DATE = "2026-02-30"

_FIRST_NAMES: tuple[str, ...] = (
    "Anna", "Ben", "Clara", "David", "Elena", "Felix", "Greta", "Hugo", "Ines", "Jonas",
    "Karin", "Lukas", "Maria", "Noah", "Olivia", "Paul", "Rosa", "Samuel", "Tara", "Victor",
)  # fmt: skip
_LAST_NAMES: tuple[str, ...] = (
    "Schmidt", "Martin", "Smith", "Jones", "de Vries", "Garcia", "Rossi", "Johansson", "Kowalski",
    "Silva", "Müller", "Bernard", "Brown", "Taylor", "Jansen", "Lopez", "Bianchi", "Nilsson",
    "Nowak", "Santos",
)  # fmt: skip
_PRODUCT_ADJECTIVES: tuple[str, ...] = (
    "Classic", "Compact", "Deluxe", "Eco", "Smart", "Ultra", "Pro", "Mini",
)  # fmt: skip
_PRODUCT_NOUNS: tuple[tuple[str, ...], ...] = (
    ("Headphones", "Charger", "Speaker", "Keyboard", "Webcam"),
    ("Novel", "Cookbook", "Atlas", "Notebook", "Comic"),
    ("Lamp", "Blanket", "Mug", "Clock", "Vase"),
    ("Hose", "Shovel", "Planter", "Sprinkler", "Rake"),
    ("Puzzle", "Robot", "Board Game", "Kite", "Plush Bear"),
    ("Yoga Mat", "Football", "Water Bottle", "Racket", "Dumbbell"),
    ("Coffee", "Tea", "Olive Oil", "Chocolate", "Pasta"),
)

# order_date spans 2025-01-01 .. 2026-10-31 inclusive (365 + 304 days).
_ORDER_START = "2025-01-01"
_ORDER_DAYS = 669
# Late orders fall into the last month of the range.
_LATE_START = "2026-10-01"
_LATE_DAYS = 31
_BAD_LATE_ROW = 7  # 0-based index of the late order that carries BAD_LATE_ORDER_DATE


def _sql_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(_sql_str(v) for v in values) + "]"


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql_path(path: pathlib.Path) -> str:
    return _sql_str(str(path))


def _int(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _h(key: str, seed: int, salt: str) -> str:
    """SQL for a deterministic pseudo-random UBIGINT derived from ``key``, the seed and a column salt."""
    return f"hash(({key})::BIGINT, {seed}::BIGINT, {_sql_str(salt)})"


def _pick(values: tuple[str, ...], key: str, seed: int, salt: str) -> str:
    return f"{_sql_list(values)}[1 + ({_h(key, seed, salt)} % {len(values)})::INTEGER]"


def _price_expr(product_key: str, seed: int) -> str:
    """Unit price of a product: a pure function of product_id and seed, shared by products and orders."""
    ending = f"[1, 1, 51, 5][1 + ({_h(product_key, seed, 'cents')} % 4)::INTEGER]"
    cents = f"((1 + {_h(product_key, seed, 'price')} % 250) * 100 - {ending})"
    return f"CAST(({cents})::BIGINT * 0.01 AS DECIMAL(10, 2))"


def _connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:")
    # Rows must reach the file in range() order for byte-identical output.
    con.execute("SET preserve_insertion_order = true")
    return con


def _copy_csv(con: duckdb.DuckDBPyConnection, query: str, path: pathlib.Path) -> None:
    con.execute(f"COPY ({query}) TO {_sql_path(path)} (FORMAT csv, HEADER true, DELIMITER ',')")


def _orders_query(
    rows: int,
    *,
    customers: int,
    products: int,
    seed: int,
    dirty: bool,
    first_order_id: int = 1,
    date_start: str = _ORDER_START,
    date_days: int = _ORDER_DAYS,
) -> str:
    """SELECT producing order rows for ``i`` in ``range(rows)``.

    With ``dirty`` ~0.5% of rows reference a customer that does not exist (ids above ``customers``) and
    ~0.5% have a NULL amount; at least one row of each kind is guaranteed whenever ``rows >= 1``.
    """
    customer = f"1 + {_h('i', seed, 'customer')} % {customers}"
    amount = "CAST(price * quantity AS DECIMAL(12, 2))"
    if dirty:
        orphan_row = rows // 3
        null_row = (2 * rows) // 3
        customer = (
            f"CASE WHEN i = {orphan_row} OR {_h('i', seed, 'orphan')} % 200 = 0 "
            f"THEN {customers} + 1 + {_h('i', seed, 'orphan_id')} % 500 ELSE {customer} END"
        )
        amount = (
            f"CASE WHEN i = {null_row} OR {_h('i', seed, 'null_amount')} % 200 = 0 "
            f"THEN NULL ELSE {amount} END"
        )
    status_roll = f"{_h('i', seed, 'status')} % 100"
    return f"""
        SELECT
            order_id, customer_id, product_id, order_date, status, quantity, {amount} AS amount,
            order_date + to_seconds(({_h("i", seed, "order_updated")} % 864000)::BIGINT) AS updated_at
        FROM (
            SELECT
                i,
                i + {first_order_id} AS order_id,
                ({customer})::BIGINT AS customer_id,
                (1 + {_h("i", seed, "product")} % {products})::BIGINT AS product_id,
                DATE '{date_start}' + ({_h("i", seed, "date")} % {date_days})::INTEGER AS order_date,
                CASE WHEN {status_roll} < 65 THEN 'shipped'
                     WHEN {status_roll} < 80 THEN 'pending'
                     WHEN {status_roll} < 91 THEN 'cancelled'
                     ELSE 'returned' END AS status,
                (1 + {_h("i", seed, "quantity")} % 5)::INTEGER AS quantity,
                {_price_expr("1 + " + _h("i", seed, "product") + f" % {products}", seed)} AS price
            FROM range({rows}) AS t(i)
        )
        ORDER BY order_id
    """


def _customers_query(customers: int, seed: int) -> str:
    """Unique customers plus ~1% exact duplicates (at least one), ordered by customer_id."""
    first = _pick(_FIRST_NAMES, "i", seed, "first_name")
    last = _pick(_LAST_NAMES, "i", seed, "last_name")
    email_local = f"lower(replace({first} || '.' || {last}, ' ', ''))"
    email_roll = f"{_h('i', seed, 'email')} % 100"
    name_roll = f"{_h('i', seed, 'name_space')} % 100"
    dup_row = customers // 2
    base = f"""
        SELECT
            i + 1 AS customer_id,
            CASE WHEN i = 1 OR {name_roll} = 0 THEN '  ' || {first} || ' ' || {last}
                 WHEN {name_roll} = 1 THEN {first} || ' ' || {last} || ' '
                 ELSE {first} || ' ' || {last} END AS name,
            CASE WHEN i = 2 OR {email_roll} < 2 THEN NULL
                 WHEN {email_roll} = 2 THEN ''
                 ELSE {email_local} || (i + 1)::VARCHAR || '@example.com' END AS email,
            {_pick(COUNTRIES, "i", seed, "country")} AS country,
            DATE '2023-01-01' + ({_h("i", seed, "signup")} % 730)::INTEGER AS signup_date,
            (DATE '2023-01-01' + ({_h("i", seed, "signup")} % 730)::INTEGER)
                + to_seconds(({_h("i", seed, "customer_updated")} % (400 * 86400))::BIGINT) AS updated_at,
            i = {dup_row} OR {_h("i", seed, "duplicate")} % 100 = 0 AS duplicated
        FROM range({customers}) AS t(i)
    """
    return f"""
        WITH base AS ({base})
        SELECT customer_id, name, email, country, signup_date, updated_at
        FROM (SELECT * FROM base UNION ALL SELECT * FROM base WHERE duplicated)
        ORDER BY customer_id
    """


def _products_query(products: int, seed: int) -> str:
    nouns = "[" + ", ".join(_sql_list(group) for group in _PRODUCT_NOUNS) + "]"
    category_idx = f"(1 + {_h('i', seed, 'category')} % {len(PRODUCT_CATEGORIES)})::INTEGER"
    noun = f"{nouns}[{category_idx}][1 + ({_h('i', seed, 'noun')} % 5)::INTEGER]"
    return f"""
        SELECT
            i + 1 AS product_id,
            {_pick(_PRODUCT_ADJECTIVES, "i", seed, "adjective")} || ' ' || {noun}
                || ' ' || upper(substr(md5(({seed} * 1000003 + i)::VARCHAR), 1, 4)) AS name,
            {_sql_list(PRODUCT_CATEGORIES)}[{category_idx}] AS category,
            {_price_expr("i + 1", seed)} AS price
        FROM range({products}) AS t(i)
        ORDER BY product_id
    """


def _late_orders_query(orders: int, customers: int, seed: int) -> str:
    """20 clean late orders after the main file's ids; one row gets an impossible order_date."""
    inner = _orders_query(
        LATE_ORDER_ROWS,
        customers=customers,
        products=PRODUCT_ROWS,
        seed=seed + 1_000_003,
        dirty=False,
        first_order_id=orders + 1,
        date_start=_LATE_START,
        date_days=_LATE_DAYS,
    )
    bad_id = orders + 1 + _BAD_LATE_ROW
    return f"""
        SELECT
            order_id, customer_id, product_id,
            CASE WHEN order_id = {bad_id} THEN {_sql_str(BAD_LATE_ORDER_DATE)}
                 ELSE strftime(order_date, '%Y-%m-%d') END AS order_date,
            status, quantity, amount, updated_at
        FROM ({inner})
        ORDER BY order_id
    """


def _count(con: duckdb.DuckDBPyConnection, query: str) -> int:
    row = con.execute(f"SELECT count(*) FROM ({query})").fetchall()[0]
    assert row is not None
    return int(row[0])


def generate_orders_csv(
    path: pathlib.Path, rows: int, *, customers: int = 1000, products: int = 100, seed: int = 7
) -> None:
    """Write a large, clean orders CSV (header, comma-delimited, ISO dates) to ``path``.

    Same columns as the demo ``orders.csv`` (order_id, customer_id, product_id, order_date, status,
    quantity, amount, updated_at) but without dirt: every customer_id is in ``1..customers``, every
    product_id in ``1..products`` and no amount is NULL. Built entirely in DuckDB, so 10 million rows
    take seconds; the output is byte-identical for the same arguments.
    """
    _int("rows", rows, 0)
    _int("customers", customers, 1)
    _int("products", products, 1)
    _int("seed", seed, 0)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    query = _orders_query(rows, customers=customers, products=products, seed=seed, dirty=False)
    con = _connect()
    try:
        _copy_csv(con, query, path)
    finally:
        con.close()


def write_sample_data(folder: pathlib.Path, *, orders: int = 5000, seed: int = 7) -> dict[str, int]:
    """Write orders.csv, customers.csv, products.csv (and products.parquet) into folder.

    Returns the number of data rows per written file name.

    Also writes ``orders_late.csv`` (20 rows, one with the invalid order_date ``2026-02-30``). There are
    ``max(10, orders // 5)`` distinct customers (plus ~1% duplicate rows) and 100 products. The returned
    mapping has one entry per written file: ``{"customers.csv": ..., "products.csv": 100,
    "products.parquet": 100, "orders.csv": orders, "orders_late.csv": 20}``.
    """
    _int("orders", orders, 1)
    _int("seed", seed, 0)
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    customers = max(10, orders // 5)

    con = _connect()
    try:
        con.execute(f"CREATE TEMP TABLE customers AS {_customers_query(customers, seed)}")
        con.execute(f"CREATE TEMP TABLE products AS {_products_query(PRODUCT_ROWS, seed)}")
        orders_query = _orders_query(
            orders, customers=customers, products=PRODUCT_ROWS, seed=seed, dirty=True
        )
        late_query = _late_orders_query(orders, customers, seed)

        customers_sql = "SELECT * FROM customers ORDER BY customer_id"
        products_sql = "SELECT * FROM products ORDER BY product_id"
        _copy_csv(con, customers_sql, folder / "customers.csv")
        _copy_csv(con, products_sql, folder / "products.csv")
        con.execute(f"COPY ({products_sql}) TO {_sql_path(folder / 'products.parquet')} (FORMAT parquet)")
        _copy_csv(con, orders_query, folder / "orders.csv")
        _copy_csv(con, late_query, folder / "orders_late.csv")

        return {
            "customers.csv": _count(con, "SELECT * FROM customers"),
            "products.csv": _count(con, "SELECT * FROM products"),
            "products.parquet": _count(con, "SELECT * FROM products"),
            "orders.csv": orders,
            "orders_late.csv": LATE_ORDER_ROWS,
        }
    finally:
        con.close()
