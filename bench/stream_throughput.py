"""(d) Streaming: NATS JetStream into PostgreSQL, exactly once -- throughput and end-to-end latency.

Drain: N JSON events wait in a JetStream stream; `queryforge stream` (a separate process, as a
user runs it) reads them in micro-batches of 50,000, derives a column, checks it and appends to
PostgreSQL, each batch committed with its stream position. The rate is measured in the sink (rows
visible / time from the first to the last, polled every 50 ms). The baseline in the same run is a
hand-written consumer with no checks and no exactly-once: fetch 50,000 messages, parse them with
pyarrow's JSON reader, ADBC-append them to PostgreSQL, ack.

Latency: the stream runs while a publisher process sends events at a fixed rate, each carrying its
send time; the sink is polled every 50 ms for its newest id, and each event's latency is the time
it became visible there minus its send time (p50, p95, max). The rate it sustained is the slope of
the visible ids while the publisher ran (from 1 s after the first rows, past the start-up ramp).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from .common import DATA_DIR, Outcome, log, percentile

NAME = "stream_throughput"
GOAL_RATE = 50_000
GOAL_P95_S = 5.0
NATS = "nats://127.0.0.1:4222"
ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
QF = str(Path(sys.executable).with_name("queryforge"))
BATCH = 50_000

PIPELINE = """
name: clicks
mode: streaming
trigger: {{max_rows: {batch}, max_wait_s: 0.25}}
steps:
  - id: events
    extract:
      connection: bus
      stream: {subject}
      types: {{id: BIGINT, user_id: BIGINT, url: VARCHAR, sent: DOUBLE}}
  - id: enriched
    derive: {{input: events, columns: {{section: "split_part(url, '/', 2)"}}}}
  - id: ok
    check: {{input: enriched, rules: [{{not_null: [id, user_id]}}]}}
  - id: sink
    load: {{input: enriched, connection: pg, table: clicks, mode: append}}
"""


def _event(i: int, sent: float) -> bytes:
    return json.dumps({"id": i, "user_id": i % 9973, "url": f"/p{i % 50}/item/{i}", "sent": sent}).encode()


class Setting:
    """A fresh PostgreSQL database and JetStream stream, and a workspace streaming one into the other."""

    def __init__(self, tag: str) -> None:
        token = secrets.token_hex(4)
        self.db = f"qf_bench_{token}"
        self.stream, self.subject = f"QF_BENCH_{token}", f"qf.bench.{token}"
        with psycopg.connect(ADMIN, autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{self.db}"')
        self.url = f"postgresql://postgres@127.0.0.1:5432/{self.db}"
        asyncio.run(self._nats(create=True))
        self.root = DATA_DIR / "work" / f"stream_{tag}"
        (self.root / "pipelines").mkdir(parents=True, exist_ok=True)
        (self.root / "queryforge.yaml").write_text(
            f"name: bench\ntarget: pg\nconnections:\n  bus: {{url: '{NATS}'}}\n"
            f"  pg: {{url: '{self.url}', writable: true}}\n"
        )
        (self.root / "pipelines" / "clicks.yaml").write_text(
            PIPELINE.format(batch=BATCH, subject=self.subject)
        )

    async def _nats(self, *, create: bool) -> None:
        import nats
        from nats.js.api import StreamConfig

        nc = await nats.connect(NATS)
        js = nc.jetstream()
        if create:
            await js.add_stream(StreamConfig(name=self.stream, subjects=[self.subject]))
        else:
            await js.delete_stream(self.stream)
        await nc.close()

    def publish(self, count: int, start: int = 0) -> None:
        async def main() -> None:
            import nats

            nc = await nats.connect(NATS)
            js = nc.jetstream()
            for base in range(start, start + count, 10_000):
                for i in range(base, min(base + 10_000, start + count)):
                    await js.publish_async(self.subject, _event(i, 0.0))
                await js.publish_async_completed()
            await nc.close()

        asyncio.run(main())

    def visible(self) -> tuple[int, int]:
        """(rows, max id) in the sink."""
        with psycopg.connect(self.url) as con:
            if con.execute("SELECT to_regclass('public.clicks')").fetchone() == (None,):
                return 0, -1
            row = con.execute("SELECT count(*), coalesce(max(id), -1) FROM clicks").fetchone()
            assert row is not None
            return int(row[0]), int(row[1])

    def start_stream(self) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [QF, "stream", "clicks"], cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert proc.stderr is not None
        for line in proc.stderr:  # up and reading once it reports progress
            if line.startswith("batch "):
                break
        return proc

    def stop_stream(self, proc: subprocess.Popen[str]) -> None:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)

    def close(self) -> None:
        asyncio.run(self._nats(create=False))
        with psycopg.connect(ADMIN, autocommit=True) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')


def drain_queryforge(events: int) -> float:
    setting = Setting("drain")
    try:
        setting.publish(events)
        proc = setting.start_stream()
        first_seen: tuple[float, int] | None = None
        while True:
            rows, _ = setting.visible()
            now = time.perf_counter()
            if rows and first_seen is None:
                first_seen = (now, rows)
            if rows >= events:
                break
            time.sleep(0.05)
        setting.stop_stream(proc)
        assert first_seen is not None
        rows_after_first = events - first_seen[1]
        return rows_after_first / max(now - first_seen[0], 1e-9) if rows_after_first else float("nan")
    finally:
        setting.close()


def drain_raw(events: int) -> float:
    """The hand-written consumer: fetch, parse with pyarrow, ADBC append, ack -- no checks, no
    exactly-once. Timed from its first fetched batch to its last commit."""
    import adbc_driver_postgresql.dbapi as adbc_pg
    import pyarrow as pa
    import pyarrow.json as pj

    setting = Setting("raw")
    schema = pa.schema(
        [("id", pa.int64()), ("user_id", pa.int64()), ("url", pa.string()), ("sent", pa.float64())]
    )
    try:
        setting.publish(events)

        async def main() -> float:
            import nats
            import nats.errors
            from nats.js.api import AckPolicy, ConsumerConfig

            nc = await nats.connect(NATS)
            js = nc.jetstream()
            sub = await js.pull_subscribe(
                setting.subject,
                durable="raw",
                config=ConsumerConfig(ack_policy=AckPolicy.ALL, max_ack_pending=-1),
            )
            done, started = 0, None
            with adbc_pg.connect(setting.url) as con, con.cursor() as cur:
                cur.execute(
                    "CREATE TABLE clicks (id bigint, user_id bigint, url text, sent double precision)"
                )
                con.commit()
                while done < events:
                    # The client's fetch as QueryForge drives it: short pulls until the batch is full
                    # or 0.25 s passed (one long pull of 50,000 is several times slower in nats-py).
                    msgs: list[Any] = []
                    deadline = time.monotonic() + 0.25
                    while len(msgs) < min(BATCH, events - done) and time.monotonic() < deadline:
                        try:
                            msgs += await sub.fetch(
                                batch=min(BATCH, events - done) - len(msgs),
                                timeout=deadline - time.monotonic(),
                            )
                        except (TimeoutError, nats.errors.TimeoutError):
                            break
                    if not msgs:
                        continue
                    started = started or time.perf_counter()
                    data = b"\n".join(m.data for m in msgs)
                    table = pj.read_json(
                        pa.py_buffer(data), parse_options=pj.ParseOptions(explicit_schema=schema)
                    )
                    cur.adbc_ingest("clicks", table, mode="append")
                    con.commit()
                    await msgs[-1].ack()
                    done += len(msgs)
            await nc.close()
            assert started is not None
            return (done - 0) / (time.perf_counter() - started)

        return asyncio.run(main())
    finally:
        setting.close()


PUBLISHER = r"""
import asyncio, json, sys, time
import nats
subject, rate, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
async def main():
    nc = await nats.connect("nats://127.0.0.1:4222")
    tick, i, start = 0.02, 0, time.time()
    per_tick = max(1, int(rate * tick))
    while time.time() - start < seconds:
        due = start + (i // per_tick) * tick
        if time.time() < due:
            await asyncio.sleep(due - time.time())
        now = repr(time.time()).encode()
        for _ in range(per_tick):  # core publish: JetStream stores the subject; no ack round trips
            # The same JSON as json.dumps writes, formatted directly: the publisher shares the two
            # cores with the stream, NATS and PostgreSQL, and must not be what limits the rate.
            await nc.publish(subject, b'{"id": %d, "user_id": %d, "url": "/p%d/item/%d", "sent": %s}' % (
                i, i % 9973, i % 50, i, now))
            i += 1
        await nc.flush()
    await nc.close()
    print(i, time.time() - start)
asyncio.run(main())
"""


def latency(rate: int, seconds: float) -> dict[str, Any]:
    setting = Setting("latency")
    try:
        proc = setting.start_stream()
        publisher = subprocess.Popen(
            [sys.executable, "-c", PUBLISHER, setting.subject, str(rate), str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        seen: list[tuple[float, int]] = []  # (wall time, max id visible)
        while publisher.poll() is None:
            seen.append((time.time(), setting.visible()[1]))
            time.sleep(0.05)
        out, _ = publisher.communicate()
        sent, took = out.split()
        total = int(sent)
        deadline = time.time() + 120
        while seen[-1][1] < total - 1 and time.time() < deadline:
            seen.append((time.time(), setting.visible()[1]))
            time.sleep(0.05)
        setting.stop_stream(proc)
        with psycopg.connect(setting.url) as con:
            ids_sent = con.execute("SELECT id, sent FROM clicks ORDER BY id").fetchall()
        # Each event's visibility: the first poll whose max id reached it (appends commit in order).
        latencies, k = [], 0
        for event_id, sent_at in ids_sent:
            while k < len(seen) and seen[k][1] < event_id:
                k += 1
            if k == len(seen):
                break
            latencies.append(seen[k][0] - sent_at)
        # Sustained: the slope of the visible ids while the publisher ran, from 1 s after the first
        # rows appeared (the start-up ramp) to its end. A stream that cannot keep up shows a slope
        # below the offered rate, and a latency that grows through the run.
        end = seen[0][0] + float(took)
        first = next((s[0] for s in seen if s[1] >= 0), end)
        window = [s for s in seen if first + 1.0 <= s[0] <= end]
        sustained = (
            (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])
            if len(window) > 1 and window[-1][0] > window[0][0]
            else float("nan")
        )
        visible_by_end = max((s[1] + 1 for s in seen if s[0] <= end), default=0)
        return {
            "offered_rate": round(total / float(took)),
            "sustained_rate": round(sustained),
            "visible_by_publisher_end": visible_by_end,
            "events": total,
            "delivered": len(ids_sent),
            "p50_s": round(percentile(latencies, 50), 3),
            "p95_s": round(percentile(latencies, 95), 3),
            "max_s": round(max(latencies), 3) if latencies else float("nan"),
        }
    finally:
        setting.close()


def run(events: int, rate: int, seconds: float) -> Outcome:
    log(f"[{NAME}] drain {events:,} events: queryforge stream into PostgreSQL ...")
    qf_rate = drain_queryforge(events)
    log(f"[{NAME}]   {qf_rate:,.0f} events/s; hand-written consumer ...")
    raw_rate = drain_raw(events)
    log(f"[{NAME}]   {raw_rate:,.0f} events/s; latency at {rate:,} events/s for {seconds:g} s ...")
    lat = latency(rate, seconds)
    log(f"[{NAME}]   {lat}")
    figures = {
        "events": events,
        "queryforge_events_per_s": round(qf_rate),
        "raw_consumer_events_per_s": round(raw_rate),
        "ratio_raw_over_queryforge": round(raw_rate / qf_rate, 2),
        "latency": lat,
        "cpus": os.cpu_count(),
    }
    meets = qf_rate >= GOAL_RATE and lat["p95_s"] < GOAL_P95_S and lat["sustained_rate"] >= GOAL_RATE
    line = (
        f"{NAME:<18} drain {qf_rate:,.0f} ev/s (raw consumer {raw_rate:,.0f}, {raw_rate / qf_rate:.2f}x); "
        f"at {lat['offered_rate']:,} ev/s offered: sustained {lat['sustained_rate']:,}, p95 {lat['p95_s']} s "
        f"(goal >= {GOAL_RATE:,} ev/s, p95 < {GOAL_P95_S:g} s: {'met' if meets else 'not met'})"
    )
    return Outcome(name=NAME, line=line, figures=figures, meets_goal=meets)
