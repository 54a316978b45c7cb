"""Shared helpers of the PostgreSQL and MariaDB connector tests.

Each test gets a fresh database (`tests.services`), a workspace whose `queryforge.yaml` names it,
and YAML pipelines written into the workspace. What a run did is always checked with the plain
driver (psycopg / PyMySQL, autocommit) or with SQL the test computes itself in the database, never
with QueryForge's own reading code.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import yaml

from queryforge.connectors.sql import SqlConnector
from queryforge.store import StepRecord
from queryforge.workspace import Workspace

Row = tuple[Any, ...]


# ------------------------------------------------------------------ the databases, seen by the plain driver


class Database:
    """A fresh test database and one autocommit connection of the plain driver to check it."""

    url: str
    name: str

    def execute(self, *statements: str) -> None:
        raise NotImplementedError

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        raise NotImplementedError

    def value(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self.rows(sql, params)
        return rows[0][0] if rows else None

    def tables(self) -> list[str]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class Postgres(Database):
    def __init__(self, url: str) -> None:
        self.url = url
        self.name = url.rsplit("/", 1)[1]
        # No server-side prepared statements: the same check may run before and after a table is replaced.
        self.con = psycopg.connect(url, autocommit=True, prepare_threshold=None)

    def execute(self, *statements: str) -> None:
        for statement in statements:
            self.con.execute(statement.encode())

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cur = self.con.execute(sql.encode(), list(params) or None)
        return [tuple(r) for r in cur.fetchall()] if cur.description else []

    def tables(self, schema: str = "public") -> list[str]:
        return [
            r[0]
            for r in self.rows(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1",
                [schema],
            )
        ]

    def close(self) -> None:
        self.con.close()


class MariaDB(Database):
    def __init__(self, url: str) -> None:
        self.url = url
        self.name = url.rsplit("/", 1)[1]
        self.con = pymysql.connect(
            host="127.0.0.1", port=3306, user="root", password="", database=self.name, autocommit=True
        )

    def execute(self, *statements: str) -> None:
        with self.con.cursor() as cur:
            for statement in statements:
                cur.execute(statement)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self.con.cursor() as cur:
            cur.execute(sql, list(params) or None)
            return [tuple(r) for r in cur.fetchall()]

    def tables(self, schema: str | None = None) -> list[str]:
        return [
            r[0]
            for r in self.rows(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s ORDER BY 1",
                [schema or self.name],
            )
        ]

    def close(self) -> None:
        self.con.close()


# ------------------------------------------------------------------ workspaces and pipelines


def open_workspace(root: Path, connections: dict[str, dict[str, Any]]) -> Workspace:
    """A bare workspace in `root` whose queryforge.yaml declares `connections` (besides the warehouse)."""
    Workspace.init(root, bare=True).close()
    config = yaml.safe_load((root / "queryforge.yaml").read_text())
    config["connections"].update(connections)
    (root / "queryforge.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return Workspace(root)


def write_pipeline(ws: Workspace, name: str, steps: list[dict[str, Any]]) -> str:
    path = ws.root / "pipelines" / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "steps": steps}, sort_keys=False, allow_unicode=True))
    return str(path)


def extract(step_id: str, connection: str, table: str | None = None, **options: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"connection": connection, **options}
    if table is not None:
        body["table"] = table
    return {"id": step_id, "extract": body}


def load(
    step_id: str, source: str, connection: str, table: str, mode: str = "replace", **options: Any
) -> dict[str, Any]:
    return {
        "id": step_id,
        "load": {"input": source, "connection": connection, "table": table, "mode": mode, **options},
    }


def copy_pipeline(
    ws: Workspace,
    name: str,
    source: tuple[str, str],
    target: tuple[str, str],
    mode: str = "replace",
    **options: Any,
) -> str:
    """extract `source` (connection, table) -> load into `target` (connection, table)."""
    return write_pipeline(
        ws, name, [extract("src", *source), load("publish", "src", *target, mode=mode, **options)]
    )


def step(ws: Workspace, run_id: str, step_id: str) -> StepRecord:
    return next(s for s in ws.repo.list_steps(run_id) if s.step_id == step_id)


def connector(ws: Workspace, name: str) -> SqlConnector:
    """A connector of the workspace, opened outside any run (the caller closes it)."""
    return ws.connections().sql(name)


def staging_tables(ws: Workspace, name: str) -> list[str]:
    conn = connector(ws, name)
    try:
        return conn.staging_tables()
    finally:
        conn.close()


# ------------------------------------------------------------------ comparing values


def multiset(rows: Sequence[Sequence[Any]]) -> Counter[Row]:
    return Counter(tuple(r) for r in rows)


def plain(value: Any) -> Any:
    """One value as a driver-neutral Python value: what PostgreSQL and MariaDB drivers mean alike.

    MariaDB's driver gives TIME as a timedelta and booleans as 0/1; an aware datetime is compared as
    its UTC wall clock (how MariaDB stores it); a UUID as its text.
    """
    if isinstance(value, dt.timedelta):
        return (dt.datetime.min + value).time()
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def plain_rows(rows: Sequence[Sequence[Any]]) -> list[Row]:
    return [tuple(plain(v) for v in r) for r in rows]


# ------------------------------------------------------------------ the load-mode scenario (both databases)

TARGET_ROWS = [
    "(1, 'eu', 'old one', 0.0)",
    "(2, 'us', 'same two', 2.0)",
    "(9, 'eu', 'keep', 9.0)",
    "(3, NULL, NULL, NULL)",
]
INCOMING_ROWS = [
    "(1, 'eu', 'Ann', 1.5)",  # key 1 exists: changed
    "(2, 'us', 'same two', 2.0)",  # identical to production: neither added nor changed
    "(4, 'us', 'Dan', NULL)",  # new
    "(5, NULL, 'Eve \u00fcn\u00ef\u00e7\u00f8d\u00e9', -0.5)",  # new
]


def seed_load_modes(db: Database, primary_key: bool) -> None:
    pk = " PRIMARY KEY" if primary_key else ""
    db.execute(
        f"CREATE TABLE target (id INTEGER NOT NULL{pk}, region VARCHAR(10), name VARCHAR(50), "
        "score DOUBLE PRECISION)",
        "CREATE TABLE incoming (id INTEGER NOT NULL, region VARCHAR(10), name VARCHAR(50), "
        "score DOUBLE PRECISION)",
        f"INSERT INTO target VALUES {', '.join(TARGET_ROWS)}",
        f"INSERT INTO incoming VALUES {', '.join(INCOMING_ROWS)}",
    )


def expected_by_sql(db: Database, mode: str, keys: list[str]) -> tuple[list[Row], dict[str, int]]:
    """What `target` must hold after the load, and the diff, computed by the database from the inputs."""
    cols = "id, region, name, score"
    if mode == "append":
        rows = db.rows(f"SELECT {cols} FROM target UNION ALL SELECT {cols} FROM incoming")
        diff = {"added": db.value("SELECT count(*) FROM incoming"), "removed": 0, "changed": 0}
    elif mode == "replace":
        rows = db.rows(f"SELECT {cols} FROM incoming")
        added = db.value(
            f"SELECT count(*) FROM (SELECT {cols} FROM incoming EXCEPT ALL SELECT {cols} FROM target) a"
        )
        removed = db.value(
            f"SELECT count(*) FROM (SELECT {cols} FROM target EXCEPT ALL SELECT {cols} FROM incoming) r"
        )
        diff = {"added": added, "removed": removed, "changed": 0}
    else:
        match = " AND ".join(f"i.{k} = t.{k}" for k in keys)
        rows = db.rows(
            f"SELECT {cols} FROM target t WHERE NOT EXISTS (SELECT 1 FROM incoming i WHERE {match}) "
            f"UNION ALL SELECT {cols} FROM incoming"
        )
        added = db.value(
            f"SELECT count(*) FROM incoming i WHERE NOT EXISTS (SELECT 1 FROM target t WHERE {match})"
        )
        changed = db.value(
            f"SELECT count(*) FROM (SELECT {cols} FROM incoming i WHERE EXISTS "
            f"(SELECT 1 FROM target t WHERE {match}) EXCEPT ALL SELECT {cols} FROM target) c"
        )
        diff = {"added": added, "removed": 0, "changed": changed}
    return rows, {k: int(v) for k, v in diff.items()}


# ------------------------------------------------------------------ every supported type, per database

# Text that breaks naive escaping: tabs, newlines, CR, backslashes, both quotes, a literal \N, unicode.
TRICKY_TEXT = (
    "tab\there\nnew line\r\ncr \\ back\\slash 'single' \"double\" \\N "
    "\u00fcn\u00ef\u00e7\u00f8d\u00e9 \U0001f600"
)

PG_TYPES_DDL = (
    "CREATE TABLE types (id integer PRIMARY KEY, i16 smallint, i32 integer, i64 bigint, "
    "f64 double precision, flag boolean, amount numeric(12,2), note text, day date, "
    "at timestamp(6), at_tz timestamptz, clock time, doc json, docb jsonb, uid uuid, blob bytea)"
)
PG_TYPES_ROWS: list[Row] = [
    (
        1, 32767, 2147483647, 9223372036854775807, 0.1 + 0.2, True, Decimal("9999999999.99"),
        TRICKY_TEXT, dt.date(2024, 2, 29), dt.datetime(2024, 2, 29, 23, 59, 59, 999999),
        dt.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
        dt.time(23, 59, 59, 999999), '{"a": [1, 2.5, "x"], "b": null}', '{"k": "v", "n": 1}',
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", b"\x00\xff\x7f\n\t\\",
    ),
    (
        2, -32768, -2147483648, -9223372036854775808, -1e-300, False, Decimal("-9999999999.99"),
        "", dt.date(1000, 1, 1), dt.datetime(1970, 1, 1),
        dt.datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=dt.UTC),
        dt.time(0, 0), "[]", '"just a string"', "00000000-0000-0000-0000-000000000000", b"",
    ),
    (
        3, 0, 0, 0, 1.5e300, True, Decimal("0.01"), " ", dt.date(9999, 12, 31),
        dt.datetime(2000, 1, 1, 0, 0, 0, 1), dt.datetime(2038, 1, 19, 3, 14, 8, tzinfo=dt.UTC),
        dt.time(12, 0, 0, 1), "{}", "null", "ffffffff-ffff-ffff-ffff-ffffffffffff", b"\x01",
    ),
    (4, *[None] * 15),
]  # fmt: skip
PG_TYPE_COLUMNS = [
    "id", "i16", "i32", "i64", "f64", "flag", "amount", "note", "day", "at", "at_tz", "clock", "doc", "docb",
    "uid", "blob",
]  # fmt: skip

MARIADB_TYPES_DDL = (
    "CREATE TABLE types (id INT PRIMARY KEY, i16 SMALLINT, i32 INT, i64 BIGINT, f64 DOUBLE, flag BOOLEAN, "
    "amount DECIMAL(12,2), note TEXT, day DATE, at DATETIME(6), clock TIME(6), u64 BIGINT UNSIGNED) "
    "DEFAULT CHARSET=utf8mb4"
)
MARIADB_TYPES_ROWS: list[Row] = [
    (
        1, 32767, 2147483647, 9223372036854775807, 0.1 + 0.2, True, Decimal("9999999999.99"),
        TRICKY_TEXT, dt.date(2024, 2, 29), dt.datetime(2024, 2, 29, 23, 59, 59, 999999),
        dt.time(23, 59, 59, 999999), 18446744073709551615,
    ),
    (
        2, -32768, -2147483648, -9223372036854775808, -1e-300, False, Decimal("-9999999999.99"),
        "", dt.date(1000, 1, 1), dt.datetime(1970, 1, 1, 0, 0, 1), dt.time(0, 0), 9223372036854775808,
    ),
    (
        3, 0, 0, 0, 1.5e300, True, Decimal("0.01"), " ", dt.date(9999, 12, 31),
        dt.datetime(2000, 1, 1, 0, 0, 0, 1), dt.time(12, 0, 0, 1), 0,
    ),
    (4, *[None] * 11),
]  # fmt: skip
MARIADB_TYPE_COLUMNS = [
    "id", "i16", "i32", "i64", "f64", "flag", "amount", "note", "day", "at", "clock", "u64",
]  # fmt: skip


def seed_types(db: Database) -> None:
    if isinstance(db, Postgres):
        db.execute(PG_TYPES_DDL)
        marks = ", ".join(["%s"] * len(PG_TYPE_COLUMNS))
        for row in PG_TYPES_ROWS:
            db.con.execute(f"INSERT INTO types VALUES ({marks})", list(row))
    else:
        db.execute(MARIADB_TYPES_DDL)
        marks = ", ".join(["%s"] * len(MARIADB_TYPE_COLUMNS))
        with db.con.cursor() as cur:
            cur.executemany(f"INSERT INTO types VALUES ({marks})", MARIADB_TYPES_ROWS)


# ------------------------------------------------------------------ odd names, empty input, long step ids

LONG_A = "load_customers_into_the_warehouse_table_number_a"  # longer than a staging name may be,
LONG_B = "load_customers_into_the_warehouse_table_number_b"  # and the same up to the cut


def seed_odd_names(db: Database) -> list[dict[str, Any]]:
    """Tables whose column names need quoting; returns the steps of a pipeline over them."""
    q = '"' if isinstance(db, Postgres) else "`"
    cols = f"{q}Order ID{q} INTEGER, {q}na\u00efve Name{q} VARCHAR(20), {q}select{q} INTEGER"
    db.execute(
        f"CREATE TABLE src ({cols})",
        "INSERT INTO src VALUES (1, 'a', 10), (2, 'b', 20)",
        f"CREATE TABLE tgt ({cols}, PRIMARY KEY ({q}Order ID{q}))",
        "INSERT INTO tgt VALUES (1, 'old', 0), (3, 'kept', 30)",
        f"CREATE TABLE empty_src ({cols})",
    )
    return [
        extract("s", "db", "src"),
        extract("e", "db", "empty_src"),
        load("merged", "s", "db", "tgt", mode="merge", keys=["Order ID"]),
        load("empty", "e", "db", "from_empty", mode="merge", keys=["Order ID"]),
        load(LONG_A, "s", "db", "long_a"),
        load(LONG_B, "e", "db", "long_b"),
    ]
