"""Schedules in the metadata store and the scheduler loop, on SQLite and PostgreSQL.

Runs are created in the real run table (`Repo.create_run` with the tick's idempotency key), so the
"exactly one run per tick" assertions rest on its UNIQUE(org_id, idempotency_key). Expected ticks
are written out by hand (the DST dates are in tests/unit/test_scheduler_cron.py) or are plain
arithmetic, never computed with the scheduler's own cron code.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select

from queryforge.errors import NotFoundError, UserError
from queryforge.runs.scheduler import Firing, Scheduler, next_fires
from queryforge.store import Repo, Store
from queryforge.store import tables as t
from queryforge.store.schedules import ScheduleRecord, ScheduleRepo

BERLIN = "Europe/Berlin"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class RunSubmitter:
    """A `SubmitFn` that queues a real run (one pipeline version per schedule) and records each call."""

    def __init__(self, engine: Engine, fail_for: set[str] | None = None) -> None:
        self.engine = engine
        self.fail_for = fail_for if fail_for is not None else set()
        self.calls: list[tuple[str, datetime, str]] = []
        self._lock = threading.Lock()

    def __call__(self, schedule: ScheduleRecord, tick: datetime, key: str) -> str:
        with self._lock:
            self.calls.append((schedule.name, tick, key))
        if schedule.name in self.fail_for:
            raise RuntimeError(f"submit of {schedule.name} failed on purpose")
        return submit_run(self.engine, schedule, key)


def submit_run(engine: Engine, schedule: ScheduleRecord, key: str) -> str:
    repo = Repo(engine, org_id=schedule.org_id, user="scheduler")
    pipeline_id, version_id, _ = repo.save_pipeline_version(
        schedule.pipeline, f"hash-{schedule.pipeline}", '{"steps": []}', None
    )
    return repo.create_run(
        pipeline_id=pipeline_id,
        version_id=version_id,
        pipeline_name=schedule.pipeline,
        mode="publish",
        params=schedule.params,
        idempotency_key=key,
        trigger=f"schedule:{schedule.name}",
    )


def runs_by_key(engine: Engine) -> dict[str, list[str]]:
    """Every run's id per idempotency key (all orgs)."""
    r = t.runs
    found: dict[str, list[str]] = {}
    with engine.connect() as conn:
        for key, run_id in conn.execute(select(r.c.idempotency_key, r.c.id)):
            found.setdefault(key, []).append(run_id)
    return found


def add(
    schedules: ScheduleRepo,
    name: str,
    cron: str,
    tz: str,
    now: datetime,
    *,
    catch_up: str = "all",
    pipeline: str | None = None,
) -> ScheduleRecord:
    """Add a schedule the way the workspace does: next_fire_at is the first tick after now."""
    return schedules.add(
        name=name,
        pipeline=pipeline or name,
        cron=cron,
        timezone=tz,
        params={"source": name},
        catch_up=catch_up,
        next_fire_at=next_fires(cron, tz, now)[0],
    )


def key(schedule: ScheduleRecord, tick: datetime) -> str:
    return f"schedule:{schedule.id}:{tick.isoformat()}"


def every(start: datetime, step: timedelta, end: datetime) -> list[datetime]:
    """start, start + step, ... up to end (inclusive): expectations by arithmetic, not cron."""
    out = []
    while start <= end:
        out.append(start)
        start += step
    return out


@pytest.fixture
def schedules(store: Store) -> ScheduleRepo:
    return ScheduleRepo(store.engine, org_id="default", user="alice")


# -- the repository -----------------------------------------------------------------------------------


def test_add_get_list(schedules: ScheduleRepo) -> None:
    created = schedules.add(
        name="nightly",
        pipeline="pipelines/daily_sales.yaml",
        cron="30 2 * * *",
        timezone=BERLIN,
        params={"day": "2026-03-29", "n": 3},
        catch_up="latest",
        next_fire_at=utc(2026, 3, 29, 1),
    )
    schedules.add(
        name="hourly",
        pipeline="hourly",
        cron="0 * * * *",
        timezone="UTC",
        params={},
        catch_up="none",
        next_fire_at=utc(2026, 3, 29, 2),
    )

    assert created.name == "nightly" and created.org_id == "default" and created.created_by == "alice"
    assert created.pipeline == "pipelines/daily_sales.yaml"
    assert (created.cron, created.timezone, created.catch_up) == ("30 2 * * *", BERLIN, "latest")
    assert created.params == {"day": "2026-03-29", "n": 3}
    assert created.paused is False
    assert created.next_fire_at == utc(2026, 3, 29, 1)
    assert created.next_fire_at.tzinfo is not None and created.next_fire_at.utcoffset() == timedelta(0)
    assert created.last_fire_at is None
    assert schedules.get("nightly") == created
    assert [s.name for s in schedules.list()] == ["hourly", "nightly"]


def test_duplicate_name_is_a_user_error(schedules: ScheduleRepo) -> None:
    add(schedules, "nightly", "0 6 * * *", "UTC", utc(2026, 1, 1))
    with pytest.raises(UserError) as caught:
        add(schedules, "nightly", "0 7 * * *", "UTC", utc(2026, 1, 1))
    assert str(caught.value) == (
        "A schedule named 'nightly' already exists (org 'default'). Hint: choose another name with "
        "--name, or first remove it: queryforge schedules remove nightly"
    )
    assert [s.cron for s in schedules.list()] == ["0 6 * * *"]


def test_unknown_catch_up_is_refused(schedules: ScheduleRepo) -> None:
    with pytest.raises(UserError, match="Unknown catch-up policy 'everything'"):
        add(schedules, "x", "0 6 * * *", "UTC", utc(2026, 1, 1), catch_up="everything")
    assert schedules.list() == []


def test_missing_schedule_suggests_the_nearest(schedules: ScheduleRepo) -> None:
    with pytest.raises(NotFoundError, match="there are no schedules yet"):
        schedules.get("nightly")
    add(schedules, "nightly", "0 6 * * *", "UTC", utc(2026, 1, 1))
    with pytest.raises(NotFoundError) as caught:
        schedules.get("nigthly")
    assert str(caught.value) == "Schedule 'nigthly' not found (org 'default'). Hint: did you mean 'nightly'?"
    with pytest.raises(NotFoundError, match="did you mean 'nightly'"):
        schedules.set_paused("nightlyy", True, None)
    with pytest.raises(NotFoundError, match="did you mean 'nightly'"):
        schedules.remove("Nightly")


def test_pause_resume_remove(schedules: ScheduleRepo) -> None:
    created = add(schedules, "nightly", "0 6 * * *", "UTC", utc(2026, 1, 1))
    assert created.next_fire_at == utc(2026, 1, 1, 6)

    paused = schedules.set_paused("nightly", True, created.next_fire_at)
    assert paused.paused is True and paused.next_fire_at == utc(2026, 1, 1, 6)
    assert ScheduleRepo.due(schedules.engine, utc(2026, 1, 5)) == []

    # Resumed on Jan 5th at 07:00: the ticks of Jan 1st-5th fell into the pause and never fire.
    resumed = schedules.set_paused("nightly", False, next_fires("0 6 * * *", "UTC", utc(2026, 1, 5, 7))[0])
    assert resumed.paused is False and resumed.next_fire_at == utc(2026, 1, 6, 6)
    assert schedules.get("nightly") == resumed
    assert ScheduleRepo.due(schedules.engine, utc(2026, 1, 6, 5, 59)) == []
    assert [s.name for s in ScheduleRepo.due(schedules.engine, utc(2026, 1, 6, 6))] == ["nightly"]

    schedules.remove("nightly")
    assert schedules.list() == []
    with pytest.raises(NotFoundError):
        schedules.get("nightly")


def test_orgs_are_isolated(store: Store) -> None:
    org_a = ScheduleRepo(store.engine, org_id="org_a", user="alice")
    org_b = ScheduleRepo(store.engine, org_id="org_b", user="bob")
    a = add(org_a, "nightly", "0 6 * * *", "UTC", utc(2026, 1, 1))
    b = add(org_b, "nightly", "0 9 * * *", "UTC", utc(2026, 1, 1))  # the same name in another org
    add(org_b, "secret", "0 7 * * *", "UTC", utc(2026, 1, 1))

    assert org_a.get("nightly") == a and org_b.get("nightly") == b
    assert [s.name for s in org_a.list()] == ["nightly"]
    with pytest.raises(NotFoundError):
        org_a.get("secret")
    with pytest.raises(NotFoundError):
        org_a.remove("secret")
    with pytest.raises(NotFoundError):
        org_a.set_paused("secret", True, None)
    # Org A cannot move org B's schedule even with its id and the right expected value.
    assert not org_a.advance(b.id, expected_next=b.next_fire_at, new_next=utc(2030, 1, 1), fired_at=None)
    assert org_b.get("nightly").next_fire_at == utc(2026, 1, 1, 9)
    assert [s.name for s in org_b.list()] == ["nightly", "secret"]
    # The scheduler's view spans every org.
    due = ScheduleRepo.due(store.engine, utc(2026, 1, 1, 10))
    assert [(s.org_id, s.name) for s in due] == [
        ("org_a", "nightly"),
        ("org_b", "secret"),
        ("org_b", "nightly"),
    ]


def test_advance_is_compare_and_set(schedules: ScheduleRepo) -> None:
    created = add(schedules, "nightly", "0 6 * * *", "UTC", utc(2026, 1, 1))
    assert not schedules.advance(
        created.id, expected_next=utc(2026, 1, 2, 6), new_next=utc(2026, 1, 3, 6), fired_at=utc(2026, 1, 2, 6)
    )
    assert schedules.get("nightly") == created
    assert schedules.advance(
        created.id, expected_next=utc(2026, 1, 1, 6), new_next=utc(2026, 1, 2, 6), fired_at=utc(2026, 1, 1, 6)
    )
    # The second scheduler with the same stale expectation loses.
    assert not schedules.advance(
        created.id, expected_next=utc(2026, 1, 1, 6), new_next=utc(2026, 1, 2, 6), fired_at=utc(2026, 1, 1, 6)
    )
    moved = schedules.get("nightly")
    assert (moved.next_fire_at, moved.last_fire_at) == (utc(2026, 1, 2, 6), utc(2026, 1, 1, 6))
    # fired_at None leaves last_fire_at alone.
    assert schedules.advance(created.id, expected_next=utc(2026, 1, 2, 6), new_next=None, fired_at=None)
    final = schedules.get("nightly")
    assert (final.next_fire_at, final.last_fire_at) == (None, utc(2026, 1, 1, 6))
    assert ScheduleRepo.due(schedules.engine, utc(2099, 1, 1)) == []


# -- the scheduler loop -------------------------------------------------------------------------------


def run_passes(
    scheduler: Scheduler, clock: FakeClock, start: datetime, end: datetime, step: timedelta
) -> None:
    clock.now = start
    while clock.now < end:
        clock.now += step
        scheduler.tick()


@pytest.mark.parametrize(
    ("start", "end", "nightly_expected", "missing_local", "doubled_local"),
    [
        pytest.param(
            utc(2026, 3, 27, 12),
            utc(2026, 3, 31, 12),
            # 02:30 CET, 03:00 CEST (02:30 does not exist), 02:30 CEST, 02:30 CEST
            [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30), utc(2026, 3, 31, 0, 30)],
            "03-29 02:00",
            None,
            id="spring-forward",
        ),
        pytest.param(
            utc(2026, 10, 23, 12),
            utc(2026, 10, 27, 12),
            # 02:30 CEST, the first 02:30 CEST only, 02:30 CET, 02:30 CET
            [
                utc(2026, 10, 24, 0, 30),
                utc(2026, 10, 25, 0, 30),
                utc(2026, 10, 26, 1, 30),
                utc(2026, 10, 27, 1, 30),
            ],
            None,
            "10-25 02:00",
            id="fall-back",
        ),
    ],
)
def test_tick_across_dst_over_several_days(
    store: Store,
    start: datetime,
    end: datetime,
    nightly_expected: list[datetime],
    missing_local: str | None,
    doubled_local: str | None,
) -> None:
    schedules = ScheduleRepo(store.engine, org_id="default", user="alice")
    nightly = add(schedules, "nightly", "30 2 * * *", BERLIN, start, catch_up="latest")
    hourly = add(schedules, "hourly", "0 * * * *", BERLIN, start, catch_up="all")
    clock = FakeClock(start)
    submitter = RunSubmitter(store.engine)
    step = timedelta(minutes=17)

    run_passes(Scheduler(store.engine, submitter, clock=clock), clock, start, end, step)

    last_pass = clock.now
    fired = {name: [tick for n, tick, _ in submitter.calls if n == name] for name in ("nightly", "hourly")}
    assert fired["nightly"] == nightly_expected
    # Berlin's offsets are whole hours, so an hourly job fires on every UTC hour, DST or not.
    assert fired["hourly"] == every(start + timedelta(hours=1), timedelta(hours=1), last_pass)
    wall = Counter(tick.astimezone(ZoneInfo(BERLIN)).strftime("%m-%d %H:%M") for tick in fired["hourly"])
    if missing_local:
        assert wall[missing_local] == 0
    if doubled_local:
        assert wall[doubled_local] == 2
    assert len(submitter.calls) == len(nightly_expected) + len(fired["hourly"])  # each tick once

    runs = runs_by_key(store.engine)
    expected_keys = {key(nightly, tick) for tick in nightly_expected} | {
        key(hourly, t) for t in fired["hourly"]
    }
    assert set(runs) == expected_keys
    assert all(len(ids) == 1 for ids in runs.values())
    after = {s.name: s for s in schedules.list()}
    assert after["nightly"].last_fire_at == nightly_expected[-1]
    assert after["nightly"].next_fire_at is not None and after["nightly"].next_fire_at > last_pass
    assert after["hourly"].next_fire_at == fired["hourly"][-1] + timedelta(hours=1)


@pytest.mark.parametrize(
    ("policy", "expected_minutes"),
    [("all", [10, 20, 30, 40, 50]), ("latest", [50]), ("none", [])],
)
def test_catch_up_after_downtime(store: Store, policy: str, expected_minutes: list[int]) -> None:
    schedules = ScheduleRepo(store.engine, org_id="default", user="alice")
    created = add(schedules, "ten", "*/10 * * * *", BERLIN, utc(2026, 5, 4, 8, 3), catch_up=policy)
    assert created.next_fire_at == utc(2026, 5, 4, 8, 10)
    clock = FakeClock(utc(2026, 5, 4, 8, 55, 30))  # the scheduler was down from 08:03 to 08:55:30
    submitter = RunSubmitter(store.engine)
    scheduler = Scheduler(store.engine, submitter, clock=clock, grace_s=60)

    firings = scheduler.tick()

    expected = [utc(2026, 5, 4, 8, minute) for minute in expected_minutes]
    assert [f.tick for f in firings] == expected
    assert all(f.schedule == "ten" and f.org_id == "default" for f in firings)
    assert [tick for _, tick, _ in submitter.calls] == expected
    assert set(runs_by_key(store.engine)) == {key(created, tick) for tick in expected}
    after = schedules.get("ten")
    assert after.next_fire_at == utc(2026, 5, 4, 9)  # the first tick after now
    assert after.last_fire_at == (expected[-1] if expected else None)

    # Back to normal: the 09:00 tick fires on time under every policy, and nothing else does.
    clock.now = utc(2026, 5, 4, 9, 0, 10)
    assert [f.tick for f in scheduler.tick()] == [utc(2026, 5, 4, 9)]
    assert scheduler.tick() == []
    assert schedules.get("ten").next_fire_at == utc(2026, 5, 4, 9, 10)


def test_failed_submit_does_not_stop_other_schedules_and_is_retried(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    schedules = ScheduleRepo(store.engine, org_id="default", user="alice")
    good = add(schedules, "good", "*/10 * * * *", "UTC", utc(2026, 5, 4, 8))
    bad = add(schedules, "bad", "*/10 * * * *", "UTC", utc(2026, 5, 4, 8))
    clock = FakeClock(utc(2026, 5, 4, 8, 10, 5))
    submitter = RunSubmitter(store.engine, fail_for={"bad"})
    scheduler = Scheduler(store.engine, submitter, clock=clock)

    with caplog.at_level(logging.ERROR, logger="queryforge.runs.scheduler"):
        firings = scheduler.tick()

    assert [(f.schedule, f.tick) for f in firings] == [("good", utc(2026, 5, 4, 8, 10))]
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("ERROR", "schedule 'bad' (org 'default'): firing failed; it stays due and is tried again next pass")
    ]
    assert "submit of bad failed on purpose" in caplog.text  # the traceback is logged too
    assert schedules.get("bad").next_fire_at == utc(2026, 5, 4, 8, 10)  # unchanged
    assert schedules.get("good").next_fire_at == utc(2026, 5, 4, 8, 20)

    submitter.fail_for.clear()
    clock.now = utc(2026, 5, 4, 8, 10, 30)
    assert [(f.schedule, f.tick) for f in scheduler.tick()] == [("bad", utc(2026, 5, 4, 8, 10))]
    assert schedules.get("bad").next_fire_at == utc(2026, 5, 4, 8, 20)
    assert set(runs_by_key(store.engine)) == {
        key(good, utc(2026, 5, 4, 8, 10)),
        key(bad, utc(2026, 5, 4, 8, 10)),
    }


def test_failure_in_the_middle_of_a_catch_up_resubmits_without_duplicates(store: Store) -> None:
    schedules = ScheduleRepo(store.engine, org_id="default", user="alice")
    created = add(schedules, "ten", "*/10 * * * *", "UTC", utc(2026, 5, 4, 8, 3))
    clock = FakeClock(utc(2026, 5, 4, 8, 35))
    calls = 0

    def flaky(schedule: ScheduleRecord, tick: datetime, key: str) -> str:
        nonlocal calls
        calls += 1
        if calls == 2:  # the second of three missed ticks
            raise ConnectionError("queue unreachable")
        return submit_run(store.engine, schedule, key)

    scheduler = Scheduler(store.engine, flaky, clock=clock)
    assert scheduler.tick() == []  # the pass of this schedule failed as a whole
    assert schedules.get("ten").next_fire_at == utc(2026, 5, 4, 8, 10)
    first_run = runs_by_key(store.engine)[key(created, utc(2026, 5, 4, 8, 10))]

    firings = scheduler.tick()
    assert [f.tick for f in firings] == [utc(2026, 5, 4, 8, m) for m in (10, 20, 30)]
    assert firings[0].run_id == first_run[0]  # the same run as in the failed pass
    runs = runs_by_key(store.engine)
    assert set(runs) == {key(created, utc(2026, 5, 4, 8, m)) for m in (10, 20, 30)}
    assert all(len(ids) == 1 for ids in runs.values())


def test_run_forever_stops_and_survives_a_failing_pass(store: Store) -> None:
    schedules = ScheduleRepo(store.engine, org_id="default", user="alice")
    add(schedules, "ten", "*/10 * * * *", "UTC", utc(2026, 5, 4, 8, 3))
    times = iter([None, utc(2026, 5, 4, 8, 10, 1)])
    stop = threading.Event()
    fired: list[datetime] = []

    def clock() -> datetime:
        now = next(times, None)
        if now is None:
            if fired:  # the second pass fired: stop the loop
                stop.set()
                return utc(2026, 5, 4, 8, 10, 2)
            raise OSError("clock unavailable")  # the first pass fails as a whole
        return now

    def submit(schedule: ScheduleRecord, tick: datetime, key: str) -> str:
        fired.append(tick)
        return submit_run(store.engine, schedule, key)

    worker = threading.Thread(
        target=Scheduler(store.engine, submit, clock=clock).run_forever, args=(stop, 0.01)
    )
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert fired == [utc(2026, 5, 4, 8, 10)]


# -- two schedulers at once -------------------------------------------------------------------------

TWO_SCHEDULES_START = utc(2026, 5, 4, 10, 0, 30)
TWO_SCHEDULES_STEP = timedelta(minutes=4, seconds=10)
TWO_SCHEDULES_PASSES = 40


def two_scheduler_setup(
    engine: Engine,
) -> tuple[list[datetime], dict[str, tuple[ScheduleRecord, list[datetime]]]]:
    """Three schedules and the clock steps; per schedule the ticks expected, by arithmetic."""
    schedules = ScheduleRepo(engine, org_id="default", user="alice")
    other_org = ScheduleRepo(engine, org_id="other", user="bob")
    start = TWO_SCHEDULES_START
    steps = [start + TWO_SCHEDULES_STEP * (i + 1) for i in range(TWO_SCHEDULES_PASSES)]
    last = steps[-1]  # 12:47:10
    five = add(schedules, "five", "*/5 * * * *", "UTC", start, catch_up="all")
    quarter = add(schedules, "quarter", "*/15 * * * *", BERLIN, start, catch_up="latest")
    # Kathmandu is UTC+05:45: its full hours are at :15 UTC.
    kathmandu = add(other_org, "kathmandu", "0 * * * *", "Asia/Kathmandu", start, catch_up="none")
    expected = {
        "five": (five, every(utc(2026, 5, 4, 10, 5), timedelta(minutes=5), last)),
        "quarter": (quarter, every(utc(2026, 5, 4, 10, 15), timedelta(minutes=15), last)),
        "kathmandu": (kathmandu, every(utc(2026, 5, 4, 10, 15), timedelta(hours=1), last)),
    }
    return steps, expected


def assert_one_run_per_tick(
    engine: Engine, expected: dict[str, tuple[ScheduleRecord, list[datetime]]]
) -> dict[str, list[str]]:
    runs = runs_by_key(engine)
    wanted = {key(schedule, tick) for schedule, ticks in expected.values() for tick in ticks}
    assert len(wanted) == 33 + 11 + 3  # 10:05..12:45 every 5 min; 10:15..12:45 every 15; 10:15..12:15
    assert set(runs) == wanted, f"missing {sorted(wanted - set(runs))}, extra {sorted(set(runs) - wanted)}"
    duplicated = {k: ids for k, ids in runs.items() if len(ids) != 1}
    assert duplicated == {}
    return runs


class Rendezvous:
    """Makes two schedulers race: both start each pass together, and the first submit of each pass
    waits for the other scheduler's first submit. Neither can advance a schedule before both have
    read it as due, so every pass with a due tick submits that tick twice, at the same moment."""

    def __init__(self, pass_barrier: Any, submit_barrier: Any) -> None:
        self.pass_barrier = pass_barrier
        self.submit_barrier = submit_barrier
        self.waiting_for_first_submit = False

    def start_pass(self) -> None:
        self.pass_barrier.wait(timeout=60)
        self.waiting_for_first_submit = True

    def before_submit(self) -> None:
        if self.waiting_for_first_submit:
            self.waiting_for_first_submit = False
            self.submit_barrier.wait(timeout=60)


def racing_scheduler(
    url: str, rendezvous: Rendezvous, now: list[datetime]
) -> tuple[Scheduler, list[Firing], Store]:
    """A scheduler on its own engine (own pool) whose clock and submit meet the other's."""
    store = Store(url)
    submits: list[Firing] = []

    def clock() -> datetime:
        rendezvous.start_pass()
        return now[0]

    def submit(schedule: ScheduleRecord, tick: datetime, idem: str) -> str:
        rendezvous.before_submit()
        run_id = submit_run(store.engine, schedule, idem)
        submits.append(Firing(schedule.name, schedule.org_id, tick, run_id))
        return run_id

    # The passes come up to 250 s after a tick: a grace that long lets 'none' fire every tick on time.
    return Scheduler(store.engine, submit, clock=clock, grace_s=300), submits, store


def test_two_schedulers_in_threads_fire_each_tick_once(store: Store, store_url: str) -> None:
    steps, expected = two_scheduler_setup(store.engine)
    pass_barrier, submit_barrier = threading.Barrier(2), threading.Barrier(2)
    now = [TWO_SCHEDULES_START]
    first, first_submits, first_store = racing_scheduler(
        url=store_url, rendezvous=Rendezvous(pass_barrier, submit_barrier), now=now
    )
    second, second_submits, second_store = racing_scheduler(
        url=store_url, rendezvous=Rendezvous(pass_barrier, submit_barrier), now=now
    )
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            for step in steps:
                now[0] = step
                done = [pool.submit(first.tick), pool.submit(second.tick)]
                for future in done:
                    future.result(timeout=120)
    finally:
        first_store.dispose()
        second_store.dispose()

    runs = assert_one_run_per_tick(store.engine, expected)
    submits = first_submits + second_submits
    # The race really happened: ticks were submitted by both schedulers, and both got the same run.
    per_key = Counter(key(expected[f.schedule][0], f.tick) for f in submits)
    raced = [k for k, n in per_key.items() if n == 2]
    assert len(raced) >= len(steps) // 2
    assert all(f.run_id == runs[key(expected[f.schedule][0], f.tick)][0] for f in submits)
    # After the last pass (12:47:10 UTC): the next ticks are 12:50, 13:00 and 13:15 (Kathmandu 19:00).
    following = {
        "five": utc(2026, 5, 4, 12, 50),
        "quarter": utc(2026, 5, 4, 13),
        "kathmandu": utc(2026, 5, 4, 13, 15),
    }
    for name, (schedule, _) in expected.items():
        assert (
            ScheduleRepo(store.engine, org_id=schedule.org_id, user="x").get(name).next_fire_at
            == following[name]
        )


def scheduler_process(url: str, steps: list[datetime], pass_barrier: Any, submit_barrier: Any) -> None:
    """Child process body (spawned): one scheduler passing through `steps` in lockstep with another."""
    now = [steps[0]]
    scheduler, _, store = racing_scheduler(url, Rendezvous(pass_barrier, submit_barrier), now)
    try:
        for step in steps:
            now[0] = step
            scheduler.tick()
    finally:
        store.dispose()


def test_two_scheduler_processes_fire_each_tick_once(store: Store, store_url: str) -> None:
    steps, expected = two_scheduler_setup(store.engine)
    spawn = multiprocessing.get_context("spawn")
    pass_barrier, submit_barrier = spawn.Barrier(2), spawn.Barrier(2)
    processes = [
        spawn.Process(target=scheduler_process, args=(store_url, steps, pass_barrier, submit_barrier))
        for _ in range(2)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=180)
    codes = [process.exitcode for process in processes]
    for process in processes:
        if process.is_alive():
            process.kill()
    assert codes == [0, 0]
    assert_one_run_per_tick(store.engine, expected)
