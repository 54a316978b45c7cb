"""Databases with least-privilege roles, made by exactly the GRANTs that docs/connectors.md documents.

The role is the wall, QueryForge's SQL policy the guard rail: tests that attack the policy (the
hostile-SQL corpus) should also run as a role that could not do harm if the policy let them
through, and as a superuser to show the policy refuses before anything runs. These session-scoped
fixtures give both, on PostgreSQL and on MariaDB:

- `pg_least_privilege` / `mariadb_least_privilege` yield a `RoleDatabase`: a fresh database with
  `customers` and `orders` (readable by the reader), a table the reader may NOT read
  (`private_table`), a read-only `reader` and a `writer` with its own target schema and staging
  place, all made by the statements of the `<!-- least-privilege: NAME -->` blocks of
  docs/connectors.md (names replaced by unique ones), and URLs for the reader, the writer and the
  superuser. On PostgreSQL, dblink is installed (schema `dblink`) when the server has it.
  Everything is dropped afterwards, roles included.
- `pg_role(db, [...])` / `mariadb_user(db, [...])` make one more throwaway role/user with the given
  statements (`{role}` / `{user}` stand for its name), e.g. a read-only connection's role that
  was wrongly granted INSERT.

Tests must not change the shared databases' data or grants; use an extra role for that.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psycopg
import pymysql
import pytest
from psycopg import sql

from tests.services import mysql_admin, mysql_database, pg_admin, postgres_database

DOCS = Path(__file__).resolve().parents[2] / "docs" / "connectors.md"
PG_HOST = "127.0.0.1:5432"
MY_HOST = "127.0.0.1:3306"

CUSTOMERS = [(1, "Ann", "ann@example.com", "DE"), (2, "Bob", "bob@example.com", "FR"), (3, "Cy", None, "US")]
ORDERS = [
    (10, 1, 25.5, "shipped"),
    (11, 1, 7.25, "open"),
    (12, 2, 99.0, "shipped"),
    (13, 3, 12.0, "cancelled"),
]


@dataclass(frozen=True)
class RoleDatabase:
    """A database with a documented read-only role and writer role (see the module docstring)."""

    kind: Literal["postgresql", "mariadb"]
    database: str
    superuser_url: str
    reader: str
    reader_url: str
    writer: str
    writer_url: str
    staging_schema: str  # the writer connection's `staging_schema`
    target_schema: str | None  # where the writer's loads go (PostgreSQL: `analytics`), None: the database
    private_table: str  # qualified: a table the reader has no privilege on
    tables: tuple[str, ...] = ("customers", "orders")

    def connections(self) -> dict[str, dict[str, Any]]:
        """queryforge.yaml connections: `superuser` and `reader` (read-only), `writer` (writable)."""
        return {
            "superuser": {"url": self.superuser_url},
            "reader": {"url": self.reader_url},
            "writer": {"url": self.writer_url, "writable": True, "staging_schema": self.staging_schema},
        }


# ------------------------------------------------------------------ the documented statements


def documented_statements(block: str, names: Mapping[str, str] | None = None) -> list[str]:
    """The SQL statements of the ```sql block after `<!-- least-privilege: block -->` in
    docs/connectors.md, with each documented name (a key of `names`) replaced by its value."""
    text = DOCS.read_text()
    found = re.search(rf"<!-- least-privilege: {re.escape(block)} -->\s*```sql\n(.*?)```", text, re.S)
    if found is None:
        raise AssertionError(f"docs/connectors.md has no '<!-- least-privilege: {block} -->' sql block")
    body = found.group(1)
    for documented, actual in (names or {}).items():
        pattern = rf"\b{documented}\b" if documented.isidentifier() else re.escape(documented)
        body = re.sub(pattern, actual.replace("\\", "\\\\"), body)
    lines = [line for line in body.splitlines() if not line.lstrip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _token() -> str:
    return secrets.token_hex(4)


# ------------------------------------------------------------------ PostgreSQL


def _pg(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True)


def _pg_seed(con: psycopg.Connection[Any]) -> None:
    con.execute("CREATE TABLE customers (id integer PRIMARY KEY, name text, email text, country text)")
    con.execute(
        "CREATE TABLE orders (id integer PRIMARY KEY, customer_id integer REFERENCES customers, "
        "amount numeric(10,2), status text)"
    )
    with con.cursor() as cur:
        cur.executemany("INSERT INTO customers VALUES (%s, %s, %s, %s)", CUSTOMERS)
        cur.executemany("INSERT INTO orders VALUES (%s, %s, %s, %s)", ORDERS)
    con.execute("CREATE SCHEMA private")
    con.execute("CREATE TABLE private.secrets (id integer, token text)")
    con.execute("INSERT INTO private.secrets VALUES (1, 'not for the reader')")


def _pg_has_dblink(con: psycopg.Connection[Any]) -> bool:
    row = con.execute("SELECT count(*) FROM pg_available_extensions WHERE name = 'dblink'").fetchone()
    return bool(row and row[0])


def _pg_drop_roles(*roles: str) -> None:
    """Drop roles whose objects and grants went with their (already dropped) database."""
    with pg_admin() as admin:
        for role in roles:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@contextmanager
def pg_least_privilege_database() -> Iterator[RoleDatabase]:
    """A fresh PostgreSQL database set up with the documented statements; dropped afterwards."""
    token = _token()
    reader, writer = f"qf_reader_{token}", f"qf_writer_{token}"
    try:
        with postgres_database() as admin_url:
            name = admin_url.rsplit("/", 1)[1]
            names = {"sales": name, "qf_reader": reader, "qf_writer": writer, "change-me": f"pw-{token}"}
            with _pg(admin_url) as con:
                _pg_seed(con)
                blocks = ["postgres-functions"]
                if _pg_has_dblink(con):
                    con.execute("CREATE SCHEMA dblink")
                    con.execute("CREATE EXTENSION dblink SCHEMA dblink")
                    blocks.append("postgres-dblink")
                for block in [*blocks, "postgres-reader", "postgres-writer"]:
                    for statement in documented_statements(block, names):
                        con.execute(statement.encode())
            yield RoleDatabase(
                kind="postgresql",
                database=name,
                superuser_url=admin_url,
                reader=reader,
                reader_url=f"postgresql://{reader}@{PG_HOST}/{name}",
                writer=writer,
                writer_url=f"postgresql://{writer}@{PG_HOST}/{name}",
                staging_schema="_qf_staging",
                target_schema="analytics",
                private_table="private.secrets",
            )
    finally:
        _pg_drop_roles(reader, writer)


@contextmanager
def pg_role(db: RoleDatabase, statements: list[str]) -> Iterator[str]:
    """One more login role in `db`, given `statements` (`{role}` is its quoted name); yields its
    URL. Its objects and grants are dropped afterwards (DROP OWNED also revokes them), then the role."""
    role = f"qf_extra_{_token()}"
    quoted = f'"{role}"'
    with pg_admin() as admin:
        admin.execute(f"CREATE ROLE {quoted} LOGIN".encode())
    try:
        with _pg(db.superuser_url) as con:
            for statement in statements:
                con.execute(statement.format(role=quoted).encode())
        yield f"postgresql://{role}@{PG_HOST}/{db.database}"
    finally:
        with _pg(db.superuser_url) as con:
            con.execute(f"DROP OWNED BY {quoted}".encode())
        _pg_drop_roles(role)


@pytest.fixture(scope="session")
def pg_least_privilege() -> Iterator[RoleDatabase]:
    """A PostgreSQL database with the documented read-only and writer roles (session-wide, read it only)."""
    with pg_least_privilege_database() as db:
        yield db


# ------------------------------------------------------------------ MariaDB


def _my_seed(cur: Any, name: str, private: str) -> None:
    cur.execute(f"USE `{name}`")
    cur.execute(
        "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(50), email VARCHAR(100), country CHAR(2))"
    )
    cur.execute(
        "CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT, amount DECIMAL(10,2), status VARCHAR(20))"
    )
    cur.executemany("INSERT INTO customers VALUES (%s, %s, %s, %s)", CUSTOMERS)
    cur.executemany("INSERT INTO orders VALUES (%s, %s, %s, %s)", ORDERS)
    cur.execute(f"CREATE DATABASE `{private}`")
    cur.execute(f"CREATE TABLE `{private}`.secrets (id INT, token VARCHAR(50))")
    cur.execute(f"INSERT INTO `{private}`.secrets VALUES (1, 'not for the reader')")


def _wildcard_escaped(name: str) -> str:
    """A database name as a GRANT pattern matching only itself (`_` is a wildcard there)."""
    return name.replace("_", "\\_")


@contextmanager
def mariadb_least_privilege_database() -> Iterator[RoleDatabase]:
    """A fresh MariaDB database set up with the documented statements; dropped afterwards."""
    token = _token()
    reader, writer, password = f"qf_reader_{token}", f"qf_writer_{token}", f"pw-{token}"
    with mysql_database() as admin_url:
        name = admin_url.rsplit("/", 1)[1]
        private, stage = f"{name}_private", f"{name}_stage"
        names = {
            "sales": name,
            "qf_reader": reader,
            "qf_writer": writer,
            "change-me": password,
            "\\_qf\\_staging": _wildcard_escaped(stage),
        }
        admin = mysql_admin()
        try:
            with admin.cursor() as cur:
                _my_seed(cur, name, private)
                for block in ("mariadb-reader", "mariadb-writer"):
                    for statement in documented_statements(block, names):
                        cur.execute(statement)
            yield RoleDatabase(
                kind="mariadb",
                database=name,
                superuser_url=admin_url,
                reader=reader,
                reader_url=f"mysql://{reader}:{password}@{MY_HOST}/{name}",
                writer=writer,
                writer_url=f"mysql://{writer}:{password}@{MY_HOST}/{name}",
                staging_schema=stage,
                target_schema=None,
                private_table=f"{private}.secrets",
            )
        finally:
            with admin.cursor() as cur:
                for user in (reader, writer):
                    cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
                for database in (private, stage):
                    cur.execute(f"DROP DATABASE IF EXISTS `{database}`")
            admin.close()


@contextmanager
def mariadb_user(db: RoleDatabase, statements: list[str]) -> Iterator[str]:
    """One more MariaDB user, given `statements` (`{user}` is its account, `'name'@'%'`); yields
    its URL. Dropped afterwards."""
    name, password = f"qf_extra_{_token()}", f"pw-{_token()}"
    account = f"'{name}'@'%'"
    admin: pymysql.connections.Connection[Any] = mysql_admin()
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE USER {account} IDENTIFIED BY '{password}'")
            for statement in statements:
                cur.execute(statement.format(user=account))
        yield f"mysql://{name}:{password}@{MY_HOST}/{db.database}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS {account}")
        admin.close()


@pytest.fixture(scope="session")
def mariadb_least_privilege() -> Iterator[RoleDatabase]:
    """A MariaDB database with the documented read-only and writer users (session-wide, read it only)."""
    with mariadb_least_privilege_database() as db:
        yield db
