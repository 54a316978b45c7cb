"""50 runs, workers SIGKILLed at random instants, PostgreSQL as metadata store and as the target.

Two `queryforge worker --concurrency 2` supervisors drain a queue of 50 runs. Each run extracts one
part of a source table, derives a column, checks it and APPENDS it to one production table (append
is the mode where a publish done twice duplicates rows). A killer thread SIGKILLs a random slot
process every few hundred milliseconds; the supervisor starts a new slot, the lost lease sends the
run back to the queue and another slot resumes it.

Then:
- every run ended `succeeded` (resumed) or `dead_lettered` (after 3 lost leases);
- no run was ever claimed by a second process while the first one was alive (from the run events:
  each claim names its pid; the test knows when it killed which pid, and watches every slot process
  to see when it ended, for slots that stopped themselves, e.g. fencing off a lease they could not
  renew in time). A run the first process gave back itself (a failure sent it back to the queue)
  may of course be claimed again while that process lives on;
- every succeeded run's part is in production exactly once; a dead-lettered part 0 or 1 times;
- after `dlq requeue` of the dead letters and a worker without kills, production equals the source
  exactly (EXCEPT ALL both ways, computed by PostgreSQL itself, independently of QueryForge).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import yaml

from queryforge.config import Settings
from queryforge.workspace import Workspace
from tests.fault.test_publish_crash import QF
from tests.services import postgres_database

# The process-heavy fault tests run one after another on one xdist worker, never side by side:
# each starts and kills many processes, and two at once starve each other's timeouts.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("heavy")]

RUNS = 50
ROWS_PER_PART = 4000
SEED = 20261122

PIPELINE = """
name: load_part
params:
  part: {type: int}
steps:
  - id: src
    extract:
      connection: prod
      query: "SELECT id, part, amount, note FROM source_events WHERE part = ${part}"
  - id: priced
    derive: {input: src, columns: {amount_cents: "CAST(amount * 100 AS BIGINT)"}}
  - id: positive
    check: {input: priced, rules: [{not_null: [id]}, {unique: [id]}]}
  - id: out
    load: {input: priced, connection: prod, table: events_out, mode: append}
"""


@pytest.fixture
def databases() -> Iterator[tuple[str, str]]:
    with postgres_database() as meta, postgres_database() as data:
        yield meta, data


def seed_source(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as con:
        con.execute(
            "CREATE TABLE source_events (id BIGINT PRIMARY KEY, part INT, amount DOUBLE PRECISION, note TEXT)"
        )
        con.execute(
            "INSERT INTO source_events SELECT g, g %% %s, (g * 7 %% 1000) / 10.0, 'note ' || g "
            "FROM generate_series(1, %s) g",
            [RUNS, RUNS * ROWS_PER_PART],
        )


def env(meta: str) -> dict[str, str]:
    return {
        **os.environ,
        "QUERYFORGE_DATABASE_URL": meta,
        "QUERYFORGE_LEASE_S": "2",
        "QUERYFORGE_HEARTBEAT_S": "0.4",
        "QUERYFORGE_ORG_CONCURRENCY": "4",
        "QUERYFORGE_MAX_LOST_LEASES": "3",
    }


def slot_pids(supervisor: subprocess.Popen[bytes]) -> list[int]:
    """The supervisor's child processes (its slots) that are running now."""
    found = subprocess.run(["pgrep", "-P", str(supervisor.pid)], capture_output=True, text=True).stdout
    return [int(p) for p in found.split()]


def lease_holders(meta: str) -> set[int]:
    """Pids of the processes that hold a run's lease now (owner is host:pid:slot)."""
    with psycopg.connect(meta) as con:
        owners = con.execute("SELECT lease_owner FROM runs WHERE status = 'running'").fetchall()
    return {int(o.split(":")[-2]) for (o,) in owners if o}


def processes_using(meta: str) -> list[int]:
    """Processes (slots included) started with this metadata database in their environment."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if f"QUERYFORGE_DATABASE_URL={meta}".encode() + b"\0" in environ + b"\0":
                found.append(int(entry.name))
    return found


def open_runs(meta: str) -> int:
    with psycopg.connect(meta) as con:
        row = con.execute("SELECT count(*) FROM runs WHERE status IN ('queued', 'running')").fetchone()
    assert row is not None
    return int(row[0])


def test_fifty_runs_survive_killed_workers(tmp_path: Path, databases: tuple[str, str]) -> None:
    meta, data = databases
    seed_source(data)
    root = tmp_path / "ws"
    Workspace.init(root, bare=True).close()
    config = yaml.safe_load((root / "queryforge.yaml").read_text())
    config["connections"]["prod"] = {"url": data, "writable": True}
    config["target"] = "prod"
    (root / "queryforge.yaml").write_text(yaml.safe_dump(config))
    (root / "pipelines" / "load_part.yaml").write_text(PIPELINE)

    with Workspace(root, Settings(database_url=meta)) as ws:
        for part in range(RUNS):
            assert ws.submit("load_part", {"part": str(part)}).created

    workers = [
        subprocess.Popen(
            [QF, "worker", "--concurrency", "2", "-w", str(root)],
            env=env(meta),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    killed: dict[int, datetime] = {}
    gone: dict[int, datetime] = {}  # slot processes seen ending, and when (at most 50 ms late)
    stop = threading.Event()
    rng = random.Random(SEED)

    def watcher() -> None:
        alive: set[int] = set()
        while not stop.wait(0.05):
            now_alive = {p for w in workers for p in slot_pids(w)}
            for pid in alive - now_alive:
                gone.setdefault(pid, datetime.now(UTC))
            alive = now_alive

    def killer() -> None:
        while not stop.wait(rng.uniform(0.2, 1.2)):
            pids = [p for w in workers for p in slot_pids(w)]
            busy = [p for p in pids if p in lease_holders(meta)]
            if not pids:
                continue
            if busy and rng.random() < 0.8:  # mostly a slot in the middle of a run
                pids = busy
            pid = rng.choice(pids)
            killed[pid] = datetime.now(UTC)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                killed.pop(pid)

    threads = [threading.Thread(target=f, daemon=True) for f in (killer, watcher)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 900  # a busy CI machine starts slots slowly
    try:
        while open_runs(meta) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            try:
                w.wait(timeout=60)
            except subprocess.TimeoutExpired:
                w.kill()
    assert open_runs(meta) == 0, "the queue did not drain within 15 minutes"
    deadline = time.monotonic() + 30
    while processes_using(meta) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_using(meta) == [], "slot processes outlived their supervisors"
    assert len(killed) >= 10, f"only {len(killed)} slot processes were killed: the test proved little"

    with psycopg.connect(meta) as con:
        runs = con.execute("SELECT id, status, params_json FROM runs").fetchall()
        claims = con.execute(
            "SELECT run_id, ts, detail FROM run_events WHERE detail LIKE 'claimed by %%' ORDER BY id"
        ).fetchall()
        # Run events that gave a run back to the queue without a lost lease (the attempt ended itself).
        given_back = con.execute(
            "SELECT run_id, ts FROM run_events WHERE kind = 'run' AND status = 'queued' "
            "AND (detail IS NULL OR detail NOT LIKE 'lease of %%')"
        ).fetchall()
        history = con.execute(
            "SELECT run_id, ts, kind, step_id, status, detail FROM run_events ORDER BY id"
        ).fetchall()
    statuses = {status for _, status, _ in runs}
    assert statuses <= {"succeeded", "dead_lettered"}, statuses
    part_of = {run_id: int(re.search(r'"part":\s*(\d+)', params).group(1)) for run_id, _, params in runs}  # type: ignore[union-attr]

    # No run was claimed while the process holding it was still alive.
    last_owner: dict[str, tuple[int, datetime]] = {}
    for run_id, ts, detail in claims:
        pid = int(detail.split(":")[-2])
        if run_id in last_owner:
            previous, since = last_owner[run_id]
            ended = killed.get(previous) or gone.get(previous)
            released = any(r == run_id and since <= at <= ts for r, at in given_back)
            assert released or (ended is not None and ended <= ts), (
                f"run {run_id} was claimed by pid {pid} at {ts} while pid {previous} held it "
                f"(killed at {killed.get(previous)}, seen ending at {gone.get(previous)}); its events:\n"
                + "\n".join(str(e[1:]) for e in history if e[0] == run_id)
            )
        last_owner[run_id] = (pid, ts)
    resumed = {run_id for run_id, *_ in claims if sum(1 for c in claims if c[0] == run_id) > 1}
    assert resumed, "no run was ever resumed after a kill"

    with psycopg.connect(data) as con:
        counts = dict(con.execute("SELECT part, count(*) FROM events_out GROUP BY part").fetchall())
        duplicates = con.execute(
            "SELECT count(*) FROM (SELECT id FROM events_out GROUP BY id HAVING count(*) > 1) d"
        ).fetchone()
    assert duplicates == (0,), "a publish was applied twice"
    for run_id, status, _ in runs:
        got = counts.get(part_of[run_id], 0)
        if status == "succeeded":
            assert got == ROWS_PER_PART, f"run {run_id} succeeded but part {part_of[run_id]} has {got} rows"
        else:
            assert got in (0, ROWS_PER_PART)

    # The dead letters go back to the queue and finish without kills: production is then exactly the source.
    dead = [run_id for run_id, status, _ in runs if status == "dead_lettered"]
    for run_id in dead:
        subprocess.run(
            [QF, "dlq", "requeue", run_id, "-w", str(root)], env=env(meta), check=True, capture_output=True
        )
    subprocess.run(
        [QF, "worker", "--drain", "-w", str(root)],
        env=env(meta),
        check=True,
        capture_output=True,
        timeout=300,
    )
    with psycopg.connect(meta) as con:
        final = dict(con.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall())
    assert final == {"succeeded": RUNS}, final
    with psycopg.connect(data) as con:
        missing = con.execute(
            "SELECT count(*) FROM (SELECT id, part, amount, note FROM source_events "
            "EXCEPT ALL SELECT id, part, amount, note FROM events_out) m"
        ).fetchone()
        extra = con.execute(
            "SELECT count(*) FROM (SELECT id, part, amount, note FROM events_out "
            "EXCEPT ALL SELECT id, part, amount, note FROM source_events) m"
        ).fetchone()
        cents = con.execute(
            "SELECT count(*) FROM events_out WHERE amount_cents <> CAST(amount * 100 AS BIGINT)"
        ).fetchone()
    assert (missing, extra, cents) == ((0,), (0,), (0,))
    print(
        f"killed {len(killed)} slot processes; {len(resumed)} runs resumed; "
        f"{len(dead)} dead-lettered then requeued"
    )
