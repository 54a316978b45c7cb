"""Large database extracts and loads on the Spark engine go through Spark JDBC, and keep WAP.

A pipeline reads orders from PostgreSQL and customers from MariaDB, joins and aggregates them,
checks the result and loads it into PostgreSQL (replace) and MariaDB (merge). With the JDBC
threshold forced to 0 every extract and load goes through Spark JDBC (each step's record says so);
the published tables are compared as multisets with the same pipeline on DuckDB and with the
answer computed here from the seeded rows. A failing check, and a sandbox run, leave production
as it was: Spark writes only to the connector's staging tables, and the publish is the connector's.

The JDBC drivers are a real part here: if their jars are missing the tests fail, never skip.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
import yaml

from queryforge.engine import spark_jdbc
from queryforge.libs.spark import JDBC_JARS
from queryforge.runs.executor import RunOutcome
from queryforge.workspace import Workspace
from tests.services import mysql_database, postgres_database

ORDERS = [
    (
        i,
        i % 40 + 1,
        Decimal(f"{(i * 37) % 1000}.{i % 100:02d}"),
        i % 7,
        ("shipped", "pending", "cancelled")[i % 3],
        dt.datetime(2026, 1, 1, 8, 30) + dt.timedelta(hours=i, microseconds=i),
        None if i % 11 == 0 else f"note {i}",
    )
    for i in range(1, 3001)
]
COUNTRIES = ("FR", "DE", "ES", "IT", "NL")
CUSTOMERS = [
    (c, COUNTRIES[c % 5], f"Customer {c} \u00e9", dt.date(2025, 1, 1) + dt.timedelta(days=c))
    for c in range(1, 41)
]

STEPS: list[dict[str, Any]] = [
    {"id": "orders", "extract": {"connection": "pg", "table": "orders"}},
    {
        "id": "customers",
        "extract": {
            "connection": "maria",
            "query": "SELECT customer_id, country, name, signed_up FROM customers WHERE customer_id > 0",
        },
    },
    {"id": "joined", "join": {"left": "orders", "right": "customers", "on": ["customer_id"]}},
    {
        "id": "by_country",
        "sql": "SELECT country, count(*) AS orders, sum(amount) AS revenue, max(ordered_at) AS last_at "
        "FROM joined WHERE status <> 'cancelled' GROUP BY country",
    },
    {
        "id": "ok",
        "check": {"input": "by_country", "rules": [{"not_null": ["country"]}, {"unique": ["country"]}]},
    },
    {
        "id": "to_pg",
        "load": {"input": "joined", "connection": "pg_out", "table": "enriched", "mode": "replace"},
    },
    {
        "id": "to_maria",
        "load": {
            "input": "by_country",
            "connection": "maria_out",
            "table": "country_totals",
            "mode": "merge",
            "keys": ["country"],
        },
    },
]
JDBC_STEPS = {"orders", "customers", "to_pg", "to_maria"}


@pytest.fixture(scope="module", autouse=True)
def jdbc_jars_are_installed() -> None:
    missing = [j for j in JDBC_JARS if not Path(j).is_file()]
    if missing:
        pytest.fail(
            f"The Spark JDBC tests need the JDBC drivers {missing}: make setup installs them "
            "(apt-get install libpostgresql-jdbc-java libmariadb-java)",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def sources() -> Iterator[dict[str, str]]:
    """Seeded source databases: orders in PostgreSQL, customers in MariaDB (statistics up to date)."""
    with postgres_database() as pg, mysql_database() as maria:
        with psycopg.connect(pg, autocommit=True) as con:
            con.execute(
                "CREATE TABLE orders (order_id bigint PRIMARY KEY, customer_id int, amount numeric(10,2), "
                "qty int, status text, ordered_at timestamp, note text)"
            )
            with con.cursor() as cur:
                cur.executemany("INSERT INTO orders VALUES (%s, %s, %s, %s, %s, %s, %s)", ORDERS)
            con.execute("ANALYZE orders")
        with _maria(maria) as con, con.cursor() as cur:
            cur.execute(
                "CREATE TABLE customers (customer_id INT PRIMARY KEY, country VARCHAR(2), "
                "name VARCHAR(100), signed_up DATE) DEFAULT CHARSET=utf8mb4"
            )
            cur.executemany("INSERT INTO customers VALUES (%s, %s, %s, %s)", CUSTOMERS)
            cur.execute("ANALYZE TABLE customers")
            cur.fetchall()
        yield {"pg": pg, "maria": maria}


def _maria(url: str) -> Any:
    name = url.rsplit("/", 1)[1]
    return pymysql.connect(
        host="127.0.0.1",
        port=3306,
        user="root",
        password="",
        database=name,
        autocommit=True,
        charset="utf8mb4",
    )


def workspace(root: Path, template: Path, sources: dict[str, str], targets: dict[str, str]) -> Path:
    shutil.copytree(template, root)
    config = yaml.safe_load((root / "queryforge.yaml").read_text())
    config.setdefault("connections", {}).update(
        {
            "pg": {"url": sources["pg"]},
            "maria": {"url": sources["maria"]},
            "pg_out": {"url": targets["pg"], "writable": True},
            "maria_out": {"url": targets["maria"], "writable": True},
        }
    )
    (root / "queryforge.yaml").write_text(yaml.safe_dump(config))
    write_pipeline(root, STEPS)
    return root


def write_pipeline(root: Path, steps: list[dict[str, Any]]) -> None:
    spec = {"name": "jdbc", "steps": steps}
    (root / "pipelines" / "jdbc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def run(root: Path, engine: str, *, sandbox: bool = False) -> tuple[RunOutcome, dict[str, str]]:
    """Run the pipeline; the outcome and each step's recorded note (it says how data moved)."""
    with Workspace(root) as ws:
        ws.use_engine(engine)
        outcome = ws.run("pipelines/jdbc.yaml", sandbox=sandbox)
        notes = {s.step_id: s.message or "" for s in ws.repo.list_steps(outcome.run_id)}
    return outcome, notes


def _value(v: Any) -> Any:
    if isinstance(v, Decimal):
        return v.normalize()
    if isinstance(v, float):
        return float(f"{v:.12g}")
    return v


Rows = Counter[tuple[tuple[str, Any], ...]]


def _rows(names: list[str], found: list[tuple[Any, ...]]) -> Rows:
    """A multiset of rows, each as (column, value) pairs in name order (column order aside)."""
    return Counter(tuple(sorted(zip(names, (_value(v) for v in r), strict=True))) for r in found)


def pg_table(url: str, name: str) -> tuple[list[tuple[str, str]], Rows]:
    with psycopg.connect(url) as con:
        types = con.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            [name],
        ).fetchall()
        cur = con.execute(f"SELECT * FROM {name}")
        names = [d.name for d in cur.description or ()]
        return [(r[0], r[1]) for r in types], _rows(names, cur.fetchall())


def maria_table(url: str, name: str) -> tuple[list[tuple[str, str]], Rows]:
    with _maria(url) as con, con.cursor() as cur:
        cur.execute(
            "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
            "AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
            [name],
        )
        types = [(str(r[0]), str(r[1])) for r in cur.fetchall()]
        cur.execute(f"SELECT * FROM `{name}`")
        names = [d[0] for d in cur.description or ()]
        return types, _rows(names, list(cur.fetchall()))


def published(targets: dict[str, str]) -> dict[str, tuple[list[tuple[str, str]], Rows]]:
    return {
        "enriched": pg_table(targets["pg"], "enriched"),
        "country_totals": maria_table(targets["maria"], "country_totals"),
    }


def expected(*, status_not: str = "cancelled", min_qty: int = -1) -> dict[str, Rows]:
    """The answer computed here, from the seeded rows (independent of both engines)."""
    customers = {c[0]: c for c in CUSTOMERS}
    order_cols = ["order_id", "customer_id", "amount", "qty", "status", "ordered_at", "note"]
    joined = []
    for o in ORDERS:
        c = customers[o[1]]
        joined.append(
            {**dict(zip(order_cols, o, strict=True)), "country": c[1], "name": c[2], "signed_up": c[3]}
        )
    loaded = [r for r in joined if r["qty"] > min_qty]
    totals: dict[str, dict[str, Any]] = {}
    for r in joined:
        if r["status"] == status_not:
            continue
        t = totals.setdefault(
            r["country"],
            {"country": r["country"], "orders": 0, "revenue": Decimal(0), "last_at": r["ordered_at"]},
        )
        t["orders"] += 1
        t["revenue"] += r["amount"]
        t["last_at"] = max(t["last_at"], r["ordered_at"])
    return {
        "enriched": Counter(tuple(sorted((k, _value(v)) for k, v in r.items())) for r in loaded),
        "country_totals": Counter(
            tuple(sorted((k, _value(v)) for k, v in t.items())) for t in totals.values()
        ),
    }


@pytest.fixture
def targets() -> Iterator[dict[str, str]]:
    """Empty target databases for one test: PostgreSQL and MariaDB."""
    with postgres_database() as pg, mysql_database() as maria:
        yield {"pg": pg, "maria": maria}


@pytest.fixture(scope="module")
def on_duckdb(
    sources: dict[str, str], demo_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, tuple[list[tuple[str, str]], Rows]]]:
    """What the same pipeline publishes on DuckDB (the canonical engine)."""
    with postgres_database() as pg, mysql_database() as maria:
        root = workspace(
            tmp_path_factory.mktemp("duckdb") / "ws", demo_template, sources, {"pg": pg, "maria": maria}
        )
        outcome, notes = run(root, "duckdb")
        assert outcome.status == "succeeded", outcome.error and outcome.error.render()
        assert not any("JDBC" in n for n in notes.values())
        yield published({"pg": pg, "maria": maria})


def staging_tables(targets: dict[str, str], run_id: str) -> list[str]:
    """The staging tables a run left in the target databases (MariaDB's staging is one per server)."""
    prefix = run_id.replace("-", "_")
    with psycopg.connect(targets["pg"]) as con:
        found = [
            f"pg:{r[0]}"
            for r in con.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = '_qf_staging' AND tablename LIKE %s",
                [f"{prefix}%"],
            ).fetchall()
        ]
    with _maria(targets["maria"]) as con, con.cursor() as cur:
        cur.execute(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '_qf_staging' "
            "AND TABLE_NAME LIKE %s",
            [f"{prefix}%"],
        )
        found += [f"maria:{r[0]}" for r in cur.fetchall()]
    return sorted(found)


def user_tables(targets: dict[str, str]) -> dict[str, list[str]]:
    """The tables outside staging: only the targets themselves may be there."""
    with psycopg.connect(targets["pg"]) as con:
        pg = [
            r[0]
            for r in con.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
        ]
    with _maria(targets["maria"]) as con, con.cursor() as cur:
        cur.execute("SHOW TABLES")
        maria = [str(r[0]) for r in cur.fetchall()]
    return {"pg": sorted(pg), "maria": sorted(maria)}


def test_spark_jdbc_extracts_and_loads_give_duckdbs_tables_and_the_right_answer(
    sources: dict[str, str],
    targets: dict[str, str],
    on_duckdb: dict[str, tuple[list[tuple[str, str]], Rows]],
    demo_template: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(spark_jdbc.ABOVE_ROWS_ENV, "0")  # every database extract and load by JDBC
    root = workspace(tmp_path / "ws", demo_template, sources, targets)
    outcome, notes = run(root, "spark")
    assert outcome.status == "succeeded", outcome.error and outcome.error.render()
    for step in ("orders", "customers"):
        assert "read through Spark JDBC" in notes[step], (step, notes[step])
    for step in ("to_pg", "to_maria"):
        assert "staged through Spark JDBC" in notes[step], (step, notes[step])
    got = published(targets)
    want = expected()
    for name, (schema, rows) in got.items():
        assert schema == on_duckdb[name][0], name  # the same column names and types as on DuckDB
        assert rows == on_duckdb[name][1], name  # the same rows as on DuckDB (multisets)
        assert rows == want[name], name  # and the right answer
    assert staging_tables(targets, outcome.run_id) == []  # the publish removed them
    assert user_tables(targets) == {"pg": ["enriched"], "maria": ["country_totals"]}


def test_the_threshold_chooses_per_input_by_the_databases_estimate(
    sources: dict[str, str],
    targets: dict[str, str],
    demo_template: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Above 500 rows: the 3,000 orders and the joined load go by JDBC, the 40 customers and the
    5 country totals through Arrow; the answer is the same."""
    monkeypatch.setenv(spark_jdbc.ABOVE_ROWS_ENV, "500")
    root = workspace(tmp_path / "ws", demo_template, sources, targets)
    outcome, notes = run(root, "spark")
    assert outcome.status == "succeeded", outcome.error and outcome.error.render()
    assert {s for s, n in notes.items() if "Spark JDBC" in n} == {"orders", "to_pg"}, notes
    want = expected()
    assert {name: rows for name, (_, rows) in published(targets).items()} == want


def test_a_failing_check_leaves_production_untouched(
    sources: dict[str, str],
    targets: dict[str, str],
    demo_template: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(spark_jdbc.ABOVE_ROWS_ENV, "0")
    root = workspace(tmp_path / "ws", demo_template, sources, targets)
    first, _ = run(root, "spark")
    assert first.status == "succeeded", first.error and first.error.render()
    before = published(targets)
    steps = [dict(s) for s in STEPS]
    steps[3] = {"id": "by_country", "sql": STEPS[3]["sql"].replace("<> 'cancelled'", "= 'pending'")}
    steps[4] = {"id": "ok", "check": {"input": "by_country", "rules": [{"row_count": {"max": 1}}]}}
    write_pipeline(root, steps)
    failed, _ = run(root, "spark")
    assert failed.status == "failed" and failed.failed_checks, failed.status
    assert published(targets) == before  # production: the previous rows, all of them
    assert staging_tables(targets, failed.run_id) == []
    assert user_tables(targets) == {"pg": ["enriched"], "maria": ["country_totals"]}


def test_spark_stages_by_jdbc_and_only_the_connectors_publish_moves_it_to_production(
    sources: dict[str, str],
    targets: dict[str, str],
    demo_template: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A sandbox run stages through Spark JDBC and stops: production keeps its rows, the staged
    tables are not the targets. `commit` publishes exactly them, in the connector's transaction."""
    monkeypatch.setenv(spark_jdbc.ABOVE_ROWS_ENV, "0")
    root = workspace(tmp_path / "ws", demo_template, sources, targets)
    first, _ = run(root, "spark")
    assert first.status == "succeeded", first.error and first.error.render()
    before = published(targets)
    steps = [dict(s) for s in STEPS]
    steps[3] = {"id": "by_country", "sql": STEPS[3]["sql"].replace("<> 'cancelled'", "<> 'pending'")}
    steps.insert(3, {"id": "bulky", "filter": {"input": "joined", "where": "qty > 2"}})
    steps[6] = {**steps[6], "load": {**steps[6]["load"], "input": "bulky"}}
    write_pipeline(root, steps)
    audited, notes = run(root, "spark", sandbox=True)
    assert audited.status == "audited", audited.error and audited.error.render()
    assert "staged through Spark JDBC" in notes["to_pg"] and "staged through Spark JDBC" in notes["to_maria"]
    assert published(targets) == before
    prefix = audited.run_id.replace("-", "_")
    assert staging_tables(targets, audited.run_id) == [f"maria:{prefix}__to_maria", f"pg:{prefix}__to_pg"]
    assert user_tables(targets) == {"pg": ["enriched"], "maria": ["country_totals"]}
    with Workspace(root) as ws:
        committed = ws.commit(audited.run_id)
    assert committed.status == "succeeded", committed.error and committed.error.render()
    want = expected(status_not="pending", min_qty=2)
    assert {name: rows for name, (_, rows) in published(targets).items()} == want
    assert staging_tables(targets, audited.run_id) == []


def test_jdbc_access_keeps_the_password_out_of_urls_and_reprs(tmp_path: Path) -> None:
    from queryforge.connectors.base import ConnectionConfig
    from queryforge.connectors.postgres import PostgresConnector

    secret = "s3cr/et:pw"
    config = ConnectionConfig(
        name="wh", url="postgresql://etl@db.example:6543/sales?sslmode=require", options={"password": secret}
    )
    found = PostgresConnector(config, tmp_path).jdbc()
    assert found is not None
    assert found.url == "jdbc:postgresql://db.example:6543/sales?sslmode=require"
    assert (
        found.write_url
        == "jdbc:postgresql://db.example:6543/sales?sslmode=require&reWriteBatchedInserts=true"
    )
    assert (found.user, found.password) == ("etl", secret)
    assert secret not in repr(found) and secret not in found.url + found.write_url
    assert "default_transaction_read_only" in found.read_init
    socket = ConnectionConfig(name="local", url="postgresql:///sales?host=/var/run/postgresql")
    assert PostgresConnector(socket, tmp_path).jdbc() is None  # JDBC has no Unix sockets: Arrow it is


def test_the_threshold_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    from queryforge.errors import ConfigError

    monkeypatch.delenv(spark_jdbc.ABOVE_ROWS_ENV, raising=False)
    assert spark_jdbc.above_rows() == spark_jdbc.DEFAULT_ABOVE_ROWS
    assert not spark_jdbc.wanted(None) and not spark_jdbc.wanted(spark_jdbc.DEFAULT_ABOVE_ROWS)
    assert spark_jdbc.wanted(spark_jdbc.DEFAULT_ABOVE_ROWS + 1)
    monkeypatch.setenv(spark_jdbc.ABOVE_ROWS_ENV, "0")
    assert spark_jdbc.wanted(None) and spark_jdbc.wanted(0)
    monkeypatch.setenv(spark_jdbc.ABOVE_ROWS_ENV, "many")
    with pytest.raises(ConfigError, match=spark_jdbc.ABOVE_ROWS_ENV):
        spark_jdbc.above_rows()


def test_the_session_has_the_jdbc_drivers_on_its_classpath() -> None:
    from queryforge.libs.spark import has_class, shared_session

    session = shared_session()
    assert has_class(session, "org.postgresql.Driver")
    assert has_class(session, "org.mariadb.jdbc.Driver")
    assert not has_class(session, "org.example.NoSuchDriver")
