"""Messages that cannot be read stop the stream with their number and problem, or, quarantining,
go to <pipeline>__rejected in the same transaction as the good rows of their batch."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import duckdb
import pytest

from queryforge.errors import StepFailed
from queryforge.workspace import Workspace
from tests.services import REDIS_URL, redis_publish, redis_stream_key

PIPELINE = """
name: orders_feed
mode: streaming
on_check_failure: {policy}
trigger: {{max_rows: 100, max_wait_s: 0.2}}
steps:
  - id: incoming
    extract: {{connection: feed, stream: "{key}", types: {{id: BIGINT, amount: "DECIMAL(10,2)", day: DATE}}}}
  - id: sink
    load: {{input: incoming, table: orders_feed, mode: append}}
"""

GOOD = [json.dumps({"id": i, "amount": i * 1.5, "day": "2026-12-01"}).encode() for i in range(40)]
BAD = {
    b'{"id": 100, amount: 1}': "not valid JSON",
    b'["id", 101]': "not a JSON object",
    b'{"id": "one hundred two", "amount": 1}': "id does not fit BIGINT",
    b'{"id": 103, "day": "yesterday"}': "day does not fit DATE",
}


def workspace(make_workspace: Callable[..., Workspace], key: str, policy: str) -> Workspace:
    ws = make_workspace(bare=True)
    config = ws.root / "queryforge.yaml"
    config.write_text(config.read_text() + f"  feed: {{url: '{REDIS_URL}'}}\n")
    (ws.root / "pipelines").mkdir(exist_ok=True)
    (ws.root / "pipelines" / "orders_feed.yaml").write_text(PIPELINE.format(key=key, policy=policy))
    ws.close()
    return Workspace(ws.root)  # with the connection just added


def sink(ws: Workspace, sql: str) -> list[tuple[object, ...]]:
    with duckdb.connect(str(ws.root / ".queryforge" / "warehouse.duckdb")) as con:
        return con.execute(sql).fetchall()


def test_stop_names_the_first_unreadable_message_and_publishes_nothing_of_its_batch(
    make_workspace: Callable[..., Workspace],
) -> None:
    with redis_stream_key() as key:
        redis_publish(key, GOOD[:20] + list(BAD) + GOOD[20:])
        ws = workspace(make_workspace, key, "stop")
        with pytest.raises(
            StepFailed,
            match=r"holds 4 messages that cannot be read \(message 21 of the batch: not valid JSON\)",
        ):
            ws.stream("orders_feed", stop=threading.Event(), max_batches=5)
        ws.close()
        tables = {r[0] for r in sink(ws, "SELECT table_name FROM information_schema.tables")}
        assert "orders_feed" not in tables and "orders_feed__rejected" not in tables
        # The position did not move: the next start stops at the same batch again.
        ws = Workspace(ws.root)
        with pytest.raises(StepFailed, match="message 21 of the batch"):
            ws.stream("orders_feed", stop=threading.Event(), max_batches=5)
        ws.close()


def test_quarantine_publishes_the_good_rows_and_rejects_each_bad_message_with_its_problem(
    make_workspace: Callable[..., Workspace],
) -> None:
    with redis_stream_key() as key:
        redis_publish(key, GOOD[:20] + list(BAD) + GOOD[20:])
        ws = workspace(make_workspace, key, "quarantine")
        _, status = ws.stream("orders_feed", stop=threading.Event(), max_batches=1)
        ws.close()
    assert status.rejected_messages == len(BAD)
    rows = sink(ws, "SELECT id, amount, day FROM orders_feed ORDER BY id")
    assert [r[0] for r in rows] == list(range(40))
    assert sum(float(r[1]) for r in rows) == pytest.approx(sum(i * 1.5 for i in range(40)))  # type: ignore[arg-type]
    rejected = sink(
        ws, "SELECT batch, message_number, message, problem FROM orders_feed__rejected ORDER BY 2"
    )
    assert [(r[0], r[1]) for r in rejected] == [(1, 21), (1, 22), (1, 23), (1, 24)]
    for (_, _, message, problem), (raw, why) in zip(rejected, BAD.items(), strict=True):
        assert message == raw.decode()
        assert str(problem).startswith(why)
