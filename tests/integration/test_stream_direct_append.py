"""Appends into PostgreSQL skip the staging copy once the target has the batch's exact columns,
and stay exactly once: the rows and the position commit together or not at all.

The first batch of a stream is staged (it creates or evolves the target); from then on a batch
whose schema matches is COPYed straight into the target in the transaction that records its
position. A target altered meanwhile goes back through staging.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from queryforge import faults
from queryforge.connectors.postgres import PostgresConnector
from queryforge.connectors.sql import LEDGER, STREAM_BATCHES
from queryforge.errors import QueryForgeError
from queryforge.workspace import Workspace
from tests.integration import test_streaming
from tests.integration.test_streaming import stream, streaming
from tests.services import NATS_URL, nats_publish, nats_subject, postgres_database

pytestmark = pytest.mark.postgres

TYPES = {"id": "BIGINT", "user_id": "BIGINT", "url": "VARCHAR", "amount": "DECIMAL(10,2)"}


build = test_streaming.build  # the same workspace fixture


def events(start: int, count: int) -> list[bytes]:
    return [
        json.dumps({"id": i, "user_id": i % 7, "url": f"/p{i % 5}/x", "amount": f"{i / 4:.2f}"}).encode()
        for i in range(start, start + count)
    ]


@pytest.fixture
def spied(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The batch numbers PostgreSQL appended without staging."""
    calls: list[int] = []
    real = PostgresConnector.append_batch

    def spy(self: PostgresConnector, appends: Any, mark: Any) -> list[int]:
        written = real(self, appends, mark)
        calls.append(mark.batch)  # only once it committed
        return written

    monkeypatch.setattr(PostgresConnector, "append_batch", spy)
    return calls


@pytest.fixture
def setting(build: Callable[..., Workspace]) -> Iterator[tuple[Workspace, str, str]]:
    with postgres_database() as pg, nats_subject() as subject:
        pipeline = streaming(
            "clicks",
            {"connection": "bus", "stream": subject, "types": TYPES},
            {
                "id": "shaped",
                "derive": {"input": "incoming", "columns": {"section": "split_part(url, '/', 2)"}},
            },
            load={"input": "shaped", "connection": "pg", "table": "clicks", "mode": "append"},
            trigger={"max_rows": 100, "max_wait_s": 0.3},
        )
        ws = build({"bus": {"url": NATS_URL}, "pg": {"url": pg, "writable": True}}, pipeline)
        yield ws, pg, subject


def sink(pg: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg) as con:
        query = "SELECT id, user_id, url, amount::text, section FROM clicks ORDER BY id"
        return con.execute(query).fetchall()


def expected(ids: range) -> list[tuple[Any, ...]]:
    """Computed here, not by QueryForge: the message fields and the derived section."""
    return [(i, i % 7, f"/p{i % 5}/x", f"{i / 4:.2f}", f"p{i % 5}") for i in ids]


def position(pg: str) -> tuple[int, str]:
    with psycopg.connect(pg) as con:
        row = con.execute(
            "SELECT batch, position FROM _qf_staging._qf_stream_batches ORDER BY batch DESC LIMIT 1"
        ).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def test_batches_after_the_first_append_without_staging(
    setting: tuple[Workspace, str, str], spied: list[int]
) -> None:
    ws, pg, subject = setting
    nats_publish(subject, events(0, 300))
    _, status = stream(ws, "clicks", 3)

    assert (status.batches, status.rows, status.published_rows) == (3, 300, 300)
    assert spied == [2, 3]  # the first batch created the target through staging
    assert sink(pg) == expected(range(300))
    assert position(pg) == (3, "300")  # JetStream sequence of the last message
    with psycopg.connect(pg) as con:  # the decimal kept its declared precision and scale
        kind = con.execute(
            "SELECT numeric_precision, numeric_scale FROM information_schema.columns "
            "WHERE table_name = 'clicks' AND column_name = 'amount'"
        ).fetchone()
    assert kind == (10, 2)


def test_a_target_altered_between_batches_goes_back_through_staging(
    setting: tuple[Workspace, str, str], spied: list[int]
) -> None:
    ws, pg, subject = setting
    nats_publish(subject, events(0, 200))
    stream(ws, "clicks", 2)
    assert spied == [2]
    with psycopg.connect(pg) as con:  # someone adds a column with a default
        con.execute("ALTER TABLE clicks ADD COLUMN note text DEFAULT 'kept'")

    nats_publish(subject, events(200, 200))
    _, status = stream(ws, "clicks", 2)
    assert status.published_rows == 200
    assert spied == [2]  # the target has a column the batches lack: batches 3 and 4 were staged
    assert sink(pg) == expected(range(400))
    with psycopg.connect(pg) as con:
        notes = con.execute("SELECT count(*) FROM clicks WHERE note = 'kept'").fetchone()
    assert notes == (400,)  # the staged inserts name their columns: the default fills the new one

    with psycopg.connect(pg) as con:  # the table is dropped: recreated by a staged batch, then direct
        con.execute("DROP TABLE clicks")
    nats_publish(subject, events(400, 200))
    stream(ws, "clicks", 2)
    assert spied == [2, 6]
    assert sink(pg) == expected(range(400, 600))


def test_a_failure_inside_the_direct_transaction_publishes_nothing_of_the_batch(
    setting: tuple[Workspace, str, str], spied: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    ws, pg, subject = setting
    nats_publish(subject, events(0, 300))
    real_point = faults.point
    commits: list[str] = []

    def fail_in_second_transaction(name: str) -> None:
        if name == "stream.in_transaction":
            commits.append(name)
            if len(commits) == 2:  # batch 2: the first one appended without staging
                raise QueryForgeError("the sink went away mid-publish")
        real_point(name)

    monkeypatch.setattr(faults, "point", fail_in_second_transaction)
    with pytest.raises(QueryForgeError, match="went away"):
        ws.stream("clicks", stop=threading.Event(), max_batches=3)
    assert spied == []  # batch 2's COPY ran, then the transaction rolled back
    assert sink(pg) == expected(range(100))
    assert position(pg) == (1, "100")

    monkeypatch.setattr(faults, "point", real_point)
    _, status = stream(ws, "clicks", 2)
    assert status.last_batch == 3
    assert sink(pg) == expected(range(300))  # each message exactly once
    assert spied == [3]


def test_no_staging_table_is_left_behind(setting: tuple[Workspace, str, str]) -> None:
    ws, pg, subject = setting
    nats_publish(subject, events(0, 300))
    stream(ws, "clicks", 3)
    with psycopg.connect(pg) as con:
        tables = con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = '_qf_staging'"
        ).fetchall()
    assert sorted(t[0] for t in tables) == sorted([LEDGER, STREAM_BATCHES])
