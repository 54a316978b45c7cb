"""Driver errors -> QueryForge failure classes: every entry of the mapping tables, the text fallbacks,
and (where cheap) the same failure provoked on the real PostgreSQL and MariaDB servers.

Each mapped error must name the connection and never show a remembered secret.
"""

from __future__ import annotations

import secrets as token
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pymysql
import pytest

from queryforge.connectors.base import ConnectionConfig
from queryforge.connectors.driver_errors import (
    MYSQL_CODES,
    POSTGRES_STATES,
    POSTGRES_TEXT_STATES,
    map_mysql_error,
    map_postgres_error,
)
from queryforge.connectors.mysql import MySQLConnector
from queryforge.connectors.postgres import PostgresConnector
from queryforge.errors import (
    PermissionDenied,
    QueryForgeError,
    QueryTimeout,
    TerminalError,
    TransientError,
    UserError,
)
from queryforge.secrets import remember
from tests.services import mysql_admin, mysql_database, pg_admin, postgres_database

SECRET = "s3cret-Pa55word-for-driver-errors"
remember(SECRET)

# One real SQLSTATE of each class the table maps by its first two characters.
CLASS_EXAMPLES = {
    "08": "08006",
    "40": "40P01",
    "53": "53300",
    "28": "28P01",
    "42": "42P01",
    "0A": "0A000",
    "3D": "3D000",
    "3F": "3F000",
    "22": "22012",
    "23": "23505",
    "2B": "2BP01",
}


class PanicException(BaseException):
    """Stands in for pyo3's PanicException, which connectorx raises when a streaming query fails."""


def mapped_pg(exc: BaseException, connection: str = "warehouse_pg") -> QueryForgeError:
    with pytest.raises(QueryForgeError) as info, map_postgres_error(connection):
        raise exc
    return info.value


def mapped_my(exc: BaseException, connection: str = "shop_my") -> QueryForgeError:
    with pytest.raises(QueryForgeError) as info, map_mysql_error(connection):
        raise exc
    return info.value


def assert_clean(err: QueryForgeError, cls: type[QueryForgeError], connection: str) -> None:
    assert type(err) is cls, f"{type(err).__name__} is not {cls.__name__}: {err}"
    assert f"Connection '{connection}'" in err.message
    assert SECRET not in err.render() and "***" in err.message


# ---------------------------------------------------------------- the tables, entry by entry


@pytest.mark.parametrize(("state", "cls"), POSTGRES_STATES.items(), ids=list(POSTGRES_STATES))
def test_every_postgres_state(state: str, cls: type[QueryForgeError]) -> None:
    code = CLASS_EXAMPLES.get(state, state)
    assert code.startswith(state)
    exc = psycopg.errors.lookup(code)(f"the server said no (password {SECRET})")
    assert_clean(mapped_pg(exc), cls, "warehouse_pg")
    # ADBC's way: the SQLSTATE only in the text.
    adbc_like = RuntimeError(f"INTERNAL: [libpq] failed: ERROR:  no, {SECRET}\nSQLSTATE: {code}")
    assert_clean(mapped_pg(adbc_like), cls, "warehouse_pg")


@pytest.mark.parametrize(("code", "cls"), MYSQL_CODES.items(), ids=[str(c) for c in MYSQL_CODES])
def test_every_mysql_code(code: int, cls: type[QueryForgeError]) -> None:
    exc = pymysql.err.OperationalError(code, f"the server said no (password {SECRET})")
    err = mapped_my(exc)
    assert_clean(err, cls, "shop_my")
    assert f"({code})" in err.message
    # connectorx's way: the number inside the text, raised as a RuntimeError or a panic.
    text = f"MySqlError {{ ERROR {code} (HY000): no, {SECRET} }}"
    for raised in (RuntimeError(text), PanicException(f"cx writer failed: Source(MySQLError({text}))")):
        err = mapped_my(raised)
        assert_clean(err, cls, "shop_my")
        assert err.message.endswith(f"({code}) no, ***")


# ---------------------------------------------------------------- text fallbacks


@pytest.mark.parametrize(("words", "state"), POSTGRES_TEXT_STATES.items(), ids=list(POSTGRES_TEXT_STATES))
def test_postgres_messages_without_a_sqlstate(words: str, state: str) -> None:
    """ADBC fails a streaming read with a plain Arrow error or OSError carrying only libpq's text."""
    cls = POSTGRES_STATES.get(state) or POSTGRES_STATES[state[:2]]
    text = f"[libpq] Execution error [PGRES_FATAL_ERROR]: ERROR:  x {words} {SECRET}\n"
    for exc in (pa.ArrowInvalid(text), OSError(text)):
        err = mapped_pg(exc)
        assert_clean(err, cls, "warehouse_pg")
        assert err.message.endswith(f"failed: x {words} ***")


@pytest.mark.parametrize(
    ("text", "cls"),
    [
        ('FATAL:  password authentication failed for user "app" ' + SECRET, PermissionDenied),
        ('FATAL:  role "nobody" does not exist ' + SECRET, PermissionDenied),
        ('FATAL:  database "nope" does not exist ' + SECRET, UserError),
        ("connection to server at 127.0.0.1, port 1 failed: Connection refused " + SECRET, TransientError),
        ("could not translate host name db.invalid " + SECRET, TransientError),
        ("server closed the connection unexpectedly " + SECRET, TransientError),
        ("something nobody has seen before " + SECRET, TerminalError),
    ],
)
def test_postgres_text_fallbacks(text: str, cls: type[QueryForgeError]) -> None:
    assert_clean(mapped_pg(OSError(text)), cls, "warehouse_pg")


@pytest.mark.parametrize(
    ("text", "cls"),
    [
        ("Access denied for user 'app'@'%' " + SECRET, PermissionDenied),
        ("Can't connect to MySQL server on 'db' " + SECRET, TransientError),
        ("Connection refused (os error 111) " + SECRET, TransientError),
        ("broken pipe " + SECRET, TransientError),
        ("MySqlError { ERROR 1999 (HY000): never seen " + SECRET + " }", TerminalError),
        ("something nobody has seen before " + SECRET, TerminalError),
    ],
)
def test_mysql_text_fallbacks(text: str, cls: type[QueryForgeError]) -> None:
    assert_clean(mapped_my(RuntimeError(text)), cls, "shop_my")


def test_a_url_password_is_masked_even_if_never_remembered() -> None:
    err = mapped_pg(OSError("could not connect to postgresql://app:hunter2-unknown@db:5432/x"))
    assert "hunter2-unknown" not in err.message and "postgresql://app:***@db" in err.message


def test_errors_that_are_not_the_drivers_pass_through() -> None:
    for mapper in (map_postgres_error, map_mysql_error):
        with pytest.raises(ValueError, match="ours"), mapper("c"):
            raise ValueError("ours")
        with pytest.raises(KeyboardInterrupt), mapper("c"):
            raise KeyboardInterrupt
        already = UserError("already classified")
        with pytest.raises(UserError) as info, mapper("c"):
            raise already
        assert info.value is already


# ---------------------------------------------------------------- the real servers


def pg_connector(url: str, **options: Any) -> PostgresConnector:
    return PostgresConnector(ConnectionConfig("real_pg", url, True, options), Path("."))


def my_connector(url: str, **options: Any) -> MySQLConnector:
    return MySQLConnector(ConnectionConfig("real_my", url, True, options), Path("."))


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_database() as url:
        with psycopg.connect(url, autocommit=True) as con:
            con.execute(
                "CREATE TABLE t (id integer PRIMARY KEY); INSERT INTO t VALUES (1); CREATE SEQUENCE s; "
                "CREATE TABLE child (id integer REFERENCES t (id)); CREATE VIEW v AS SELECT * FROM t"
            )
        yield url


@pytest.fixture(scope="module")
def my_url() -> Iterator[str]:
    with mysql_database() as url:
        admin = mysql_admin()
        try:
            with admin.cursor() as cur:
                db = url.rsplit("/", 1)[1]
                cur.execute(f"CREATE TABLE `{db}`.t (id INT PRIMARY KEY, small TINYINT, day DATE)")
                cur.execute(f"INSERT INTO `{db}`.t VALUES (1, 1, '2024-01-01')")
                cur.execute(f"CREATE TABLE `{db}`.child (id INT, FOREIGN KEY (id) REFERENCES `{db}`.t (id))")
                cur.execute(f"INSERT INTO `{db}`.child VALUES (1)")
            yield url
        finally:
            admin.close()


PG_REAL = [
    ("42P01", "fetch", "SELECT * FROM nope", UserError),
    ("42P01", "execute", "SELECT * FROM nope", UserError),
    ("42703", "fetch", "SELECT nope FROM t", UserError),
    ("42601", "fetch", "SELEC 1", UserError),
    ("42601", "execute", "SELEC 1", UserError),
    ("25006", "fetch", "SELECT nextval('s')", PermissionDenied),
    ("25006", "fetch", "SELECT * FROM t FOR UPDATE", PermissionDenied),
    ("23505", "execute", "INSERT INTO t VALUES (1)", UserError),
    ("22012", "fetch", "SELECT 1 / 0", UserError),
    ("22012", "execute", "SELECT 1 / 0", UserError),
    ("2BP01", "execute", "DROP TABLE t", UserError),
    ("0A000", "fetch", "SELECT * FROM (WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d) x", UserError),
    # ADBC streams this one without its SQLSTATE: classified by the "large object" text entry
    ("42704", "fetch", "SELECT lo_get(4000000001)", UserError),
    ("42704", "execute", "SELECT lo_get(4000000001)", UserError),
]


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("state", "how", "sql", "cls"), PG_REAL, ids=[f"{s}-{h}-{i}" for i, (s, h, _, _) in enumerate(PG_REAL)]
)
def test_real_postgres_failures(
    pg_url: str, state: str, how: str, sql: str, cls: type[QueryForgeError]
) -> None:
    conn = pg_connector(pg_url)
    try:
        with pytest.raises(QueryForgeError) as info:
            conn.fetch_arrow(sql) if how == "fetch" else conn.execute(sql)
    finally:
        conn.close()
    assert type(info.value) is cls, info.value
    assert "Connection 'real_pg' (PostgreSQL)" in info.value.message


@pytest.mark.postgres
def test_real_postgres_statement_timeout(pg_url: str) -> None:
    conn = pg_connector(pg_url, statement_timeout_ms=100)
    try:
        with pytest.raises(QueryTimeout) as info:
            conn.fetch_arrow("SELECT pg_sleep(5)")
    finally:
        conn.close()
    assert "statement timeout" in info.value.message and "real_pg" in info.value.message


@pytest.mark.postgres
def test_real_postgres_lock_timeout_is_transient(pg_url: str) -> None:
    with psycopg.connect(pg_url) as holder:  # a transaction holding the table's lock
        holder.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        conn = pg_connector(pg_url)
        try:
            conn.execute("SET lock_timeout = 100")
            with pytest.raises(TransientError) as info:
                conn.execute("SELECT * FROM t")
        finally:
            conn.close()
        holder.rollback()
    assert "lock timeout" in info.value.message


@pytest.mark.postgres
def test_real_postgres_connection_failures(pg_url: str) -> None:
    cases: list[tuple[str, type[QueryForgeError], dict[str, Any]]] = [
        (pg_url + "_missing", UserError, {}),  # 3D000
        (pg_url.replace("postgres@", "no_such_role_qf@"), PermissionDenied, {"password": SECRET}),  # 28000
        ("postgresql://postgres@127.0.0.1:1/x", TransientError, {}),  # 08001
    ]
    for url, cls, options in cases:
        for how in ("test", "fetch"):
            conn = pg_connector(url, **options)
            try:
                with pytest.raises(QueryForgeError) as info:
                    conn.test() if how == "test" else conn.fetch_arrow("SELECT 1")
            finally:
                conn.close()
            assert type(info.value) is cls, (url, how, info.value)
            assert "Connection 'real_pg'" in info.value.message and SECRET not in info.value.render()


@pytest.mark.postgres
def test_real_postgres_insufficient_privilege(pg_url: str) -> None:
    role = f"qf_nopriv_{token.token_hex(4)}"
    with pg_admin() as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        conn = pg_connector(pg_url.replace("postgres@", f"{role}@"))
        try:
            with pytest.raises(PermissionDenied) as info:
                conn.fetch_arrow("SELECT * FROM t")
        finally:
            conn.close()
        assert "permission denied" in info.value.message
    finally:
        with pg_admin() as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", [role])
            admin.execute(f'DROP ROLE "{role}"')


MY_REAL = [
    (1146, "fetch", "SELECT * FROM nope", UserError),
    (1146, "execute", "SELECT * FROM nope", UserError),
    (1054, "fetch", "SELECT nope FROM t", UserError),
    (1064, "fetch", "SELEC 1", UserError),
    (1064, "execute", "SELEC 1", UserError),
    (1792, "fetch", "SELECT * FROM t FOR UPDATE", PermissionDenied),
    (1062, "execute", "INSERT INTO t VALUES (1, 1, NULL)", UserError),
    (1451, "execute", "DELETE FROM t", UserError),
    (1452, "execute", "INSERT INTO child VALUES (42)", UserError),
    (1264, "execute", "INSERT INTO t VALUES (2, 300, NULL)", UserError),
    (1366, "execute", "INSERT INTO t VALUES ('x', 1, NULL)", UserError),
    (1292, "execute", "INSERT INTO t VALUES (3, 1, '2024-13-45')", UserError),
    (1305, "fetch", "SELECT nope_fn(1)", UserError),
    (1305, "execute", "SELECT nope_fn(1)", UserError),
]


@pytest.mark.parametrize(
    ("code", "how", "sql", "cls"), MY_REAL, ids=[f"{c}-{h}-{i}" for i, (c, h, _, _) in enumerate(MY_REAL)]
)
def test_real_mariadb_failures(
    my_url: str, code: int, how: str, sql: str, cls: type[QueryForgeError]
) -> None:
    conn = my_connector(my_url)
    try:
        with pytest.raises(QueryForgeError) as info:
            conn.fetch_arrow(sql) if how == "fetch" else conn.execute(sql)
    finally:
        conn.close()
    assert type(info.value) is cls, info.value
    assert f"Connection 'real_my' (MySQL) failed: ({code})" in info.value.message


def test_real_mariadb_statement_timeout(my_url: str) -> None:
    conn = my_connector(my_url, statement_timeout_ms=100)
    try:
        with pytest.raises(QueryTimeout) as info:
            conn.fetch_arrow("SELECT SLEEP(5) AS slept")
    finally:
        conn.close()
    assert "(1969)" in info.value.message and "max_statement_time" in info.value.message


def test_real_mariadb_lock_wait_timeout_is_transient(my_url: str) -> None:
    db = my_url.rsplit("/", 1)[1]
    holder = pymysql.connect(host="127.0.0.1", user="root", password="", database=db, autocommit=False)
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT * FROM t WHERE id = 1 FOR UPDATE")
        conn = my_connector(my_url)
        try:
            conn.execute("SET SESSION innodb_lock_wait_timeout = 1")
            with pytest.raises(TransientError) as info:
                conn.execute("UPDATE t SET small = 2 WHERE id = 1")
        finally:
            conn.close()
    finally:
        holder.rollback()
        holder.close()
    assert "(1205)" in info.value.message


def test_real_mariadb_connection_failures(my_url: str) -> None:
    user = f"qf_pw_{token.token_hex(4)}"
    admin = mysql_admin()
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'right-password-1'")
            cur.execute(f"GRANT SELECT ON `{my_url.rsplit('/', 1)[1]}`.* TO '{user}'@'%'")
        user_url = my_url.replace("root@", f"{user}@")
        cases: list[tuple[str, dict[str, Any], type[QueryForgeError], str]] = [
            (my_url + "_missing", {}, UserError, "(1049)"),
            (user_url, {"password": SECRET}, PermissionDenied, "(1045)"),
            ("mysql://root@127.0.0.1:1/x", {}, TransientError, "(2003)"),
        ]
        for url, options, cls, code in cases:
            conn = my_connector(url, **options)
            try:
                with pytest.raises(QueryForgeError) as info:
                    conn.test()
            finally:
                conn.close()
            assert type(info.value) is cls, (url, info.value)
            assert f"Connection 'real_my' (MySQL) failed: {code}" in info.value.message
            assert SECRET not in info.value.render()
        # The right password, but no right to write: 1142.
        conn = my_connector(user_url, password="right-password-1")
        try:
            with pytest.raises(PermissionDenied) as denied:
                conn.execute("INSERT INTO t VALUES (9, 1, NULL)")
        finally:
            conn.close()
        assert "(1142)" in denied.value.message
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        admin.close()
