"""Real services for integration tests: fresh, uniquely named databases that are dropped afterwards.

A missing server fails the test loudly with how to start it; nothing is ever skipped.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql

PG_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=5"
PG_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"


def pg_admin() -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(PG_ADMIN_DSN, autocommit=True)
    except psycopg.OperationalError as exc:
        problem = str(exc).strip()
    pytest.fail(
        f"PostgreSQL is unreachable at 127.0.0.1:5432 (user postgres, trust auth): {problem}\n"
        f"Start it with: {PG_START}",
        pytrace=False,
    )


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new empty database; yields its URL (postgresql://postgres@127.0.0.1:5432/NAME)."""
    name = f"qf_test_{secrets.token_hex(6)}"
    with pg_admin() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with pg_admin() as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                [name],
            )
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


MYSQL_START = "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd"


def mysql_admin() -> Any:
    import pymysql

    try:
        return pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", autocommit=True)
    except pymysql.err.OperationalError as exc:
        problem = str(exc).strip()
    pytest.fail(
        f"MariaDB is unreachable at 127.0.0.1:3306 (root, empty password): {problem}\n"
        f"Start it with: {MYSQL_START}",
        pytrace=False,
    )


@contextmanager
def mysql_database() -> Iterator[str]:
    """A new empty MariaDB database; yields its URL (mysql://root@127.0.0.1:3306/NAME)."""
    name = f"qf_test_{secrets.token_hex(6)}"
    admin = mysql_admin()
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}`")
        yield f"mysql://root@127.0.0.1:3306/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()
