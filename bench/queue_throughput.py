"""(e) The durable run queue: trivial runs per second with 1, 2 and 4 worker processes, and claim latency.

Everything runs once on PostgreSQL metadata (a throwaway database on 127.0.0.1:5432, dropped at the
end) and once on SQLite metadata (`.queryforge/metadata.db` of the workspace).

* **end to end**: a bare workspace with the smallest pipeline that still goes through claim ->
  execute -> record the step -> succeed: one `sql` step, `SELECT 1 AS x` (no input, no load, so no
  publish; the step becomes a view in the run's work.duckdb). N runs are queued (`submit`, validated
  once, then `validate=False`), then K worker processes (multiprocessing `spawn`) drain the queue with
  `Workspace.worker_slot(i)`: claim, execute under the watchdog, release. Each process opens its
  workspace and validates the pipeline once (imports, engine, connection pool) and then waits at a
  barrier, so process start-up is not timed. runs/s = N / (last `ended_at` - first `started_at`) of
  those runs in the runs table. The per-org limit (`org_concurrency`, default 3) is raised to 100 so
  it does not cap the measurement.
* **queue only**: N queued runs are inserted directly, then K processes loop `RunQueue.claim(owner)`
  and `Repo.update_run(status='succeeded', lease cleared)` until nothing is left: claims/s and the
  latency of `claim()` (p50, p95). Every run must be claimed exactly once (claims per run id == 1 and
  `attempt == 1` in the table); the check is printed.
* **baseline, same run, same database, same runs table**: the raw claim a queue needs at the least --
  PostgreSQL: one transaction `SELECT id ... WHERE status = 'queued' ORDER BY created_at, id LIMIT 1
  FOR UPDATE SKIP LOCKED` + `UPDATE ... SET status = 'running', lease...` in psycopg; SQLite: the same
  two statements in one `BEGIN IMMEDIATE` transaction in sqlite3 -- then the same "succeeded" update.
  The queue's claim latency is printed as a ratio against it.

Goal: >= 50 trivial runs/s end to end with 2 workers on PostgreSQL. Nothing asserts.
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import shutil
import sqlite3
import time
import traceback
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import func, insert, select

from queryforge.config import Settings
from queryforge.store import Store
from queryforge.store import tables as t
from queryforge.store.queue import RunQueue, utcnow
from queryforge.store.repo import new_run_id
from queryforge.workspace import Workspace

from .common import WORK_DIR, Outcome, clear_run_dirs, log, median, percentile, profile_call

NAME = "queue_throughput"
GOAL_RUNS_PER_S = 50.0
GOAL_WORKERS = 2
WORKERS = (1, 2, 4)
ORG_CONCURRENCY = 100  # raised from the default 3 so the per-org limit does not cap K workers
ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PIPELINE = "trivial"
PIPELINE_YAML = "name: trivial\nsteps:\n  - id: one\n    sql: SELECT 1 AS x\n"
STARTUP_TIMEOUT_S = 120.0
DRAIN_TIMEOUT_S = 600.0
BACKENDS = ("postgres", "sqlite")
RAW_CLAIM_PG = (
    "SELECT id FROM runs WHERE org_id = 'default' AND status = 'queued' "
    "ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED"
)
RAW_TAKE_PG = (
    "UPDATE runs SET status = 'running', lease_owner = %s, lease_expires_at = now() + interval '30 seconds', "
    "heartbeat_at = now(), attempt = attempt + 1, started_at = coalesce(started_at, now()) WHERE id = %s"
)
RAW_DONE_PG = (
    "UPDATE runs SET status = 'succeeded', ended_at = now(), lease_owner = NULL, lease_expires_at = NULL "
    "WHERE id = %s"
)
RAW_CLAIM_SQLITE = (
    "SELECT id FROM runs WHERE org_id = 'default' AND status = 'queued' ORDER BY created_at, id LIMIT 1"
)
RAW_TAKE_SQLITE = (
    "UPDATE runs SET status = 'running', lease_owner = ?, lease_expires_at = ?, heartbeat_at = ?, "
    "attempt = attempt + 1, started_at = coalesce(started_at, ?) WHERE id = ?"
)
RAW_DONE_SQLITE = (
    "UPDATE runs SET status = 'succeeded', ended_at = ?, lease_owner = NULL, lease_expires_at = NULL "
    "WHERE id = ?"
)


class Database:
    """A fresh PostgreSQL database for the benchmark, dropped at the end."""

    def __init__(self) -> None:
        self.name = f"qf_bench_{secrets.token_hex(4)}"
        with psycopg.connect(ADMIN, autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{self.name}"'.encode())
        self.url = f"postgresql://postgres@127.0.0.1:5432/{self.name}"

    def drop(self) -> None:
        with psycopg.connect(ADMIN, autocommit=True) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'.encode())


def settings_for(url: str | None) -> Settings:
    return Settings(database_url=url, workspace=None, org_concurrency=ORG_CONCURRENCY)


def make_workspace(backend: str, url: str | None) -> Workspace:
    """A new bare workspace under bench/.data/work/queue_throughput_<backend> with the trivial pipeline."""
    root = WORK_DIR / f"{NAME}_{backend}"
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    ws = Workspace.init(root, bare=True, settings=settings_for(url))
    (ws.root / "pipelines" / f"{PIPELINE}.yaml").write_text(PIPELINE_YAML)
    return ws


def metadata_url(ws: Workspace) -> str:
    return ws.settings.database_url or f"sqlite:///{ws.state / 'metadata.db'}"


# ---------------------------------------------------------------- worker processes (spawned)


def _worker_shell(
    body: Callable[..., dict[str, Any]], args: tuple[Any, ...], barrier: Any, results: Any
) -> None:
    """Run `body(*args, go=barrier.wait)` and put its figures (or its traceback) on `results`."""
    try:
        figures = body(*args, go=lambda: barrier.wait(STARTUP_TIMEOUT_S))
    except BaseException:
        barrier.abort()
        results.put({"error": traceback.format_exc()})
        return
    results.put(figures)


def _drain_worker(
    root: str, settings: dict[str, Any], index: int, *, go: Callable[[], Any]
) -> dict[str, Any]:
    """One `queryforge worker` slot draining the queue: claim, execute (watchdog, lease), release."""
    ws = Workspace(Path(root), Settings(**settings))
    try:
        ws.validate(PIPELINE)  # warm-up: imports, the DuckDB engine, the metadata connection pool
        slot = ws.worker_slot(index)
        go()
        cpu = time.process_time()
        claims: list[float] = []
        executes: list[float] = []
        ids: list[str] = []
        statuses: Counter[str] = Counter()
        while True:
            started = time.perf_counter()
            claim = slot.queue.claim(slot.owner)
            claimed = time.perf_counter()
            if claim is None:
                break
            statuses[slot.execute(claim)] += 1
            claims.append(claimed - started)
            executes.append(time.perf_counter() - claimed)
            ids.append(claim.run_id)
        return {
            "ids": ids,
            "claim_s": claims,
            "execute_s": executes,
            "statuses": dict(statuses),
            "cpu_s": time.process_time() - cpu,
            "done_at": time.time(),
        }
    finally:
        ws.close()


def _queue_worker(url: str, index: int, *, go: Callable[[], Any]) -> dict[str, Any]:
    """`RunQueue.claim` + mark the run succeeded, as fast as possible, until nothing is left."""
    store = Store(url)
    try:
        queue = RunQueue(store.engine, org_limit=ORG_CONCURRENCY)
        repo = store.repo()
        queue.counts()  # warm-up: the connection pool
        owner = f"bench:{os.getpid()}:{index}"
        go()
        cpu = time.process_time()
        latencies: list[float] = []
        ids: list[str] = []
        while True:
            started = time.perf_counter()
            claim = queue.claim(owner)
            latency = time.perf_counter() - started
            if claim is None:
                break
            repo.update_run(
                claim.run_id, status="succeeded", ended_at=utcnow(), lease_owner=None, lease_expires_at=None
            )
            latencies.append(latency)
            ids.append(claim.run_id)
        return {"ids": ids, "claim_s": latencies, "cpu_s": time.process_time() - cpu, "done_at": time.time()}
    finally:
        store.dispose()


def _raw_pg_worker(url: str, index: int, *, go: Callable[[], Any]) -> dict[str, Any]:
    """The floor: SELECT ... FOR UPDATE SKIP LOCKED + UPDATE in one psycopg transaction, then 'succeeded'."""
    owner = f"raw:{os.getpid()}:{index}"
    latencies: list[float] = []
    ids: list[str] = []
    with psycopg.connect(url) as con:
        con.execute("SELECT 1")
        con.rollback()
        go()
        cpu = time.process_time()
        while True:
            started = time.perf_counter()
            row = con.execute(RAW_CLAIM_PG).fetchone()
            if row is None:
                con.rollback()
                break
            con.execute(RAW_TAKE_PG, (owner, row[0]))
            con.commit()
            latencies.append(time.perf_counter() - started)
            con.execute(RAW_DONE_PG, (row[0],))
            con.commit()
            ids.append(row[0])
    return {"ids": ids, "claim_s": latencies, "cpu_s": time.process_time() - cpu, "done_at": time.time()}


def _sqlite_now() -> str:
    """How SQLAlchemy stores a UTC datetime in SQLite (naive text with microseconds)."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _raw_sqlite_worker(path: str, index: int, *, go: Callable[[], Any]) -> dict[str, Any]:
    """The floor: SELECT + UPDATE in one `BEGIN IMMEDIATE` sqlite3 transaction, then 'succeeded'."""
    owner = f"raw:{os.getpid()}:{index}"
    latencies: list[float] = []
    ids: list[str] = []
    con = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000"):
            con.execute(f"PRAGMA {pragma}")
        go()
        cpu = time.process_time()
        while True:
            started = time.perf_counter()
            con.execute("BEGIN IMMEDIATE")
            row = con.execute(RAW_CLAIM_SQLITE).fetchone()
            if row is None:
                con.execute("ROLLBACK")
                break
            now = _sqlite_now()
            lease = (datetime.now(UTC) + timedelta(seconds=30)).strftime("%Y-%m-%d %H:%M:%S.%f")
            con.execute(RAW_TAKE_SQLITE, (owner, lease, now, now, row[0]))
            con.execute("COMMIT")
            latencies.append(time.perf_counter() - started)
            con.execute("BEGIN IMMEDIATE")
            con.execute(RAW_DONE_SQLITE, (_sqlite_now(), row[0]))
            con.execute("COMMIT")
            ids.append(row[0])
    finally:
        con.close()
    return {"ids": ids, "claim_s": latencies, "cpu_s": time.process_time() - cpu, "done_at": time.time()}


def in_processes(
    body: Callable[..., dict[str, Any]], args_of: Callable[[int], tuple[Any, ...]], workers: int
) -> tuple[float, list[dict[str, Any]]]:
    """Start `workers` spawned processes running `body`, release them together once all are ready;
    returns the release time (time.time()) and each process's figures."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(workers + 1)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_worker_shell, args=(body, args_of(i), barrier, results), name=f"qf-bench-{i}")
        for i in range(workers)
    ]
    for proc in procs:
        proc.start()
    try:
        barrier.wait(STARTUP_TIMEOUT_S)
        released = time.time()
        out = [results.get(timeout=DRAIN_TIMEOUT_S) for _ in procs]
    except Exception:
        errors = []
        while not results.empty():
            errors.append(results.get().get("error", ""))
        for proc in procs:
            proc.kill()
        raise RuntimeError("a benchmark worker failed:\n" + "\n".join(e for e in errors if e)) from None
    finally:
        for proc in procs:
            proc.join(30)
    failed = [r["error"] for r in out if "error" in r]
    if failed:
        raise RuntimeError("a benchmark worker failed:\n" + failed[0])
    return released, out


# ---------------------------------------------------------------- seeding and checking


def submit_runs(ws: Workspace, n: int) -> list[str]:
    """Queue `n` runs of the trivial pipeline the way `queryforge submit --force` does (validated once)."""
    source = ws.load(PIPELINE)
    ids = [ws.submit_source(source, force=True).run_id]
    ids += [ws.submit_source(source, force=True, validate=False).run_id for _ in range(n - 1)]
    return ids


def insert_queued(ws: Workspace, n: int) -> list[str]:
    """`n` queued runs inserted in one statement (the queue-only figures do not time submission)."""
    source = ws.load(PIPELINE)
    pipeline_id, version_id, _ = ws.repo.save_pipeline_version(
        PIPELINE, source.content_hash(), source.canonical_text(), source.origin
    )
    base = utcnow()
    rows = [
        {
            "id": new_run_id() + f"{i:04x}"[-4:],
            "org_id": ws.repo.org_id,
            "pipeline_id": pipeline_id,
            "pipeline_version_id": version_id,
            "pipeline_name": PIPELINE,
            "mode": "publish",
            "status": "queued",
            "params_json": "{}",
            "created_at": base + timedelta(microseconds=i),
            "created_by": "bench",
            "attempt": 0,
        }
        for i in range(n)
    ]
    with ws.store.engine.begin() as conn:
        conn.execute(insert(t.runs), rows)
    return [str(r["id"]) for r in rows]


def check_runs(ws: Workspace, ids: list[str], claimed: list[str]) -> dict[str, Any]:
    """Each run claimed once (by the workers' own lists and by `attempt`), all succeeded; the span of
    the batch in the runs table (first started_at, last ended_at)."""
    r = t.runs
    twice = sum(1 for count in Counter(claimed).values() if count > 1)
    with ws.store.engine.connect() as conn:
        rows = conn.execute(
            select(r.c.status, r.c.attempt, func.count(), func.min(r.c.started_at), func.max(r.c.ended_at))
            .where(r.c.id.in_(ids))
            .group_by(r.c.status, r.c.attempt)
        ).all()
    by_state = {f"{status}/attempt {attempt}": n for status, attempt, n, _, _ in rows}
    first = min(row[3] for row in rows if row[3] is not None)
    last = max(row[4] for row in rows if row[4] is not None)
    ok = (
        twice == 0
        and len(claimed) == len(ids)
        and set(claimed) == set(ids)
        and by_state == {"succeeded/attempt 1": len(ids)}
    )
    return {
        "claimed_twice": twice,
        "claimed": len(claimed),
        "states": by_state,
        "ok": ok,
        "span": (first, last),
    }


# ---------------------------------------------------------------- the three measurements


def end_to_end(ws: Workspace, backend: str, runs: int, workers: int) -> dict[str, Any]:
    clear_run_dirs(ws)
    ids = submit_runs(ws, runs)
    root, settings = str(ws.root), ws.settings.model_dump()
    released, out = in_processes(_drain_worker, lambda i: (root, settings, i), workers)
    claimed = [run_id for o in out for run_id in o["ids"]]
    check = check_runs(ws, ids, claimed)
    first, last = check.pop("span")
    span = (last - first).total_seconds()
    claims = [x for o in out for x in o["claim_s"]]
    executes = [x for o in out for x in o["execute_s"]]
    statuses: Counter[str] = Counter()
    for o in out:
        statuses.update(o["statuses"])
    figures = {
        "runs": runs,
        "workers": workers,
        "runs_per_s": runs / span,
        "span_s": span,
        "wall_s": max(o["done_at"] for o in out) - released,
        "claim_ms_p50": median(claims) * 1000,
        "claim_ms_p95": percentile(claims, 95) * 1000,
        "execute_ms_p50": median(executes) * 1000,
        "execute_ms_p95": percentile(executes, 95) * 1000,
        "worker_cpu_ms_per_run": sum(o["cpu_s"] for o in out) / runs * 1000,
        "per_worker": [len(o["ids"]) for o in out],
        "statuses": dict(statuses),
        **check,
    }
    log(
        f"[{NAME}] {backend} end to end, {workers} worker(s): {runs} runs in {span:.2f}s = "
        f"{figures['runs_per_s']:.1f} runs/s (claim p50 {figures['claim_ms_p50']:.1f} ms, execute p50 "
        f"{figures['execute_ms_p50']:.1f} ms, worker cpu {figures['worker_cpu_ms_per_run']:.1f} ms/run; "
        f"per worker {figures['per_worker']}; each run claimed once: {'yes' if check['ok'] else 'NO'})"
    )
    return figures


def queue_only(ws: Workspace, backend: str, runs: int, workers: int, raw: bool) -> dict[str, Any]:
    ids = insert_queued(ws, runs)
    body: Callable[..., dict[str, Any]] = _queue_worker
    where = metadata_url(ws)
    if raw and backend == "postgres":
        body = _raw_pg_worker
    elif raw:
        body, where = _raw_sqlite_worker, str(ws.state / "metadata.db")
    released, out = in_processes(body, lambda i: (where, i), workers)
    claimed = [run_id for o in out for run_id in o["ids"]]
    check = check_runs(ws, ids, claimed)
    check.pop("span")
    latencies = [x for o in out for x in o["claim_s"]]
    wall = max(o["done_at"] for o in out) - released
    figures = {
        "runs": runs,
        "workers": workers,
        "claims_per_s": len(claimed) / wall,
        "wall_s": wall,
        "claim_ms_p50": median(latencies) * 1000,
        "claim_ms_p95": percentile(latencies, 95) * 1000,
        "cpu_ms_per_claim": sum(o["cpu_s"] for o in out) / max(len(claimed), 1) * 1000,
        "per_worker": [len(o["ids"]) for o in out],
        **check,
    }
    what = (
        "raw SKIP LOCKED" if raw and backend == "postgres" else "raw BEGIN IMMEDIATE" if raw else "RunQueue"
    )
    log(
        f"[{NAME}] {backend} {what}, {workers} worker(s): {len(claimed)} claims in {wall:.2f}s = "
        f"{figures['claims_per_s']:.0f}/s, claim p50 {figures['claim_ms_p50']:.2f} ms p95 "
        f"{figures['claim_ms_p95']:.2f} ms (cpu {figures['cpu_ms_per_claim']:.2f} ms/claim; per worker "
        f"{figures['per_worker']}; each run claimed once: {'yes' if check['ok'] else 'NO'})"
    )
    return figures


def profile_drain(ws: Workspace, runs: int) -> str:
    """One worker slot draining `runs` trivial runs in this process under cProfile."""
    clear_run_dirs(ws)
    submit_runs(ws, runs)
    ws.validate(PIPELINE)
    slot = ws.worker_slot(0)

    def drain() -> None:
        while slot.run_one() is not None:
            pass

    return profile_call(f"{NAME}_worker_{ws.store.dialect}", drain, top=25)


# ---------------------------------------------------------------- report


def table(results: dict[str, dict[str, Any]]) -> list[str]:
    head = (
        f"{'metadata':<10} {'K':>2} | {'e2e runs/s':>10} {'claim p50':>9} {'exec p50':>8} {'cpu/run':>8} | "
        f"{'queue claims/s':>14} {'p50 ms':>7} {'p95 ms':>7} | {'raw claims/s':>12} {'p50 ms':>7} "
        f"{'p95 ms':>7} | {'p50 vs raw':>10} | {'claimed twice':>13}"
    )
    lines = [head, "-" * len(head)]
    for backend in BACKENDS:
        for k in WORKERS:
            e, q, raw = (results[backend][part][str(k)] for part in ("end_to_end", "queue", "raw"))
            twice = e["claimed_twice"] + q["claimed_twice"] + raw["claimed_twice"]
            ok = e["ok"] and q["ok"] and raw["ok"]
            lines.append(
                f"{backend:<10} {k:>2} | {e['runs_per_s']:>10.1f} {e['claim_ms_p50']:>6.1f} ms "
                f"{e['execute_ms_p50']:>5.1f} ms {e['worker_cpu_ms_per_run']:>5.1f} ms | "
                f"{q['claims_per_s']:>14.0f} {q['claim_ms_p50']:>7.2f} {q['claim_ms_p95']:>7.2f} | "
                f"{raw['claims_per_s']:>12.0f} {raw['claim_ms_p50']:>7.2f} {raw['claim_ms_p95']:>7.2f} | "
                f"{q['claim_ms_p50'] / raw['claim_ms_p50']:>9.1f}x | "
                f"{twice:>4} ({'ok' if ok else 'FAILED'})"
            )
    return lines


def run(runs: int, queue_runs: int, profile: bool = False) -> list[Outcome]:
    db = Database()
    results: dict[str, dict[str, Any]] = {}
    profiles: list[str] = []
    started = time.perf_counter()
    try:
        for backend in BACKENDS:
            ws = make_workspace(backend, db.url if backend == "postgres" else None)
            try:
                parts: dict[str, dict[str, Any]] = {"end_to_end": {}, "queue": {}, "raw": {}}
                for k in WORKERS:
                    parts["end_to_end"][str(k)] = end_to_end(ws, backend, runs, k)
                for k in WORKERS:  # the baseline right before the queue, same table, same K
                    parts["raw"][str(k)] = queue_only(ws, backend, queue_runs, k, raw=True)
                    parts["queue"][str(k)] = queue_only(ws, backend, queue_runs, k, raw=False)
                results[backend] = parts
                if profile:
                    profiles.append(profile_drain(ws, runs))
            finally:
                ws.close()
                clear_run_dirs(ws)
    finally:
        db.drop()
    elapsed = time.perf_counter() - started

    e2e_pg = {k: v["runs_per_s"] for k, v in results["postgres"]["end_to_end"].items()}
    e2e_lite = {k: v["runs_per_s"] for k, v in results["sqlite"]["end_to_end"].items()}
    goal = e2e_pg[str(GOAL_WORKERS)]
    met = goal >= GOAL_RUNS_PER_S
    all_once = all(
        results[b][part][str(k)]["ok"]
        for b in BACKENDS
        for part in ("end_to_end", "queue", "raw")
        for k in WORKERS
    )
    q_pg, raw_pg = results["postgres"]["queue"]["1"], results["postgres"]["raw"]["1"]
    q_lite, raw_lite = results["sqlite"]["queue"]["1"], results["sqlite"]["raw"]["1"]
    details = [
        f"{NAME}: trivial pipeline = one sql step 'SELECT 1 AS x'; {runs} runs end to end, {queue_runs} "
        f"queue-only claims per cell; K worker processes (spawn), org_concurrency raised to "
        f"{ORG_CONCURRENCY}; {elapsed:.0f}s",
        *table(results),
        "e2e runs/s = runs / (last ended_at - first started_at); claim/exec p50 are per run in the workers; "
        "cpu/run is the workers' own CPU (all processes) per run",
        f"each run claimed exactly once in every cell: {'yes' if all_once else 'NO'}",
    ]
    details.extend(profiles)
    line = (
        f"{NAME}: {GOAL_WORKERS} workers on PostgreSQL {goal:.1f} trivial runs/s "
        f"(goal >= {GOAL_RUNS_PER_S:g}: {'met' if met else 'NOT met'}); runs/s with 1/2/4 workers: "
        + "PostgreSQL "
        + "/".join(f"{e2e_pg[str(k)]:.1f}" for k in WORKERS)
        + ", SQLite "
        + "/".join(f"{e2e_lite[str(k)]:.1f}" for k in WORKERS)
        + f"; claim p50 (1 worker) PostgreSQL {q_pg['claim_ms_p50']:.2f} ms = "
        f"{q_pg['claim_ms_p50'] / raw_pg['claim_ms_p50']:.1f}x raw SKIP LOCKED, SQLite "
        f"{q_lite['claim_ms_p50']:.2f} ms = {q_lite['claim_ms_p50'] / raw_lite['claim_ms_p50']:.1f}x raw; "
        f"claimed once: {'yes' if all_once else 'NO'}"
    )
    return [
        Outcome(
            name=NAME,
            line=line,
            figures={"runs": runs, "queue_runs": queue_runs, "org_concurrency": ORG_CONCURRENCY, **results},
            details=details,
            meets_goal=met,
        )
    ]
