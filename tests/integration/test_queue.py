"""The durable queue on SQLite and PostgreSQL metadata: limits and positions, fairness, idempotent
submission, resume (plain and edited), cancellation, run-level retries and the watchdog.

The pipeline extracts a table from a SQLite database file, derives a column, checks it and appends
to the warehouse. Resume tests add rows to that source before resuming: a resume that extracted
again would publish them, so their absence proves the finished steps' outputs were reused.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from queryforge.config import Settings
from queryforge.errors import SpecError, UserError
from queryforge.runs.control import RunControl
from queryforge.runs.events import follow as follow_events
from queryforge.runs.worker import EXIT_HARD_STOP, Slot, Watchdog
from queryforge.store.queue import Claim
from queryforge.workspace import Workspace

ROWS = 30

PIPELINE = """
name: sales
params:
  day: "2026-01-01"
steps:
  - id: src
    extract: {connection: shop, table: sales}
  - id: doubled
    derive: {input: src, columns: {twice: "amount * 2", day: "DATE '${day}'"}}
    materialize: table
  - id: ok
    check: {input: doubled, rules: [{not_null: [id]}, {range: {column: twice, max: MAX}}]}
  - id: out
    load: {input: doubled, table: sales_out, mode: append}
"""


def write_pipeline(root: Path, max_twice: int = 1_000_000) -> None:
    (root / "pipelines" / "sales.yaml").write_text(PIPELINE.replace("MAX", str(max_twice)))


def make_source(root: Path) -> None:
    with sqlite3.connect(root / "data" / "shop.sqlite") as con:
        con.execute("CREATE TABLE sales (id INTEGER PRIMARY KEY, amount INTEGER)")
        con.executemany("INSERT INTO sales VALUES (?, ?)", [(i, i * 10) for i in range(1, ROWS + 1)])


def grow_source(root: Path) -> None:
    """New source rows: a resume that extracted again would publish them too."""
    with sqlite3.connect(root / "data" / "shop.sqlite") as con:
        con.executemany("INSERT INTO sales VALUES (?, ?)", [(i, i * 10) for i in range(ROWS + 1, ROWS + 6)])


@pytest.fixture
def ws(tmp_path: Path, store_url: str) -> Iterator[Workspace]:
    root = tmp_path / "ws"
    settings = Settings(database_url=store_url, org_concurrency=3, heartbeat_s=0.1, lease_s=5)
    Workspace.init(root, bare=True, settings=settings).close()
    config = yaml.safe_load((root / "queryforge.yaml").read_text())
    config["connections"]["shop"] = {"url": "sqlite:data/shop.sqlite"}
    (root / "queryforge.yaml").write_text(yaml.safe_dump(config))
    make_source(root)
    write_pipeline(root)
    with Workspace(root, settings) as opened:
        yield opened


def out_rows(ws: Workspace) -> list[tuple[Any, ...]]:
    return sorted(ws.read_table("sales_out")[1])


def expected_rows(days: list[str]) -> list[tuple[Any, ...]]:
    """The published rows computed in Python, independently of QueryForge."""
    from datetime import date

    return sorted((i, i * 10, i * 20, date.fromisoformat(d)) for d in days for i in range(1, ROWS + 1))


# ---------------------------------------------------------------- limits, positions, fairness


def test_ten_runs_with_limit_three_run_three_at_a_time_and_all_complete(ws: Workspace) -> None:
    days = [f"2026-01-{d:02d}" for d in range(1, 11)]
    ids = [ws.submit("sales", {"day": day}).run_id for day in days]
    gate = threading.Event()
    running = 0
    peak = 0
    lock = threading.Lock()

    def runner(claim: Claim, control: RunControl) -> str:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        gate.wait(30)
        return ws.execute_claim(claim, control, requeue=True).status

    def work(index: int) -> None:
        slot = Slot(ws.queue(), runner, ws._hard_stop, f"test:{index}", heartbeat_s=0.1, poll_s=0.05)
        give_up = time.monotonic() + 60  # a thread must not outlive the test (its database is dropped)
        while time.monotonic() < give_up and any(
            r.status in ("queued", "running") for r in ws.list_runs(limit=20)
        ):
            slot.run_one() or time.sleep(0.05)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(10)]
    for t in threads:
        t.start()
    seen: list[int] = []  # running runs, sampled from the store while the queue drains
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            seen.append(sum(r.status == "running" for r in ws.list_runs(limit=20)))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        deadline = time.monotonic() + 20
        while running < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # 7 idle slots keep trying: none may get a fourth run
        statuses = {r.id: r.status for r in ws.list_runs(limit=20)}
        assert sorted(statuses.values()) == ["queued"] * 7 + ["running"] * 3
        assert [statuses[i] for i in ids[:3]] == ["running"] * 3  # first come, first served
        assert ws.positions() == {run_id: n for n, run_id in enumerate(ids[3:], 1)}
        sampler.start()
    finally:  # even after a failed assertion: the threads must end before the database is dropped
        gate.set()
        for t in threads:
            t.join(65)
        sampling.set()
        if sampler.is_alive():
            sampler.join()
    assert not any(t.is_alive() for t in threads), "the queue did not drain within a minute"
    assert max(seen) == 3
    ended = ws.list_runs(limit=20)
    assert {r.status for r in ended} == {"succeeded"}, [
        (r.id, r.status, r.error_class, r.error_message) for r in ended if r.status != "succeeded"
    ]
    assert ws.positions() == {}
    assert out_rows(ws) == expected_rows(days)


def test_claims_are_fair_across_orgs(ws: Workspace) -> None:
    other = ws.for_org("beta")
    try:
        alpha = [ws.submit("sales", {"day": f"2026-02-{d:02d}"}).run_id for d in range(1, 6)]
        beta = [other.submit("sales", {"day": f"2026-03-{d:02d}"}).run_id for d in range(1, 3)]
        assert other.positions() == {beta[0]: 1, beta[1]: 2}  # positions count within an org
        queue = ws.queue()
        claimed = [queue.claim(f"w{i}") for i in range(7)]
        orgs = [c.org_id if c else None for c in claimed]
        # beta is not starved behind alpha's five: it gets the second claim, and the limit holds per org.
        assert orgs == ["default", "beta", "default", "beta", "default", None, None]
        assert [c.run_id for c in claimed[:5] if c] == [alpha[0], beta[0], alpha[1], beta[1], alpha[2]]
        assert ws.positions() == {alpha[3]: 1, alpha[4]: 2}
    finally:
        other.close()


def test_a_pipeline_limit_caps_its_own_runs(ws: Workspace) -> None:
    text = (
        (ws.root / "pipelines" / "sales.yaml")
        .read_text()
        .replace("name: sales\n", "name: sales\nconcurrency: 1\n")
    )
    (ws.root / "pipelines" / "sales.yaml").write_text(text)
    ids = [ws.submit("sales", {"day": f"2026-04-0{d}"}).run_id for d in (1, 2)]
    queue = ws.queue()
    first = queue.claim("w1")
    assert first is not None and first.run_id == ids[0]
    assert queue.claim("w2") is None


# ---------------------------------------------------------------- idempotency


def test_submitting_the_same_run_twice_returns_the_first_and_publishes_once(ws: Workspace) -> None:
    first = ws.submit("sales", {"day": "2026-05-01"})
    again = ws.submit("sales", {"day": "2026-05-01"})
    assert first.created and not again.created and again.run_id == first.run_id
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(ws.submit("sales", {"day": "2026-05-02"}).run_id))
        for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    slot = ws.worker_slot(0)
    while slot.run_one():
        pass
    assert ws.submit("sales", {"day": "2026-05-01"}).status == "succeeded"  # still the same, finished run
    assert ws.submit("sales", {"day": "2026-05-01"}, idempotency_key="client-1").created
    assert not ws.submit("sales", {"day": "2026-06-01"}, idempotency_key="client-1").created  # key wins
    while slot.run_one():
        pass
    assert out_rows(ws) == expected_rows(["2026-05-01", "2026-05-02", "2026-05-01"])
    assert len(ws.list_runs(limit=50)) == 3


# ---------------------------------------------------------------- resume


def test_resume_reuses_finished_steps_and_publishes_once(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUERYFORGE_FAULTS", "publish.in_transaction=raise")
    failed = ws.run("sales")
    assert failed.status == "dead_lettered" and failed.error is not None
    assert failed.error.failure_class.value == "TRANSIENT"
    before = {s.step_id: s for s in ws.repo.list_steps(failed.run_id)}
    assert before["publish:warehouse"].status == "failed"
    monkeypatch.delenv("QUERYFORGE_FAULTS")
    grow_source(ws.root)

    resumed = ws.resume(failed.run_id)

    assert not isinstance(resumed, type(None)) and resumed.status == "succeeded"  # type: ignore[union-attr]
    after = {s.step_id: s for s in ws.repo.list_steps(failed.run_id)}
    for step in ("src", "doubled", "ok"):
        assert after[step].retry_count == 0 and after[step].started_at == before[step].started_at, step
    # The failed run's staged data was discarded (it was not going back to a queue): staged again.
    assert after["out"].retry_count == 1
    assert after["publish:warehouse"].retry_count == 1
    assert out_rows(ws) == expected_rows(["2026-01-01"])
    assert ws.get_run(failed.run_id).attempt == 2


def test_resume_with_an_edit_reuses_unchanged_upstream_steps(ws: Workspace) -> None:
    write_pipeline(ws.root, max_twice=100)  # the check fails: twice goes up to 600
    failed = ws.run("sales")
    assert failed.status == "failed" and failed.failed_checks
    grow_source(ws.root)
    write_pipeline(ws.root, max_twice=1000)  # fix the check only: src and doubled are unchanged

    edited = ws.resume(failed.run_id, pipeline="sales")

    assert edited.status == "succeeded"  # type: ignore[union-attr]
    new_id = edited.run_id  # type: ignore[union-attr]
    assert new_id != failed.run_id and ws.get_run(new_id).resumed_from == failed.run_id
    assert ws.get_run(new_id).version == ws.get_run(failed.run_id).version + 1
    steps = {s.step_id: s for s in ws.repo.list_steps(new_id)}
    assert steps["src"].message == steps["doubled"].message == f"reused from run {failed.run_id}"
    assert steps["src"].rows_out == ROWS
    assert steps["ok"].message is None and steps["ok"].status == "succeeded"  # the changed check ran
    assert out_rows(ws) == expected_rows(["2026-01-01"])


def test_resume_with_new_params_reruns_what_depends_on_them(ws: Workspace) -> None:
    first = ws.run("sales", {"day": "2026-07-01"})
    assert first.status == "succeeded"
    grow_source(ws.root)
    again = ws.resume(first.run_id, params={"day": "2026-07-02"})
    assert again.status == "succeeded"  # type: ignore[union-attr]
    steps = {s.step_id: s for s in ws.repo.list_steps(again.run_id)}  # type: ignore[union-attr]
    assert steps["src"].message == f"reused from run {first.run_id}"  # the day does not reach the extract
    assert steps["doubled"].message is None  # it uses ${day}: computed again
    assert out_rows(ws) == expected_rows(["2026-07-01", "2026-07-02"])


def test_resume_refuses_runs_that_are_done_or_still_owned(ws: Workspace) -> None:
    done = ws.run("sales")
    with pytest.raises(Exception, match="already succeeded"):
        ws.resume(done.run_id)
    submitted = ws.submit("sales", {"day": "2026-08-01"})
    claim = ws.queue().claim("somebody-alive")
    assert claim is not None and claim.run_id == submitted.run_id
    with pytest.raises(Exception, match="held by somebody-alive"):
        ws.resume(submitted.run_id)
    with pytest.raises(Exception, match="no failed step"):
        ws.resume(done.run_id, retry=True)


def test_a_transient_failure_on_a_worker_goes_back_to_the_queue_then_dead_letters(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUERYFORGE_FAULTS", "publish.in_transaction=raise")
    run_id = ws.submit("sales").run_id
    slot = ws.worker_slot(0)
    ran = slot.run_one()
    assert ran == (run_id, "queued")
    run = ws.get_run(run_id)
    assert run.status == "queued" and run.not_before is not None and run.error_class == "TRANSIENT"
    assert slot.run_one() is None  # backing off: not claimable before not_before
    for _ in range(2):
        time.sleep(max(0.0, (ws.get_run(run_id).not_before - run.created_at).total_seconds() - 0.0))  # type: ignore[operator]
        while (ran := slot.run_one()) is None:
            time.sleep(0.2)
    assert ran == (run_id, "dead_lettered")
    assert ws.get_run(run_id).attempt == 3
    dead = ws.dead_letters()
    assert [(d["id"], d["failed_steps"], d["params"]) for d in dead] == [
        (run_id, ["publish:warehouse"], {"day": "2026-01-01"})
    ]
    assert len(dead[0]["input_hash"]) == 40 and ws.dead_letters(since=timedelta(seconds=0)) == []
    monkeypatch.delenv("QUERYFORGE_FAULTS")
    assert ws.requeue_dead_letter(run_id).status == "queued"
    assert ws.repo.list_audit(action="dlq_requeue")[0]["reason"].startswith(f"re-queued run {run_id}")
    assert slot.run_one() == (run_id, "succeeded")
    assert out_rows(ws) == expected_rows(["2026-01-01"])


def test_a_lost_lease_does_not_use_up_one_of_the_runs_retries(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10 (14): a run whose worker was killed used up one of its QUERYFORGE_RUN_ATTEMPTS,
    so after the resume two TRANSIENT failures (e.g. the warehouse file busy with the other slot's
    run) dead-lettered it. Lost leases have their own limit (max_lost_leases)."""
    run_id = ws.submit("sales").run_id
    dead = ws.queue()
    dead.lease = timedelta(milliseconds=50)
    assert dead.claim("killed:1:0") is not None
    time.sleep(0.1)
    assert dead.reap() == [(run_id, "queued")]
    monkeypatch.setenv("QUERYFORGE_FAULTS", "publish.in_transaction=raise")
    slot = ws.worker_slot(0)
    for _ in range(2):  # the 1st and 2nd tries of 3 (claims 2 and 3) go back to the queue
        ws.repo.update_run(run_id, not_before=None)  # skip the backoff
        assert slot.run_one() == (run_id, "queued")
    run = ws.get_run(run_id)
    assert (run.attempt, run.lost_leases, run.error_class) == (3, 1, "TRANSIENT")
    ws.repo.update_run(run_id, not_before=None)
    assert slot.run_one() == (run_id, "dead_lettered")  # the 3rd try was the last


# ---------------------------------------------------------------- cancellation and the watchdog


def test_cancel_a_queued_run(ws: Workspace) -> None:
    run_id = ws.submit("sales").run_id
    assert ws.cancel(run_id) == "cancelled"
    assert ws.worker_slot(0).run_one() is None
    assert ws.get_run(run_id).status == "cancelled"
    with pytest.raises(Exception, match="only queued or running"):
        ws.cancel(run_id)


def test_cancel_a_running_run_stops_it_between_steps(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUERYFORGE_FAULTS", "step.doubled=sleep:1.0")
    run_id = ws.submit("sales").run_id
    slot = ws.worker_slot(0)
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(slot.run_one()))
    thread.start()
    while not any(s.step_id == "doubled" for s in ws.repo.list_steps(run_id)):
        time.sleep(0.02)
    assert ws.cancel(run_id) == "cancelling"
    thread.join(30)
    assert result == [(run_id, "cancelled")]
    steps = {s.step_id: s.status for s in ws.repo.list_steps(run_id)}
    assert steps == {"src": "succeeded", "doubled": "succeeded"}  # stopped before the check
    assert "sales_out" not in {t.name for t in ws.catalog("warehouse", refresh=True)[0].tables}
    assert [e["status"] for e in ws.repo.list_events(run_id) if e["kind"] == "run"][-2:] == [
        "cancelling",
        "cancelled",
    ]


def test_watchdog_stops_a_step_over_its_timeout_and_the_run_is_retried_once(ws: Workspace) -> None:
    run_id = ws.submit("sales").run_id
    queue = ws.queue()
    exits: list[int] = []
    for expected in ("queued", "failed"):
        claim = queue.claim("w")
        assert claim is not None
        ws.repo.start_step(run_id, "doubled", "transform")
        control = RunControl(timeouts={"doubled": 0.2})
        control.entered("doubled", "transform")
        with Watchdog(queue, claim, control, ws._hard_stop, 0.05, 10.0, exit=exits.append):
            deadline = time.monotonic() + 5
            while len(exits) < (1 if expected == "queued" else 2) and time.monotonic() < deadline:
                time.sleep(0.05)
        run = ws.get_run(run_id)
        assert run.status == expected and run.error_class == "TIMEOUT"
        assert "timeout_s of 0.2 s" in (run.error_message or "")
    assert exits == [EXIT_HARD_STOP, EXIT_HARD_STOP]
    step = next(s for s in ws.repo.list_steps(run_id) if s.step_id == "doubled")
    assert step.failure_class == "TIMEOUT" and step.retry_count == 1


def test_a_resume_after_a_killed_worker_does_not_use_up_the_timeout_retry(ws: Workspace) -> None:
    """Issue 10 (14): the TIMEOUT tries of a step were counted from its retry_count, which the resume
    of a run whose worker was killed in that step raises too; the first TIMEOUT after the resume was
    taken for the second, and the run ended `failed` instead of going back to the queue once."""
    run_id = ws.submit("sales").run_id
    dead = ws.queue()
    dead.lease = timedelta(milliseconds=50)
    assert dead.claim("killed:1:0") is not None
    ws.repo.start_step(run_id, "doubled", "transform")  # the worker was killed inside this step
    time.sleep(0.1)
    assert dead.reap() == [(run_id, "queued")]
    queue = ws.queue()
    exits: list[int] = []
    for expected in ("queued", "failed"):
        claim = queue.claim("w")
        assert claim is not None
        ws.repo.start_step(run_id, "doubled", "transform")  # the resume runs the step again
        control = RunControl(timeouts={"doubled": 0.2})
        control.entered("doubled", "transform")
        before = len(exits)
        with Watchdog(queue, claim, control, ws._hard_stop, 0.05, 10.0, exit=exits.append):
            deadline = time.monotonic() + 5
            while len(exits) == before and time.monotonic() < deadline:
                time.sleep(0.05)
        run = ws.get_run(run_id)
        assert (run.status, run.error_class) == (expected, "TIMEOUT"), run.error_message
    assert "tried 2 times" in (ws.get_run(run_id).error_message or "")


def test_watchdog_hard_cancels_after_the_grace_period_and_exits_when_the_lease_is_lost(ws: Workspace) -> None:
    run_id = ws.submit("sales").run_id
    queue = ws.queue()
    claim = queue.claim("w")
    assert claim is not None
    exits: list[int] = []
    control = RunControl()
    ws.repo.start_step(run_id, "src", "extract")
    control.entered("src", "extract")
    ws.cancel(run_id)
    with Watchdog(queue, claim, control, ws._hard_stop, 0.05, 0.3, exit=exits.append):
        time.sleep(0.15)
        assert control.cancel.is_set() and not exits  # asked politely first
        deadline = time.monotonic() + 5
        while not exits and time.monotonic() < deadline:
            time.sleep(0.05)
    assert exits == [EXIT_HARD_STOP]
    assert ws.get_run(run_id).status == "cancelled"
    assert {s.step_id: s.status for s in ws.repo.list_steps(run_id)} == {"src": "cancelled"}

    stolen = ws.submit("sales", {"day": "2026-09-09"}).run_id
    claim = queue.claim("w2")
    assert claim is not None and claim.run_id == stolen
    ws.repo.update_run(stolen, lease_owner="somebody-else")  # another worker took it over
    lost: list[int] = []
    with Watchdog(queue, claim, RunControl(), ws._hard_stop, 0.05, 10.0, exit=lost.append):
        deadline = time.monotonic() + 5
        while not lost and time.monotonic() < deadline:
            time.sleep(0.05)
    assert lost == [70]


@pytest.mark.parametrize("failure", ["raises", "hangs"])
def test_watchdog_stops_its_worker_before_the_lease_runs_out_when_it_cannot_renew(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    """Self-fencing: a worker that cannot heartbeat (metadata DB unreachable, a lock wait, a dead
    network) stops itself at 3/4 of its lease, so it is gone before any other worker may reap and
    claim the run -- also while the heartbeat call itself is stuck."""
    run_id = ws.submit("sales").run_id
    queue = ws.queue()
    queue.lease = timedelta(seconds=2)
    claim = queue.claim("w")
    assert claim is not None

    def unreachable(run_id: str, owner: str) -> None:
        if failure == "hangs":
            time.sleep(5)
        raise OSError("connection refused")

    monkeypatch.setattr(queue, "heartbeat", unreachable)
    exits: list[int] = []
    with Watchdog(queue, claim, RunControl(), ws._hard_stop, 0.05, 10.0, exit=exits.append):
        deadline = time.monotonic() + 5
        while not exits and time.monotonic() < deadline:
            time.sleep(0.02)
        stopped_after = time.monotonic() - claim.at
    assert exits == [70]
    assert 1.5 <= stopped_after < 2.0
    assert queue.reap() == []  # at that moment the lease had not run out: nobody could claim the run
    assert ws.get_run(run_id).status == "running"


def test_a_draining_slot_waits_for_a_run_in_its_retry_backoff(ws: Workspace) -> None:
    run_id = ws.submit("sales").run_id
    ws.repo.update_run(run_id, not_before=datetime.now(UTC) + timedelta(seconds=1.5))
    slot = ws.worker_slot(0)
    started = time.monotonic()
    assert slot.run_forever(drain=True) == 1
    assert time.monotonic() - started >= 1.4
    assert ws.get_run(run_id).status == "succeeded"


def test_a_draining_slot_waits_for_the_lease_of_a_dead_worker_then_resumes_its_run(ws: Workspace) -> None:
    """Issue 10 (14): a drain started while a killed worker's lease still looked alive exited at
    once and left the run `running` with no owner. It now waits for the lease to run out."""
    run_id = ws.submit("sales").run_id
    dead = ws.queue()
    dead.lease = timedelta(seconds=1.5)
    assert dead.claim("killed:1:0") is not None  # ... and never heartbeats again
    left = ws.queue().outstanding()
    assert (left.queued, left.leased, bool(left)) == (0, 1, True)
    slot = ws.worker_slot(0)
    slot.poll_s = 0.1
    started = time.monotonic()
    assert slot.run_forever(drain=True) == 1
    assert time.monotonic() - started >= 1.0  # it had to wait for the lease
    run = ws.get_run(run_id)
    assert (run.status, run.lost_leases) == ("succeeded", 1)
    assert out_rows(ws) == expected_rows(["2026-01-01"])
    assert not ws.queue().outstanding()


def test_a_draining_slot_waits_for_a_run_a_live_worker_holds(ws: Workspace) -> None:
    """A run under a lease that its (live) worker keeps renewing is that worker's to finish, but
    it may still come back to the queue if that worker dies: the drain waits until it ended."""
    run_id = ws.submit("sales").run_id
    live = ws.queue()
    claim = live.claim("live:1:0")
    assert claim is not None

    def other_worker() -> None:
        for _ in range(8):
            time.sleep(0.2)
            assert live.heartbeat(run_id, claim.owner) is not None
        ws.execute_claim(claim, RunControl(), requeue=True)
        live.release(run_id, claim.owner)

    thread = threading.Thread(target=other_worker, daemon=True)
    thread.start()
    slot = ws.worker_slot(0)
    slot.poll_s = 0.1
    started = time.monotonic()
    assert slot.run_forever(drain=True) == 0  # nothing for this worker to run ...
    assert time.monotonic() - started >= 1.5  # ... but it waited for the other worker's run
    thread.join(30)
    assert ws.get_run(run_id).status == "succeeded"


def test_a_drain_ends_at_once_when_no_run_is_left_to_take(ws: Workspace) -> None:
    """Finished runs, and a run `running` with no lease at all (no claim could ever take it), do
    not keep a drain waiting."""
    done = ws.submit("sales").run_id
    assert ws.worker_slot(0).run_forever(drain=True) == 1
    orphan = ws.submit("sales", {"day": "2026-01-02"}).run_id
    ws.repo.update_run(orphan, status="running")
    started = time.monotonic()
    assert ws.worker_slot(0).run_forever(drain=True) == 0
    assert time.monotonic() - started < 2
    assert ws.get_run(done).status == "succeeded"


def test_heartbeats_must_fit_in_a_lease() -> None:
    with pytest.raises(ValueError, match=r"heartbeat_s .* at most half of lease_s"):
        Settings(lease_s=4, heartbeat_s=3)


def test_expired_leases_requeue_then_dead_letter(ws: Workspace) -> None:
    run_id = ws.submit("sales").run_id
    queue = ws.queue()
    queue.lease = queue.lease * 0 + __import__("datetime").timedelta(milliseconds=50)
    for lost in (1, 2):
        assert queue.claim(f"dead-{lost}") is not None
        time.sleep(0.1)
        assert queue.reap() == [(run_id, "queued")]
        assert ws.get_run(run_id).lost_leases == lost
    assert queue.claim("dead-3") is not None
    time.sleep(0.1)
    assert queue.reap() == [(run_id, "dead_lettered")]
    run = ws.get_run(run_id)
    assert run.status == "dead_lettered" and "lost leases" in (run.error_message or "")


# ---------------------------------------------------------------- dependencies and events


def test_after_dependencies_queue_downstream_runs_and_refuse_cycles(ws: Workspace) -> None:
    (ws.root / "pipelines" / "report.yaml").write_text(
        "name: report\nafter: [sales]\nparams:\n  day: '2026-01-01'\nsteps:\n"
        "  - id: s\n    extract: {connection: warehouse, table: sales_out}\n"
        "  - id: l\n    load: {input: s, table: report_out, mode: replace}\n"
    )
    first = ws.run("sales", {"day": "2026-10-01"})
    assert first.status == "succeeded"
    queued = ws.list_runs(status="queued")
    assert [(r.pipeline_name, r.params, r.trigger) for r in queued] == [
        ("report", {"day": "2026-10-01"}, f"after:{first.run_id}")
    ]
    ws.worker_slot(0).run_one()
    assert sorted(ws.read_table("report_out")[1]) == out_rows(ws)
    text = (
        (ws.root / "pipelines" / "sales.yaml")
        .read_text()
        .replace("name: sales\n", "name: sales\nafter: [report]\n")
    )
    (ws.root / "pipelines" / "sales.yaml").write_text(text)
    with pytest.raises(SpecError, match="cycle"):
        ws.submit("sales", {"day": "2026-10-02"})


def test_events_record_every_state_change_in_order(ws: Workspace) -> None:
    outcome = ws.run("sales")
    events = list(ws.events(outcome.run_id, follow=True))
    run_states = [e["status"] for e in events if e["kind"] == "run"]
    assert run_states == ["queued", "running", "succeeded"]
    step_states = [(e["step_id"], e["status"]) for e in events if e["kind"] == "step"]
    assert step_states == [
        (s, state)
        for s in ("src", "doubled", "ok", "out", "publish:warehouse")
        for state in ("running", "succeeded")
    ]
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)


def test_resume_after_other_runs_wrote_the_table_publishes_exactly_once(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The publish ledger, not production's fingerprint, says whether an interrupted publish
    committed: here another run appends to the same table in between (the fingerprint moves)."""
    monkeypatch.setenv("QUERYFORGE_FAULTS", "publish.in_transaction=raise")
    failed = ws.run("sales", {"day": "2026-12-01"})
    assert failed.status == "dead_lettered"
    monkeypatch.delenv("QUERYFORGE_FAULTS")
    assert ws.run("sales", {"day": "2026-12-02"}).status == "succeeded"
    assert ws.gc() == []  # the failed run's staging was already discarded
    resumed = ws.resume(failed.run_id)
    assert resumed.status == "succeeded"  # type: ignore[union-attr]
    assert out_rows(ws) == expected_rows(["2026-12-01", "2026-12-02"])
    committed = ws.run("sales", {"day": "2026-12-03"})
    with ws._connections() as conns:
        connector = conns.get("warehouse")
        load = next(s for s in ws.get_run(committed.run_id).result["loads"] if s["step_id"] == "out")  # type: ignore[index]
        assert load["rows"] == ROWS
        ledger = (
            connector.fetch_arrow("SELECT staging_name FROM _qf_staging._qf_published").column(0).to_pylist()
        )  # type: ignore[attr-defined]
    assert sum(failed.run_id in name for name in ledger) == 1
    assert sum(committed.run_id in name for name in ledger) == 1


# ---------------------------------------------------------------- skip_and_continue

BRANCHES = """
name: branches
steps:
  - id: src
    extract: {connection: shop, table: sales}
  - id: doubled
    derive: {input: src, columns: {twice: "amount * 2"}}
  - id: ok
    check: {input: doubled, rules: [{not_null: [id]}]}
  - id: out
    load: {input: doubled, table: branch_good}
  - id: broken
    derive: {input: src, columns: {n: "CAST('x' || id AS INTEGER)"}}
    materialize: table
  - id: broken_rows
    sql: "SELECT id, n FROM broken"
  - id: out_broken
    load: {input: broken_rows, table: branch_bad}
"""


def test_an_incremental_extract_feeding_a_skipped_load_keeps_its_watermark(ws: Workspace) -> None:
    """The skipped target never got this window's rows: the next run must read them again."""
    incremental = BRANCHES.replace(
        "extract: {connection: shop, table: sales}",
        "extract: {connection: shop, table: sales, incremental: {cursor: id}}",
    )
    (ws.root / "pipelines" / "branches.yaml").write_text(incremental)
    failed = ws.run("branches")
    assert failed.status == "failed"
    resumed = ws.resume(failed.run_id, skip=["broken"])
    assert resumed.status == "succeeded"  # type: ignore[union-attr]
    assert len(ws.read_table("branch_good")[1]) == ROWS
    assert ws.repo.get_watermark("branches", "src") is None  # not advanced past the skipped rows


def test_skip_is_refused_when_it_would_leave_published_data_unaudited(ws: Workspace) -> None:
    """A check that also reads the skipped branch (a relationships rule) would be skipped while the
    data it audits is published: refused."""
    guarded = BRANCHES.replace(
        "check: {input: doubled, rules: [{not_null: [id]}]}",
        "check: {input: doubled, rules: [{relationships: {column: id, to: broken_rows, field: id}}]}",
    )
    (ws.root / "pipelines" / "branches.yaml").write_text(guarded)
    failed = ws.run("branches")
    assert failed.status == "failed"
    with pytest.raises(UserError, match="would skip check 'ok'"):
        ws.resume(failed.run_id, skip=["broken"])
    assert ws.get_run(failed.run_id).skip == []


def test_skip_and_continue_leaves_out_the_failed_branch_and_publishes_the_rest(ws: Workspace) -> None:
    (ws.root / "pipelines" / "branches.yaml").write_text(BRANCHES)
    failed = ws.run("branches")
    assert failed.status == "failed"
    assert {s.step_id: s.status for s in ws.repo.list_steps(failed.run_id)}["broken"] == "failed"
    grow_source(ws.root)  # a resume that extracted again would publish these rows too

    # What the DAG does not allow is refused, and nothing is recorded.
    refusals = [
        (["ok"], "checks guard what is published"),
        (["doubled_typo"], "has no step"),
        (["broken", "out"], "would skip every load"),
        (["src"], "already succeeded"),
    ]
    for skip, message in refusals:
        with pytest.raises(UserError, match=message):
            ws.resume(failed.run_id, skip=skip)
    assert ws.get_run(failed.run_id).skip == [] and ws.get_run(failed.run_id).status == "failed"

    # A wrong choice (skipping the good branch) fails again at 'broken' and can be undone: each
    # --skip replaces the previous one.
    wrong = ws.resume(failed.run_id, skip=["out"])
    assert wrong.status == "failed" and ws.get_run(failed.run_id).skip == ["out"]  # type: ignore[union-attr]

    resumed = ws.resume(failed.run_id, skip=["broken"])

    assert resumed.status == "succeeded"  # type: ignore[union-attr]
    steps = {s.step_id: s for s in ws.repo.list_steps(failed.run_id)}
    assert {k: v.status for k, v in steps.items()} == {
        "src": "succeeded",
        "doubled": "succeeded",
        "ok": "succeeded",
        "out": "succeeded",
        "broken": "skipped",
        "broken_rows": "skipped",
        "out_broken": "skipped",
        "publish:warehouse": "succeeded",
    }
    assert steps["out_broken"].message == "skipped: it depends on 'broken', which was skipped"
    assert steps["src"].retry_count == 0  # reused, not extracted again
    tables = {t.name for t in ws.catalog("warehouse", refresh=True)[0].tables}
    assert "branch_good" in tables and "branch_bad" not in tables
    assert sorted(ws.read_table("branch_good")[1]) == [(i, i * 10, i * 20) for i in range(1, ROWS + 1)]
    run = ws.get_run(failed.run_id)
    assert run.skip == ["broken"] and run.result is not None and run.error_class is None
    assert run.result["skipped"] == ["broken", "broken_rows", "out_broken"]
    assert any(a["action"] == "skip" and "broken_rows" in a["reason"] for a in ws.repo.list_audit())


# ---------------------------------------------------------------- the event interface


def test_a_follower_is_woken_by_each_event_not_by_its_poll(ws: Workspace) -> None:
    """In this process the doorbell (SQLite) or NOTIFY (PostgreSQL) delivers events as they commit:
    the follower polls only every 30 s, yet sees the whole run within seconds."""
    run_id = ws.submit("sales").run_id
    seen: list[dict[str, Any]] = []
    done = threading.Event()

    def follower() -> None:
        for e in follow_events(ws.repo, run_id, live=True, poll_s=30):
            seen.append(e)
        done.set()

    thread = threading.Thread(target=follower, daemon=True)
    thread.start()
    time.sleep(0.3)  # the follower has read the `queued` event and waits
    slot = ws.worker_slot(0)
    assert slot.run_one() == (run_id, "succeeded")
    assert done.wait(10), "the follower was not woken: it would have waited for its 30 s poll"
    thread.join()
    run_statuses = [e["status"] for e in seen if e["kind"] == "run"]
    assert run_statuses == ["queued", "running", "succeeded"]
    assert [e["id"] for e in seen] == sorted(e["id"] for e in seen)
    assert {e["step_id"] for e in seen if e["kind"] == "step"} == {
        "src",
        "doubled",
        "ok",
        "out",
        "publish:warehouse",
    }
