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


NATS_URL = "nats://127.0.0.1:4222"
NATS_START = (
    "start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- "
    "-a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log"
)
REDIS_URL = "redis://127.0.0.1:6379/0"
REDIS_START = (
    'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no '
    "--dir /var/lib/redis --logfile /var/log/redis/ci.log"
)


def _nats(coro_fn: Any) -> Any:
    import asyncio

    import nats

    async def main() -> Any:
        try:
            nc = await nats.connect(NATS_URL, connect_timeout=3, allow_reconnect=False)
        except Exception as exc:
            pytest.fail(
                f"NATS is unreachable at {NATS_URL}: {exc}\nStart it with: {NATS_START}", pytrace=False
            )
        try:
            return await coro_fn(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(main())


@contextmanager
def nats_subject() -> Iterator[str]:
    """A fresh JetStream stream holding one unique subject; yields the subject, deletes the stream."""
    from nats.js.api import StreamConfig

    token = secrets.token_hex(6)
    name, subject = f"QF_TEST_{token}", f"qf.test.{token}"

    async def create(js: Any) -> None:
        await js.add_stream(StreamConfig(name=name, subjects=[subject]))

    async def delete(js: Any) -> None:
        await js.delete_stream(name)

    _nats(create)
    try:
        yield subject
    finally:
        _nats(delete)


def nats_publish(subject: str, payloads: list[bytes]) -> None:
    """Publish to JetStream and wait for every acknowledgement (each message is stored)."""

    async def publish(js: Any) -> None:
        for start in range(0, len(payloads), 5000):
            for payload in payloads[start : start + 5000]:
                await js.publish_async(subject, payload)
            await js.publish_async_completed()

    _nats(publish)


def redis_client() -> Any:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(
            f"Redis is unreachable at {REDIS_URL}: {exc}\nStart it with: {REDIS_START}", pytrace=False
        )
    return client


@contextmanager
def redis_stream_key() -> Iterator[str]:
    """A unique Redis stream key, deleted afterwards."""
    key = f"qf:test:{secrets.token_hex(6)}"
    client = redis_client()
    try:
        yield key
    finally:
        client.delete(key)
        client.close()


def redis_publish(key: str, payloads: list[bytes]) -> None:
    client = redis_client()
    try:
        for start in range(0, len(payloads), 5000):
            pipe = client.pipeline(transaction=False)
            for payload in payloads[start : start + 5000]:
                pipe.xadd(key, {"data": payload})
            pipe.execute()
    finally:
        client.close()
