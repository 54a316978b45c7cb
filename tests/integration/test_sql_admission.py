"""The allow-list admits the SQL analysts write: the 22 TPC-H queries run through `queryforge query`
on the DuckDB warehouse, on PostgreSQL (as the documented least-privilege reader would run them)
and on MariaDB, over the same small generated TPC-H data, and agree on their row counts and first
numbers. The analyst corpus passes the policy on DuckDB; the TPC-DS subset and the dbt-style models
pass it on every dialect each query names (`-- dialects:`), and the vetted trees, written for
DuckDB and PostgreSQL, run there over empty tables of their schemas."""

from __future__ import annotations

import datetime as dt
import random
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pymysql
import pytest
import yaml

from queryforge.errors import QueryForgeError
from queryforge.sql.safety import check_query
from queryforge.workspace import Workspace
from tests.services import mysql_database, postgres_database

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sql"


def corpus(name: str) -> list[tuple[str, str]]:
    text = (FIXTURES / name).read_text()
    parts = re.split(r"^-- name: (\S+)\n", text, flags=re.M)
    return [(i, sql.strip().rstrip(";")) for i, sql in zip(parts[1::2], parts[2::2], strict=True)]


TPCH = corpus("tpch.sql")
ANALYST = corpus("analyst.sql")


def dialect_corpus(name: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """(name, sql, dialects) of a corpus whose queries name their dialects in a second comment line
    (`-- dialects: duckdb, postgres`)."""
    out = []
    for case, body in corpus(name):
        first, _, sql = body.partition("\n")
        found = re.fullmatch(r"-- dialects: (.+)", first.strip())
        assert found, f"{name}: {case} does not name its dialects"
        out.append((case, sql.strip(), tuple(d.strip() for d in found.group(1).split(","))))
    return out


TPCDS = dialect_corpus("tpcds.sql")
DBT = dialect_corpus("dbt_style.sql")

TABLES: dict[str, list[tuple[str, str]]] = {
    "region": [("r_regionkey", "INTEGER"), ("r_name", "VARCHAR(25)"), ("r_comment", "VARCHAR(152)")],
    "nation": [
        ("n_nationkey", "INTEGER"),
        ("n_name", "VARCHAR(25)"),
        ("n_regionkey", "INTEGER"),
        ("n_comment", "VARCHAR(152)"),
    ],
    "part": [
        ("p_partkey", "INTEGER"),
        ("p_name", "VARCHAR(55)"),
        ("p_mfgr", "VARCHAR(25)"),
        ("p_brand", "VARCHAR(10)"),
        ("p_type", "VARCHAR(25)"),
        ("p_size", "INTEGER"),
        ("p_container", "VARCHAR(10)"),
        ("p_retailprice", "DECIMAL(15,2)"),
        ("p_comment", "VARCHAR(23)"),
    ],
    "supplier": [
        ("s_suppkey", "INTEGER"),
        ("s_name", "VARCHAR(25)"),
        ("s_address", "VARCHAR(40)"),
        ("s_nationkey", "INTEGER"),
        ("s_phone", "VARCHAR(15)"),
        ("s_acctbal", "DECIMAL(15,2)"),
        ("s_comment", "VARCHAR(101)"),
    ],
    "partsupp": [
        ("ps_partkey", "INTEGER"),
        ("ps_suppkey", "INTEGER"),
        ("ps_availqty", "INTEGER"),
        ("ps_supplycost", "DECIMAL(15,2)"),
        ("ps_comment", "VARCHAR(199)"),
    ],
    "customer": [
        ("c_custkey", "INTEGER"),
        ("c_name", "VARCHAR(25)"),
        ("c_address", "VARCHAR(40)"),
        ("c_nationkey", "INTEGER"),
        ("c_phone", "VARCHAR(15)"),
        ("c_acctbal", "DECIMAL(15,2)"),
        ("c_mktsegment", "VARCHAR(10)"),
        ("c_comment", "VARCHAR(117)"),
    ],
    "orders": [
        ("o_orderkey", "INTEGER"),
        ("o_custkey", "INTEGER"),
        ("o_orderstatus", "VARCHAR(1)"),
        ("o_totalprice", "DECIMAL(15,2)"),
        ("o_orderdate", "DATE"),
        ("o_orderpriority", "VARCHAR(15)"),
        ("o_clerk", "VARCHAR(15)"),
        ("o_shippriority", "INTEGER"),
        ("o_comment", "VARCHAR(79)"),
    ],
    "lineitem": [
        ("l_orderkey", "INTEGER"),
        ("l_partkey", "INTEGER"),
        ("l_suppkey", "INTEGER"),
        ("l_linenumber", "INTEGER"),
        ("l_quantity", "DECIMAL(15,2)"),
        ("l_extendedprice", "DECIMAL(15,2)"),
        ("l_discount", "DECIMAL(15,2)"),
        ("l_tax", "DECIMAL(15,2)"),
        ("l_returnflag", "VARCHAR(1)"),
        ("l_linestatus", "VARCHAR(1)"),
        ("l_shipdate", "DATE"),
        ("l_commitdate", "DATE"),
        ("l_receiptdate", "DATE"),
        ("l_shipinstruct", "VARCHAR(25)"),
        ("l_shipmode", "VARCHAR(10)"),
        ("l_comment", "VARCHAR(44)"),
    ],
}

NATIONS = ["ALGERIA", "BRAZIL", "CANADA", "FRANCE", "GERMANY", "SAUDI ARABIA", "CHINA", "JAPAN"]
REGIONS = ["AFRICA", "AMERICA", "ASIA", "EUROPE", "MIDDLE EAST"]
NATION_REGION = [0, 1, 1, 3, 3, 4, 2, 2]


def generate(seed: int = 7) -> dict[str, list[tuple[Any, ...]]]:
    """Small TPC-H-shaped data whose values hit the predicates of all 22 queries."""
    r = random.Random(seed)
    day = dt.date(1993, 1, 1)
    pick = r.choice

    def money(lo: float, hi: float) -> Decimal:
        return Decimal(f"{r.uniform(lo, hi):.2f}")

    data: dict[str, list[tuple[Any, ...]]] = {
        "region": [(i, n, "c") for i, n in enumerate(REGIONS)],
        "nation": [(i, n, NATION_REGION[i], "c") for i, n in enumerate(NATIONS)],
    }
    types = ["ECONOMY ANODIZED STEEL", "PROMO BRUSHED BRASS", "MEDIUM POLISHED TIN", "LARGE PLATED BRASS"]
    containers = ["SM CASE", "MED BOX", "LG PACK", "MED BAG", "SM PKG"]
    data["part"] = [
        (
            p,
            pick(["forest green", "green lime", "blue forest", "plain red"]),
            "M1",
            pick(["Brand#12", "Brand#23", "Brand#34", "Brand#45"]),
            pick(types),
            pick([1, 3, 5, 9, 14, 15, 19, 23]),
            pick(containers),
            money(900, 2000),
            "c",
        )
        for p in range(1, 41)
    ]
    data["supplier"] = [
        (s, f"Supplier#{s:03d}", f"addr {s}", s % len(NATIONS), f"{10 + s}-555", money(-500, 9000),
         pick(["Customer Complaints noted", "fine", "ok"]))
        for s in range(1, 11)
    ]  # fmt: skip
    data["partsupp"] = [
        (p, s, r.randint(1, 9999), money(1, 1000), "c")
        for p in range(1, 41)
        for s in (p % 10 + 1, (p + 3) % 10 + 1)
    ]
    data["customer"] = [
        (c, f"Customer#{c:03d}", f"addr {c}", c % len(NATIONS),
         # customers 26-30 place no orders (TPC-H Q22 looks for rich ones with no orders)
         f"{'13' if c > 25 else pick(['31', '23', '17', '40'])}-{c:03d}",
         money(8000, 9000) if c > 25 else money(-200, 9000),
         pick(["BUILDING", "AUTOMOBILE", "MACHINERY"]), "c")
        for c in range(1, 31)
    ]  # fmt: skip
    orders, items = [], []
    for o in range(1, 121):
        date = day + dt.timedelta(days=r.randint(0, 2000))
        comment = pick(["special requests here", "plain", "regular"])
        orders.append(
            (o, r.randint(1, 25), pick("FOP"), money(100, 5000), date,
             pick(["1-URGENT", "2-HIGH", "3-MEDIUM"]), "Clerk#1", 0, comment)
        )  # fmt: skip
        for n in range(1, r.randint(2, 6)):
            part = r.randint(1, 40)
            ship = date + dt.timedelta(days=r.randint(1, 60))
            items.append(
                (o, part, part % 10 + 1, n, Decimal(r.randint(1, 50)), money(900, 90000), Decimal(pick([
                    "0.04", "0.05", "0.06", "0.07"])), Decimal("0.02"), pick("RAN"), pick("OF"), ship,
                 ship + dt.timedelta(days=r.randint(-20, 20)), ship + dt.timedelta(days=r.randint(1, 30)),
                 pick(["DELIVER IN PERSON", "NONE"]), pick(["MAIL", "SHIP", "AIR", "AIR REG", "TRUCK"]), "c")
            )  # fmt: skip
    data["orders"], data["lineitem"] = orders, items
    return data


DATA = generate()


def _create(cur: Any, marker: str) -> None:
    for name, cols in TABLES.items():
        cur.execute(f"CREATE TABLE {name} ({', '.join(f'{c} {t}' for c, t in cols)})")
        rows = DATA[name]
        if rows:
            holes = ", ".join([marker] * len(cols))
            cur.executemany(f"INSERT INTO {name} VALUES ({holes})", rows)


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    root = tmp_path_factory.mktemp("tpch") / "ws"
    Workspace.init(root, bare=True).close()
    with duckdb.connect(str(root / ".queryforge" / "warehouse.duckdb")) as con:
        _create(con, "?")
    with postgres_database() as pg_url, mysql_database() as my_url:
        with psycopg.connect(pg_url, autocommit=True) as con:
            _create(con.cursor(), "%s")
            con.execute("ANALYZE")
        database = my_url.rsplit("/", 1)[1]
        my = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", database=database)
        try:
            with my.cursor() as cur:
                _create(cur, "%s")
            my.commit()
        finally:
            my.close()
        config = yaml.safe_load((root / "queryforge.yaml").read_text())
        config["connections"]["pg"] = {"url": pg_url}
        config["connections"]["my"] = {"url": my_url}
        (root / "queryforge.yaml").write_text(yaml.safe_dump(config))
        with Workspace(root) as ws:
            yield ws


def _first_number(rows: list[tuple[Any, ...]]) -> float | None:
    for row in rows:
        for value in row:
            if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
                return float(value)
    return None


@pytest.mark.postgres
@pytest.mark.parametrize(("case", "sql"), TPCH, ids=[i for i, _ in TPCH])
def test_tpch_runs_and_agrees_on_duckdb_postgres_and_mariadb(engines: Workspace, case: str, sql: str) -> None:
    results = {
        "duckdb": engines.query(sql),
        "postgres": engines.query(sql, connection="pg"),
        "mariadb": engines.query(sql, connection="my"),
    }
    counts = {name: len(r.rows) for name, r in results.items()}
    assert len(set(counts.values())) == 1, counts
    firsts = {name: _first_number(r.rows) for name, r in results.items()}
    reference = firsts["duckdb"]
    for name, value in firsts.items():
        if reference is None:
            assert value is None, (name, firsts)
        else:
            assert value is not None and value == pytest.approx(reference, rel=1e-6), (name, firsts)
    # The generated data is small; these few queries' predicates are too selective for it.
    assert sum(counts.values()) > 0 or case in {"tpch_q2", "tpch_q17", "tpch_q18", "tpch_q20", "tpch_q21"}


@pytest.mark.parametrize("dialect", ["duckdb", "postgres", "mysql"])
@pytest.mark.parametrize(("case", "sql"), TPCH, ids=[i for i, _ in TPCH])
def test_tpch_passes_the_policy_on_every_dialect(dialect: str, case: str, sql: str) -> None:
    check_query(sql, dialect=dialect, allowed_tables=set(TABLES))


@pytest.mark.parametrize(("case", "sql"), ANALYST, ids=[i for i, _ in ANALYST])
def test_analyst_models_pass_the_policy(case: str, sql: str) -> None:
    check_query(sql)


@pytest.mark.postgres
def test_query_on_a_connection_sends_the_vetted_tree_not_a_reparse(engines: Workspace) -> None:
    """`to_char` has no DuckDB spelling: writing the query back through DuckDB's dialect lost the format."""
    sql = "SELECT to_char(o_orderdate, 'YYYY-MM') AS m FROM orders ORDER BY o_orderkey LIMIT 3"
    got = engines.query(sql, connection="pg")
    url = engines.config.connections["pg"].url
    with psycopg.connect(url) as con:
        expected = con.execute(sql).fetchall()
    assert got.rows == [tuple(r) for r in expected]
    assert all(len(r[0]) == 7 for r in got.rows)


# ---------------------------------------------------------------- row generators and method calls

SPINE_1993 = (
    "SELECT d.day, count(o.o_orderkey) AS orders "
    "FROM generate_series(DATE '1993-01-01', DATE '1993-12-31', INTERVAL 1 DAY) AS d(day) "
    "LEFT JOIN orders o ON o.o_orderdate = d.day GROUP BY d.day ORDER BY d.day"
)


def _day(value: Any) -> dt.date:
    return value.date() if isinstance(value, dt.datetime) else value


@pytest.mark.postgres
def test_a_date_spine_runs_on_duckdb_and_postgres_and_agrees(engines: Workspace) -> None:
    ordered_1993 = sum(1 for o in DATA["orders"] if o[4].year == 1993)
    for connection in (None, "pg"):
        got = engines.query(SPINE_1993, connection=connection)
        assert len(got.rows) == 365, connection
        assert [_day(r[0]) for r in got.rows[:2]] == [dt.date(1993, 1, 1), dt.date(1993, 1, 2)]
        assert sum(r[1] for r in got.rows) == ordered_1993, connection


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("sql", "rows"),
    [
        ("SELECT g.n FROM generate_series(1, 10) AS g(n) ORDER BY 1", [(n,) for n in range(1, 11)]),
        ("SELECT r.n FROM range(5) AS r(n) ORDER BY 1", [(n,) for n in range(5)]),
        ("SELECT u.s FROM unnest(['a', 'b', 'c']) AS u(s) ORDER BY 1", [("a",), ("b",), ("c",)]),
        (
            "SELECT n_name.lower() AS n, n_name.length() AS l FROM nation ORDER BY n_nationkey LIMIT 2",
            [("algeria", 7), ("brazil", 6)],
        ),
    ],
    ids=["generate-series", "range", "unnest", "method-calls"],
)
def test_generators_and_method_calls_run_on_duckdb_and_postgres(
    engines: Workspace, sql: str, rows: list[tuple[Any, ...]]
) -> None:
    for connection in (None, "pg"):
        assert [tuple(r) for r in engines.query(sql, connection=connection).rows] == rows, connection


def test_method_calls_on_duckdb_mean_the_builtin_even_beside_a_schema_of_that_name(
    engines: Workspace,
) -> None:
    """DuckDB resolves `s.upper()` to schema `s`'s own upper() when that schema exists; QueryForge
    sends `upper(s)`, the call it vetted."""
    sql = "SELECT n_name.upper() AS u FROM nation ORDER BY n_nationkey LIMIT 1"
    with duckdb.connect(str(engines.root / ".queryforge" / "warehouse.duckdb")) as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS n_name")
        con.execute("CREATE OR REPLACE MACRO n_name.upper() AS 'somebody else''s code'")
        assert con.execute(sql).fetchall() == [("somebody else's code",)]  # as written, DuckDB's way
    assert engines.query(sql).rows == [("ALGERIA",)]


HOSTILE_NEXT_TO_THEM = [
    "SELECT * FROM generate_series(1, (SELECT count(*) FROM _qf_staging.r01other__lineitem))",
    "SELECT * FROM generate_series(1, (SELECT max(o_orderkey) FROM orders))",
    "SELECT * FROM range((SELECT count(*) FROM read_csv('/etc/passwd')))",
    "SELECT * FROM range(length(read_text('/etc/passwd')))",
    "SELECT * FROM range(1e12)",
    "SELECT * FROM generate_series(DATE '1993-01-01', DATE '2993-01-01', INTERVAL 1 SECOND)",
    "SELECT * FROM unnest(range(1000000000))",
    "SELECT * FROM nation n, range(n.n_nationkey * 1000000000)",
    "SELECT '/etc/passwd'.read_text()",
    "SELECT n_name.getenv() FROM nation",
    "SELECT p.read_csv() FROM nation",
    "SELECT evil.lower(n_name) FROM nation",
]


@pytest.mark.postgres
@pytest.mark.parametrize("sql", HOSTILE_NEXT_TO_THEM)
def test_hostile_generators_and_method_calls_are_blocked_on_duckdb_and_postgres(
    engines: Workspace, sql: str
) -> None:
    for connection in (None, "pg"):
        with pytest.raises(QueryForgeError) as info:
            engines.query(sql, connection=connection)
        assert info.value.exit_code == 2
        assert "blocked" in info.value.message.lower(), info.value.message


# ---------------------------------------------------------------- TPC-DS and dbt-style corpora


def _per_dialect(cases: list[tuple[str, str, tuple[str, ...]]], only: set[str] | None = None) -> list[Any]:
    return [
        pytest.param(case, sql, dialect, id=f"{case}-{dialect}")
        for case, sql, dialects in cases
        for dialect in dialects
        if only is None or dialect in only
    ]


def test_the_corpora_are_large_and_name_known_dialects() -> None:
    assert len(TPCDS) >= 25 and len(DBT) >= 40
    names = [c for c, _, _ in TPCDS + DBT]
    assert len(names) == len(set(names))
    for _, _, dialects in TPCDS + DBT:
        assert set(dialects) <= {"duckdb", "postgres", "mysql"} and dialects
    assert {d for _, _, ds in DBT for d in ds} == {"duckdb", "postgres", "mysql"}


@pytest.mark.parametrize(("case", "sql", "dialect"), _per_dialect(TPCDS))
def test_tpcds_passes_the_policy(case: str, sql: str, dialect: str) -> None:
    check_query(sql, dialect=dialect)


@pytest.mark.parametrize(("case", "sql", "dialect"), _per_dialect(DBT))
def test_dbt_models_pass_the_policy(case: str, sql: str, dialect: str) -> None:
    check_query(sql, dialect=dialect)


CORPUS_SCHEMAS = {"tpcds": "tpcds_schema.sql", "dbt": "dbt_schema.sql"}


@pytest.fixture(scope="module")
def empty_duckdb() -> Iterator[dict[str, duckdb.DuckDBPyConnection]]:
    """In-memory DuckDB databases holding the corpora's tables, empty."""
    cons = {name: duckdb.connect() for name in CORPUS_SCHEMAS}
    for name, schema in CORPUS_SCHEMAS.items():
        cons[name].execute((FIXTURES / schema).read_text())
    yield cons
    for con in cons.values():
        con.close()


RUNNABLE = [
    pytest.param("tpcds", *p.values, id=p.id) for p in _per_dialect(TPCDS, {"duckdb", "postgres"})
] + [pytest.param("dbt", *p.values, id=p.id) for p in _per_dialect(DBT, {"duckdb", "postgres"})]


def test_the_vetted_corpora_run_on_duckdb(empty_duckdb: dict[str, duckdb.DuckDBPyConnection]) -> None:
    """What the policy admits for DuckDB is valid DuckDB: the vetted tree, as sent, binds and runs."""
    failures = []
    for param in RUNNABLE:
        schema, case, sql, dialect = param.values
        if dialect != "duckdb":
            continue
        sent = check_query(sql, dialect="duckdb").sql(dialect="duckdb")
        try:
            empty_duckdb[str(schema)].execute(sent).fetchall()
        except duckdb.Error as exc:
            failures.append(f"{case}: {exc}")
    assert not failures, "\n".join(failures)


@pytest.mark.postgres
def test_the_vetted_corpora_run_on_postgres() -> None:
    """What the policy admits for PostgreSQL is valid PostgreSQL: the vetted tree written for it runs."""
    failures = []
    for schema, file in CORPUS_SCHEMAS.items():
        with postgres_database() as url, psycopg.connect(url, autocommit=True) as con:
            con.execute((FIXTURES / file).read_text())
            for param in RUNNABLE:
                name, case, sql, dialect = param.values
                if name != schema or dialect != "postgres":
                    continue
                sent = check_query(sql, dialect="postgres").sql(dialect="postgres")
                try:
                    con.execute(sent).fetchall()
                except psycopg.Error as exc:
                    failures.append(f"{case}: {exc}")
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------- lateral table functions, run

LATERAL_DATA = (
    "CREATE TABLE subs (id INTEGER, seats INTEGER, start_date DATE, end_date DATE, tags VARCHAR[], doc JSON);"
    "INSERT INTO subs VALUES (1, 2, DATE '2024-01-30', DATE '2024-03-01', ARRAY['a', 'b'], '[10, 20]'),"
    " (2, 0, DATE '2024-02-01', DATE '2024-02-01', ARRAY['c'], '[30]');"
)
LATERAL_RUNS = [
    ("SELECT s.id, r.n FROM subs AS s, range(s.seats) AS r(n) ORDER BY 1, 2", [(1, 0), (1, 1)]),
    (
        "SELECT s.id, count(*) AS months FROM subs AS s CROSS JOIN LATERAL "
        "generate_series(s.start_date, s.end_date, INTERVAL 1 MONTH) AS m(month) GROUP BY 1 ORDER BY 1",
        [(1, 2), (2, 1)],
    ),
    (
        "SELECT s.id, count(d.day) AS days FROM subs AS s LEFT JOIN LATERAL generate_series(s.start_date, "
        "s.start_date + INTERVAL 6 DAY, INTERVAL 1 DAY) AS d(day) ON TRUE GROUP BY 1 ORDER BY 1",
        [(1, 7), (2, 7)],
    ),
    (
        "SELECT s.id, t.tag FROM subs AS s CROSS JOIN LATERAL unnest(s.tags) AS t(tag) ORDER BY 1, 2",
        [(1, "a"), (1, "b"), (2, "c")],
    ),
]


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("sql", "rows"), LATERAL_RUNS, ids=["range", "series-months", "series-offset", "unnest"]
)
def test_lateral_generators_run_on_duckdb_and_postgres_and_agree(
    sql: str, rows: list[tuple[Any, ...]]
) -> None:
    with duckdb.connect() as con:
        con.execute(LATERAL_DATA)
        assert con.execute(check_query(sql).sql("duckdb")).fetchall() == rows
    with postgres_database() as url, psycopg.connect(url, autocommit=True) as pg:
        pg.execute(LATERAL_DATA.replace("VARCHAR[]", "TEXT[]"))
        got = pg.execute(check_query(sql, dialect="postgres").sql("postgres")).fetchall()
        assert [tuple(r) for r in got] == rows


def test_json_row_functions_run_on_duckdb() -> None:
    with duckdb.connect() as con:
        con.execute(LATERAL_DATA)
        sql = "SELECT s.id, j.value FROM subs AS s, json_each(s.doc) AS j ORDER BY 1, 2"
        assert con.execute(check_query(sql).sql("duckdb")).fetchall() == [(1, "10"), (1, "20"), (2, "30")]


@pytest.mark.postgres
def test_json_row_functions_run_on_postgres() -> None:
    sql = (
        "SELECT s.id, e.value::int AS v, e.i FROM subs AS s CROSS JOIN LATERAL "
        "jsonb_array_elements_text(s.doc::jsonb) WITH ORDINALITY AS e(value, i) ORDER BY 1, 3"
    )
    with postgres_database() as url, psycopg.connect(url, autocommit=True) as pg:
        pg.execute(LATERAL_DATA.replace("VARCHAR[]", "TEXT[]"))
        got = pg.execute(check_query(sql, dialect="postgres").sql("postgres")).fetchall()
    assert [tuple(r) for r in got] == [(1, 10, 1), (1, 20, 2), (2, 30, 1)]
