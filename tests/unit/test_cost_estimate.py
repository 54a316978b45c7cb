"""Cost by plan (issue 10, defect 9): every plan node and every row generator counts.

The gate used to sum the leaf scans of DuckDB's EXPLAIN, so a 3-way cross join of 5,000-row
tables (1.25e11 rows) and `unnest(range(200000000))` were both estimated at about 5,000 rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlglot
from pydantic import ValidationError

from queryforge.config import Settings
from queryforge.engine.duckdb import DuckDBEngine, DuckDBSession, run_readonly
from queryforge.engine.rowbound import generated_rows, row_bound
from queryforge.planner.service import CostPolicy

CAP = CostPolicy().cap_rows
SIZES = {"a": 5000, "b": 5000, "c": 5000}


def bound(sql: str) -> int:
    return row_bound(sqlglot.parse_one(sql, read="duckdb"), SIZES.get)


# ---------------------------------------------------------------- the syntax-tree bound


@pytest.mark.parametrize(
    ("sql", "rows"),
    [
        ("SELECT * FROM a, b, c", 5000**3),
        ("SELECT count(*) FROM a CROSS JOIN b CROSS JOIN c", 5000**3),
        ("SELECT * FROM a JOIN b ON a.x < b.y", 5000**2),
        ("WITH t AS (SELECT * FROM a, b) SELECT count(*) FROM t, c", 5000**3),
        ("SELECT x FROM a WHERE x IN (SELECT 1 FROM b, c)", 5000**2),
        ("SELECT unnest(range(200000000))", 200_000_000),
        ("SELECT unnest(range(2e8)) AS n", 200_000_000),
        ("SELECT * FROM unnest(range(200000000))", 200_000_000),
        ("SELECT unnest(range(1000)) FROM a", 5_000_000),
        ("SELECT * FROM repeat(1, 1000000000)", 1_000_000_000),
        ("SELECT * FROM a UNION ALL SELECT * FROM b", 10_000),
    ],
)
def test_row_generators_and_products_count_in_full(sql: str, rows: int) -> None:
    assert bound(sql) == rows


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM a JOIN b ON a.x = b.x",
        "SELECT * FROM a, b WHERE a.x = b.x AND a.y > 1",
        "SELECT * FROM a JOIN b USING (x)",
        "SELECT * FROM a SEMI JOIN b ON a.x = b.x",
    ],
)
def test_a_keyed_join_is_not_a_product(sql: str) -> None:
    assert bound(sql) == 5000


@pytest.mark.parametrize(
    ("call", "rows"),
    [
        ("range(10)", 10),
        ("range(-5, 5)", 10),
        ("range(10, 0, -1)", 10),
        ("range(0, 10, 3)", 4),
        ("generate_series(1, 10)", 10),
        ("generate_series(1, 10, 3)", 4),
        ("range(5, 0)", 0),
        ("range(n)", None),
    ],
)
def test_generated_rows_of_constant_ranges(call: str, rows: int | None) -> None:
    node = sqlglot.parse_one(f"SELECT {call}", read="duckdb").expressions[0]
    assert generated_rows(node) == rows


# ---------------------------------------------------------------- the engine's estimate


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[DuckDBSession]:
    session = DuckDBEngine().session(None, allowed_dirs=[tmp_path])
    assert isinstance(session, DuckDBSession)
    for name in ("a", "b", "c"):
        session.con.execute(f"CREATE TABLE {name} AS SELECT range AS x, range % 7 AS y FROM range(5000)")
    yield session
    session.close()


def estimate(session: DuckDBSession, sql: str) -> int:
    return session.estimate_rows(sqlglot.parse_one(sql, read="duckdb"))  # type: ignore[arg-type]


def test_a_three_way_cross_join_is_estimated_at_its_product(scratch: DuckDBSession) -> None:
    assert estimate(scratch, "SELECT * FROM a, b, c") >= 125_000_000_000 > CAP
    assert estimate(scratch, "SELECT count(*) FROM a, b, c") >= 125_000_000_000


def test_a_cross_join_at_the_top_of_the_plan_counts(scratch: DuckDBSession) -> None:
    # DuckDB leaves the top CROSS_PRODUCT without an estimate: it is derived from its inputs.
    assert estimate(scratch, "SELECT * FROM range(100000) x, range(100000) y") >= 10**10


def test_unnest_of_a_range_is_estimated_at_its_length(scratch: DuckDBSession) -> None:
    assert estimate(scratch, "SELECT unnest(range(200000000))") >= 200_000_000 > CAP
    assert estimate(scratch, "SELECT x, unnest(range(200000000)) AS n FROM a") >= 200_000_000


def test_a_view_hiding_the_generator_is_seen_through(scratch: DuckDBSession) -> None:
    scratch.con.execute("CREATE VIEW products AS SELECT * FROM a x, a y, a z")
    scratch.con.execute("CREATE VIEW numbers AS SELECT unnest(range(200000000)) AS n")
    assert estimate(scratch, "SELECT * FROM products") >= 125_000_000_000
    assert estimate(scratch, "SELECT * FROM numbers") >= 200_000_000


def test_planning_does_not_build_the_series_it_estimates(tmp_path: Path) -> None:
    # DuckDB's constant folding built generate_series(1, 2e8) while merely EXPLAINing it
    # (1e7 took 22 s and 2e8 ran out of memory): the scratch session plans without it. Under a
    # 256 MB ceiling, building the 1.6 GB series would fail instead of estimating it.
    session = DuckDBEngine(max_memory="256MB").session(None, allowed_dirs=[tmp_path])
    assert isinstance(session, DuckDBSession)
    try:
        rows = estimate(session, "SELECT unnest(generate_series(1, 200000000)) AS n")
    finally:
        session.close()
    assert rows >= 200_000_000


@pytest.mark.parametrize(
    ("sql", "at_least"),
    [
        # each generator is under the policy's cap; together they are not
        ("SELECT * FROM range(10000000) x, range(10000000) y", 10**14),
        (
            "SELECT * FROM generate_series(TIMESTAMP '2026-01-01', TIMESTAMP '2026-12-31', "
            "INTERVAL 1 SECOND) AS s(t), a",
            31_449_601 * 5000,
        ),
        ("SELECT * FROM unnest(range(1000000)) AS u(n), a", 1_000_000 * 5000),
    ],
)
def test_row_generators_admitted_in_from_count_in_the_cost_gate(
    scratch: DuckDBSession, sql: str, at_least: int
) -> None:
    assert estimate(scratch, sql) >= at_least > CAP


def test_a_date_spine_is_counted_by_its_days() -> None:
    spine = "SELECT * FROM generate_series(DATE '2026-01-01', DATE '2026-12-31', INTERVAL 1 DAY) AS d(day)"
    assert bound(spine) == 365
    assert bound("SELECT * FROM range(DATE '2026-01-01', DATE '2027-01-01', INTERVAL 1 MONTH)") == 12


def test_ordinary_queries_stay_small(scratch: DuckDBSession) -> None:
    assert estimate(scratch, "SELECT * FROM a JOIN b ON a.x = b.x") <= 10_000
    assert estimate(scratch, "SELECT y, count(*) FROM a WHERE x < 10 GROUP BY y") <= 5000


# ---------------------------------------------------------------- memory ceiling


def test_sessions_get_the_memory_ceiling(tmp_path: Path) -> None:
    scratch = DuckDBEngine(max_memory="1GB").session(None, allowed_dirs=[tmp_path])
    work = DuckDBEngine(max_memory="512MB").session(tmp_path / "run", allowed_dirs=[tmp_path])
    try:
        assert isinstance(scratch, DuckDBSession) and isinstance(work, DuckDBSession)
        memory = "SELECT current_setting('max_memory')"
        assert scratch.con.execute(memory).fetchone() == ("953.6 MiB",)
        assert work.con.execute(memory).fetchone() == ("488.2 MiB",)
    finally:
        scratch.close()
        work.close()


def test_the_readonly_query_gets_the_memory_ceiling(tmp_path: Path) -> None:
    database = tmp_path / "w.duckdb"
    DuckDBSession(str(database), preserve_order=True, temp_dir=None).close()
    _, rows = run_readonly(
        database, "SELECT current_setting('max_memory')", allowed_dirs=[tmp_path], max_memory="1GB"
    )
    assert rows == [("953.6 MiB",)]


def test_the_memory_setting_is_checked() -> None:
    assert Settings(max_memory="60%").max_memory == "60%"
    assert Settings(max_memory="8GiB").max_memory == "8GiB"
    with pytest.raises(ValidationError):
        Settings(max_memory="lots")
