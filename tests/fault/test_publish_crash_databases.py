"""SIGKILL inside the publish into PostgreSQL and MariaDB: production keeps the old rows, a re-run completes.

Like test_publish_crash.py for the warehouse: `queryforge run` runs in a subprocess whose fault
point sleeps inside the publish (PostgreSQL: inside the transaction, after the table statements;
MariaDB: after the new tables are built, before the one atomic RENAME TABLE -- or inside the InnoDB
transaction for a merge into an existing table). The test kills it with SIGKILL, reads the target
with the plain driver and compares it with the OLD and NEW versions computed in Python.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
import yaml

from queryforge.workspace import Workspace
from tests.fault.test_publish_crash import NEW, OLD, QF, Row, env, expected_new, kill, main_thread_sleeps
from tests.services import mysql_database, postgres_database

pytestmark = pytest.mark.slow


class Target:
    """One database server: how to reset, read and inspect the production table `sales`."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self.url = url

    def _exec(self, sql: str, args: Any = None, fetch: bool = False) -> list[tuple[Any, ...]]:
        if self.kind == "postgres":
            with psycopg.connect(self.url, autocommit=True) as con:
                cur = con.execute(sql, args)
                return cur.fetchall() if fetch else []
        database = self.url.rsplit("/", 1)[1]
        con = pymysql.connect(host="127.0.0.1", user="root", database=database, autocommit=True)
        try:
            with con.cursor() as cur:
                if args and not fetch and isinstance(args[0], tuple):
                    cur.executemany(sql, args)
                else:
                    cur.execute(sql, args)
                return list(cur.fetchall()) if fetch else []
        finally:
            con.close()

    def reset_to_old(self) -> None:
        self._exec("DROP TABLE IF EXISTS sales")
        self._exec("CREATE TABLE sales (id BIGINT, name VARCHAR(40), value DOUBLE PRECISION)")
        if self.kind == "postgres":
            with psycopg.connect(self.url, autocommit=True) as con, con.cursor() as cur:
                cur.executemany("INSERT INTO sales VALUES (%s, %s, %s)", OLD)
        else:
            self._exec("INSERT INTO sales VALUES (%s, %s, %s)", OLD)

    def production(self) -> list[Row]:
        rows = self._exec("SELECT id, name, value FROM sales", fetch=True)
        return sorted((int(i), str(n), float(v) if isinstance(v, Decimal) else v) for i, n, v in rows)


@pytest.fixture(params=["postgres", "mariadb"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    database = postgres_database if request.param == "postgres" else mysql_database
    with database() as url:
        yield Target(request.param, url)


def make_ws(root: Path, target: Target) -> Path:
    Workspace.init(root, bare=True).close()
    config = yaml.safe_load((root / "queryforge.yaml").read_text())
    config["connections"]["prod"] = {"url": target.url, "writable": True}
    (root / "queryforge.yaml").write_text(yaml.safe_dump(config))
    lines = ["id,name,value", *(f"{i},{n},{v}" for i, n, v in NEW)]
    (root / "data" / "sales.csv").write_text("\n".join(lines) + "\n")
    for mode in ("replace", "merge"):
        keys = ", keys: [id]" if mode == "merge" else ""
        (root / "pipelines" / f"sales_{mode}.yaml").write_text(
            f"name: sales_{mode}\nsteps:\n"
            "  - id: src\n    extract: {path: data/sales.csv}\n"
            f"  - id: publish\n    load: {{input: src, connection: prod, table: sales, mode: {mode}{keys}}}\n"
        )
    target.reset_to_old()
    return root


def qf(root: Path, *args: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([QF, *args], cwd=root, env=env(fault), capture_output=True, text=True, timeout=120)


def wait_for_fault(proc: subprocess.Popen[bytes], ready: Callable[[], bool]) -> None:
    """Block until the run sleeps at the fault point inside the publish."""
    import time

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            assert proc.stderr is not None
            pytest.fail(f"the run ended (exit {proc.returncode}) before its publish: {proc.stderr.read()!r}")
        if ready() and main_thread_sleeps(proc.pid):
            return
        time.sleep(0.05)
    pytest.fail("the run never reached the publish")


@pytest.mark.parametrize("mode", ["replace", "merge"])
def test_kill_mid_publish_keeps_old_rows_and_rerun_completes(
    tmp_path: Path, target: Target, mode: str
) -> None:
    root = make_ws(tmp_path / "ws", target)
    assert target.production() == sorted(OLD)
    proc = subprocess.Popen(
        [QF, "run", f"pipelines/sales_{mode}.yaml"],
        cwd=root,
        env=env("publish.in_transaction=sleep:60"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    metadata = root / ".queryforge" / "metadata.db"

    def publishing() -> bool:
        import sqlite3
        from contextlib import closing

        if not metadata.exists():
            return False
        with closing(sqlite3.connect(metadata, timeout=10)) as con:
            return bool(
                con.execute(
                    "SELECT 1 FROM run_steps s JOIN schema_snapshots n ON n.run_id = s.run_id "
                    "WHERE s.step_id = 'publish:prod' AND s.status = 'running' AND n.phase = 'before'"
                ).fetchall()
            )

    try:
        wait_for_fault(proc, publishing)
    finally:
        kill(proc)
    assert proc.returncode == -signal.SIGKILL

    assert target.production() == sorted(OLD)  # exactly the old version, never a mix

    # The killed run's staging table is left behind; gc finds it once the run is stale.
    listed = qf(root, "gc", "--dry-run", "--stale-after", "0", "--json")
    assert listed.returncode == 0, listed.stderr
    assert any(r["connection"] == "prod" for r in yaml.safe_load(listed.stdout)["removed"])

    done = qf(root, "run", f"pipelines/sales_{mode}.yaml")
    assert done.returncode == 0, done.stderr
    assert target.production() == expected_new(mode)

    cleaned = qf(root, "gc", "--stale-after", "0", "--json")
    assert cleaned.returncode == 0, cleaned.stderr
    again = qf(root, "gc", "--dry-run", "--stale-after", "0", "--json")
    assert yaml.safe_load(again.stdout)["removed"] == []
