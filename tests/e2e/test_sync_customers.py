"""The connector issue's own example, end to end through the CLI: MySQL + an HTTP API, merged into PostgreSQL.

`crm` (MariaDB) holds customers with an `updated_at` cursor; `billing` (a local HTTP server with
bearer auth and cursor pagination) holds each customer's plan; the pipeline joins them and merges
into `prod.customers` (PostgreSQL) on `id`, reading only customers changed since the last publish.
After each of three runs the PostgreSQL table is compared with the expected table computed here in
Python from the source data.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import psycopg
import pymysql
import pytest
import yaml

from tests.conftest import CliResult
from tests.services import mysql_database, postgres_database

TOKEN = "tok-9f8e7d6c5b4a"
PIPELINE = """
name: sync_customers
steps:
  - id: customers
    extract:
      connection: crm
      table: customers
      incremental: {cursor: updated_at}
  - id: plans
    extract:
      connection: billing
      endpoint: /plans
      options:
        records: data
        paginate: {style: cursor, cursor_param: after, cursor_path: next}
  - id: joined
    join: {left: customers, right: plans, on: {id: customer_id}, how: left}
  - id: tidy
    select: {input: joined, columns: [id, name, email, plan, updated_at]}
  - id: checked
    check: {input: tidy, rules: [{not_null: [id]}, {unique: [id]}]}
  - id: publish
    load: {input: tidy, connection: prod, table: customers, mode: merge, keys: [id]}
"""


class Billing:
    """A tiny plans API: GET /v1/plans?after=N returns 3 plans per page, bearer auth required."""

    def __init__(self) -> None:
        self.plans: dict[int, str] = {}
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._send(401, {"error": "unauthorised"})
                    return
                after = int(dict(parse_qsl(url.query)).get("after", 0))
                ids = sorted(i for i in api.plans if i > after)[:3]
                page = [{"customer_id": i, "plan": api.plans[i]} for i in ids]
                self._send(200, {"data": page, "next": ids[-1] if len(ids) == 3 else None})

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                return

        return Handler

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> Billing:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def world(tmp_path: Path, qf: Callable[..., CliResult]) -> Iterator[dict[str, Any]]:
    with mysql_database() as crm, postgres_database() as prod, Billing() as billing:
        root = tmp_path / "ws"
        assert qf("init", str(root), "--bare", cwd=tmp_path).code == 0
        config = yaml.safe_load((root / "queryforge.yaml").read_text())
        config["connections"].update(
            {
                "crm": {"url": crm, "password": "${env:CRM_PASSWORD}"},
                "prod": {"url": prod, "writable": True},
                "billing": {"url": billing.url, "auth": {"bearer": "${env:API_TOKEN}"}},
            }
        )
        (root / "queryforge.yaml").write_text(yaml.safe_dump(config))
        (root / "pipelines" / "sync_customers.yaml").write_text(PIPELINE)
        my = pymysql.connect(host="127.0.0.1", user="root", database=crm.rsplit("/", 1)[1], autocommit=True)
        try:
            with my.cursor() as cur:
                cur.execute(
                    "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(40), email VARCHAR(80), "
                    "updated_at DATETIME(6))"
                )
            yield {"root": root, "my": my, "prod": prod, "billing": billing}
        finally:
            my.close()


def upsert_customers(my: Any, rows: list[tuple[int, str, str, datetime]]) -> None:
    with my.cursor() as cur:
        cur.executemany("REPLACE INTO customers VALUES (%s, %s, %s, %s)", rows)


def test_three_syncs_merge_only_changed_customers(
    world: dict[str, Any], qf: Callable[..., CliResult]
) -> None:
    root, my, billing = world["root"], world["my"], world["billing"]
    env = {"CRM_PASSWORD": "", "API_TOKEN": TOKEN}
    t0 = datetime(2026, 11, 1, 8, 0, 0, 123456)
    expected: dict[int, tuple[str, str, str | None, datetime]] = {}

    def change(rows: list[tuple[int, str, str, datetime]], plans: dict[int, str]) -> None:
        upsert_customers(my, rows)
        billing.plans.update(plans)
        for i, name, email, at in rows:  # the merge replaces whole rows, with the plan known now
            expected[i] = (name, email, billing.plans.get(i), at)

    batches = [
        (
            [(i, f"c{i}", f"c{i}@x.test", t0 + timedelta(minutes=i)) for i in range(1, 11)],
            dict.fromkeys(range(1, 8), "free"),
        ),
        (
            [
                (3, "c3", "new3@x.test", t0 + timedelta(days=1)),
                (11, "c11", "c11@x.test", t0 + timedelta(days=1)),
            ],
            {3: "pro", 11: "team"},
        ),
        ([(5, "Cinq", "c5@x.test", t0 + timedelta(days=2))], {9: "pro"}),
    ]
    read_counts = []
    for rows, plans in batches:
        change(rows, plans)
        done = qf("run", "pipelines/sync_customers.yaml", "--json", cwd=root, env=env)
        assert done.code == 0, done.stdout + done.stderr
        result = json.loads(done.stdout)
        assert result["status"] == "succeeded"
        read_counts.append(next(s["rows_out"] for s in result["steps"] if s["step_id"] == "customers"))
        with psycopg.connect(world["prod"]) as con:
            got = {
                r[0]: (r[1], r[2], r[3], r[4])
                for r in con.execute("SELECT id, name, email, plan, updated_at FROM customers")
            }
        assert got == expected
    assert read_counts == [10, 2, 1]  # only customers changed since the last publish were read
    assert TOKEN not in json.dumps(result)
