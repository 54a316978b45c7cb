"""100,000 messages, the stream process SIGKILLed 20 times: the sink holds each message exactly once.

A publisher thread writes 100,000 JSON messages to NATS JetStream (or a Redis stream) in chunks
while `queryforge stream` runs into PostgreSQL and is SIGKILLed at 20 random instants (ten anywhere
from the spawn on, ten after the start reported a committed batch, so that they land mid-stream
however loaded the machine is); six more
starts die at the two narrowest windows on purpose (inside the publish transaction, and after the
commit but before the acknowledgement). A last start drains the stream and is stopped with
SIGTERM. Then PostgreSQL itself, independently of QueryForge, says the table holds ids 0..99,999
each exactly once with the derived column right, and the committed batches are numbered 1..N
without a gap.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import psycopg
import pytest

from tests.fault.test_publish_crash import QF
from tests.services import (
    NATS_URL,
    REDIS_URL,
    nats_publish,
    nats_subject,
    postgres_database,
    redis_publish,
    redis_stream_key,
)

# The process-heavy fault tests run one after another on one xdist worker, never side by side:
# each starts and kills many processes, and two at once starve each other's timeouts.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("heavy")]

MESSAGES = 100_000
KILLS = 20
SEED = 20261207

PIPELINE = """
name: events
mode: streaming
trigger: {{max_rows: 3000, max_wait_s: 0.3}}
steps:
  - id: incoming
    extract: {{connection: bus, stream: "{stream}", types: {{id: BIGINT, grp: VARCHAR, amount: DOUBLE}}}}
  - id: doubled
    derive: {{input: incoming, columns: {{amount2: "amount * 2"}}}}
  - id: ok
    check: {{input: doubled, rules: [{{not_null: [id, grp]}}]}}
  - id: sink
    load: {{input: doubled, connection: pg, table: events, mode: append}}
"""

BROKERS: dict[
    str, tuple[str, Callable[[], AbstractContextManager[str]], Callable[[str, list[bytes]], None]]
] = {
    "nats": (NATS_URL, nats_subject, nats_publish),
    "redis": (REDIS_URL, redis_stream_key, redis_publish),
}


def payloads() -> list[bytes]:
    return [json.dumps({"id": i, "grp": f"g{i % 13}", "amount": i * 0.25}).encode() for i in range(MESSAGES)]


def committed_batch(pg: str) -> int:
    with psycopg.connect(pg) as con:
        exists = con.execute("SELECT to_regclass('_qf_staging._qf_stream_batches')").fetchone()
        if not exists or exists[0] is None:
            return 0
        row = con.execute("SELECT max(batch) FROM _qf_staging._qf_stream_batches").fetchone()
        return int(row[0] or 0) if row else 0


def sink_count(pg: str) -> int:
    with psycopg.connect(pg) as con:
        if con.execute("SELECT to_regclass('public.events')").fetchone() == (None,):
            return 0
        row = con.execute("SELECT count(*) FROM events").fetchone()
        return int(row[0]) if row else 0


def start_and_kill(root: Path, fault: str, step: str, rng: random.Random) -> tuple[int, str]:
    """Start `queryforge stream`; SIGKILL it per `step` unless a fault makes it exit first."""
    proc = subprocess.Popen(
        [QF, "stream", "events"],
        cwd=root,
        env={**os.environ, "QUERYFORGE_FAULTS": fault},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reported = threading.Event()  # a progress line: the start committed a batch

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("batch "):
                reported.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if step == "kill":
            proc.wait(timeout=rng.uniform(0.5, 5.0))
        elif step == "kill-running":
            delay = rng.uniform(0.0, 2.0)
            if reported.wait(timeout=180):
                proc.wait(timeout=delay)
        else:
            proc.wait(timeout=180)
    except subprocess.TimeoutExpired:
        pass
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    reader.join(timeout=30)
    assert proc.stderr is not None
    proc.stderr.close()
    return proc.returncode, "".join(lines)


@pytest.fixture
def setting(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, str, str]]:
    url, make_stream, _ = BROKERS[request.param]
    with postgres_database() as pg, make_stream() as stream:
        root = tmp_path / "ws"
        (root / "pipelines").mkdir(parents=True)
        (root / "queryforge.yaml").write_text(
            f"name: ws\ntarget: pg\nconnections:\n  bus: {{url: '{url}'}}\n"
            f"  pg: {{url: '{pg}', writable: true}}\n"
        )
        (root / "pipelines" / "events.yaml").write_text(PIPELINE.format(stream=stream))
        yield root, pg, stream


@pytest.mark.parametrize("setting", sorted(BROKERS), indirect=True)
def test_sigkilled_stream_publishes_every_message_exactly_once(
    setting: tuple[Path, str, str], request: pytest.FixtureRequest
) -> None:
    root, pg, stream = setting
    broker = request.node.callspec.params["setting"]
    publish = BROKERS[broker][2]
    messages = payloads()
    rng = random.Random(SEED)
    # Half the kills fall at a random instant after spawning (startup, connecting, the first read);
    # the other half at a random instant after the start reported a committed batch, so they land
    # mid-stream however slow the machine is.
    plan = ["kill"] * (KILLS // 2) + ["kill-running"] * (KILLS - KILLS // 2)
    plan += ["stream.in_transaction=exit"] * 3 + ["stream.before_ack=exit"] * 3
    rng.shuffle(plan)
    # Each start gets its share of the messages, published while the process starts and reads.
    bounds = [MESSAGES * i // len(plan) for i in range(len(plan) + 1)]
    for i, step in enumerate(plan):
        before = committed_batch(pg)
        publisher = threading.Thread(target=publish, args=(stream, messages[bounds[i] : bounds[i + 1]]))
        publisher.start()
        fault = "" if step.startswith("kill") else step
        code, err = start_and_kill(root, fault, step, rng)
        publisher.join()
        assert code in (-signal.SIGKILL, 137), f"the stream ended by itself ({code}): {err[-2000:]}"
        assert fault == "" or code == 137, f"{step} was never reached: {err[-3000:]}"
        if step == "kill-running":
            assert committed_batch(pg) > before, f"a batch was reported but not committed: {err[-2000:]}"
    # The last start drains what is left and stops gracefully, once it reports progress.
    final = subprocess.Popen(
        [QF, "stream", "events"],
        cwd=root,
        env={**os.environ, "QUERYFORGE_FAULTS": ""},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert final.stderr is not None
    lines: list[str] = []
    for line in final.stderr:  # the first progress line: the stream is up, SIGTERM is graceful now
        lines.append(line)
        if line.startswith("batch "):
            break
    deadline = time.monotonic() + 240
    while sink_count(pg) < MESSAGES and time.monotonic() < deadline and final.poll() is None:
        time.sleep(0.5)
    final.send_signal(signal.SIGTERM)
    out, rest = final.communicate(timeout=60)
    err = "".join(lines) + rest
    assert final.returncode == 0, err[-3000:]
    assert "Stream stopped cleanly" in out

    with psycopg.connect(pg) as con:
        count, distinct, low, high, total = con.execute(
            "SELECT count(*), count(DISTINCT id), min(id), max(id), sum(amount2) FROM events"
        ).fetchone()  # type: ignore[misc]
        batches = con.execute(
            "SELECT count(*), min(batch), max(batch) FROM _qf_staging._qf_stream_batches"
        ).fetchone()
    expected_total = sum(i * 0.25 * 2 for i in range(MESSAGES))
    assert (count, distinct, low, high) == (MESSAGES, MESSAGES, 0, MESSAGES - 1)
    assert total == pytest.approx(expected_total)
    assert batches is not None
    kept, first, last = batches
    assert kept == last - first + 1  # the committed batches have no gap (the newest 100 are kept)
