"""Cron schedules: tick maths in each schedule's own time zone, and the loop that fires due ticks.

Daylight saving time follows cronsim, which mimics Debian cron:

- a job at a fixed wall-clock time (minute and hour both fixed, e.g. `30 2 * * *`) fires once a
  day: at the first 02:30 on the fall-back day, and at 03:00 (the first minute that exists) on the
  spring-forward day;
- a job whose minute or hour is a wildcard or step (`0 * * * *`, `*/30 * * * *`) follows elapsed
  time: it fires in both folds of the repeated hour and skips the missing one.

Exactly once: a tick is submitted with the idempotency key `schedule:<id>:<tick as UTC ISO>` and
the run table holds one run per (org, key), so a tick submitted twice (two schedulers, or a retry
after a crash between submitting and advancing) is one run. After submitting, the schedule's
`next_fire_at` moves by compare-and-set; a scheduler that loses that race just moves on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim
from sqlalchemy import Engine

from ..errors import UserError, did_you_mean, suggest
from ..store.schedules import ScheduleRecord, ScheduleRepo

log = logging.getLogger(__name__)

CATCH_UP = ("none", "latest", "all")
"""What a schedule does with ticks it missed while no scheduler ran (see `choose`)."""

MAX_CATCH_UP = 1000
"""At most this many missed ticks of one schedule are fired in one pass ('all'); the rest follow."""

CRON_HINT = "five fields: minute hour day-of-month month day-of-week, e.g. '0 6 * * *'"

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31, L or LW; the month must have that day"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 or SUN-SAT, 0 and 7 are Sunday"),
)
_TINY = timedelta(microseconds=1)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime, what: str) -> datetime:
    if value.utcoffset() is None:
        raise ValueError(f"naive datetime {value!r} as {what}: schedules need timezone-aware datetimes")
    return value.astimezone(UTC)


def _zone(timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        pass
    zones = available_timezones()
    same_letters = [zone for zone in zones if zone.lower() == timezone.strip().lower()]
    near = same_letters[0] if same_letters else suggest(timezone, zones, cutoff=75.0)
    raise UserError(
        f"Unknown time zone '{timezone}'",
        hint=(f"did you mean '{near}'? " if near else "")
        + "Time zones are IANA names such as 'Europe/Berlin', 'America/New_York' or 'UTC'",
    )


def _fields(cron: str) -> list[str]:
    """The five fields of `cron` (an @alias expanded), or a UserError."""
    text = ALIASES.get(cron.strip().lower(), cron)
    fields = text.split()
    if len(fields) != 5:
        raise UserError(
            f"Cron expression '{cron}' is invalid: it has {len(fields)} field{'s' * (len(fields) != 1)}, "
            "not 5",
            hint=CRON_HINT + f"; or one of {', '.join(ALIASES)}",
        )
    return fields


def _invalid(cron: str, fields: list[str], error: Exception) -> UserError:
    reason = str(error)
    for index, (name, allowed) in enumerate(_FIELDS):
        if reason == f"Bad {name}":
            reason = f"the {name} field '{fields[index]}' is not valid ({name}: {allowed})"
            break
    return UserError(f"Cron expression '{cron}' is invalid: {reason}", hint=CRON_HINT)


def _cronsim(cron: str, zone: ZoneInfo, after: datetime) -> CronSim:
    fields = _fields(cron)
    try:
        return CronSim(" ".join(fields), after.astimezone(zone))
    except Exception as exc:  # cronsim raises CronSimError, but any parse failure is the user's text
        raise _invalid(cron, fields, exc) from exc


def _ticks(cron: str, timezone: str, after: datetime) -> Iterator[datetime]:
    """Every tick strictly after `after`, in UTC, in order (ends if none come within 50 years)."""
    last = _aware(after, "after")
    for local in _cronsim(cron, _zone(timezone), last):
        tick = local.astimezone(UTC)
        # Fixed-time jobs are evaluated on the wall clock, which forgets the fold: from 02:15 in the
        # second (fall-back) fold the "next" 02:30 is the first fold's, which already passed.
        if tick <= last:
            continue
        last = tick
        yield tick


def validate(cron: str, timezone: str) -> None:
    """Check a cron expression and a time zone before they are stored, so the scheduler never
    meets a schedule it cannot evaluate.

    Raises:
        UserError: the time zone is not an IANA name (with a did-you-mean hint), the expression
            does not have five valid fields, or it would never fire.
    """
    zone = _zone(timezone)
    try:
        next(_ticks(cron, timezone, datetime.now(zone)))
    except StopIteration:
        raise UserError(
            f"Cron expression '{cron}' never fires: no date within 50 years matches it",
            hint="check the day-of-month against the month (e.g. 31 in April) and the day-of-week",
        ) from None


def next_fires(cron: str, timezone: str, after: datetime, n: int = 1) -> list[datetime]:
    """The next `n` ticks strictly after `after`, as aware UTC datetimes (fewer if the expression
    stops matching within 50 years), evaluated in `timezone` so DST moves them as described above.

    Raises:
        UserError: invalid cron or time zone (see `validate`).
        ValueError: `after` is naive.
    """
    return list(islice(_ticks(cron, timezone, after), n))


def ticks_between(
    cron: str, timezone: str, start: datetime, end: datetime, limit: int = 1000
) -> list[datetime]:
    """The ticks `t` with `start <= t <= end` (UTC), oldest first, at most `limit` of them.

    Raises:
        UserError: invalid cron or time zone (see `validate`).
        ValueError: `start` or `end` is naive.
    """
    end = _aware(end, "end")
    found: list[datetime] = []
    for tick in _ticks(cron, timezone, _aware(start, "start") - _TINY):
        if tick > end or len(found) >= limit:
            break
        found.append(tick)
    return found


def _check_policy(policy: str) -> None:
    if policy not in CATCH_UP:
        raise UserError(
            f"Unknown catch-up policy '{policy}'",
            hint=did_you_mean(policy, CATCH_UP) or "use none, latest or all",
        )


def choose(policy: str, ticks: list[datetime], now: datetime, grace_s: float) -> list[datetime]:
    """Which of a schedule's due `ticks` (oldest first, none after `now`) to fire.

    - `all`: every tick: each missed tick is a run of its own (e.g. one per missed day).
    - `latest`: only the newest: the pipeline catches up once, e.g. a snapshot of current data.
    - `none`: only ticks at most `grace_s` old, i.e. fired on time; what fell into a downtime is
      not made up.

    Raises:
        UserError: an unknown policy.
    """
    _check_policy(policy)
    if policy == "all":
        return list(ticks)
    if policy == "latest":
        return list(ticks[-1:])
    cutoff = _aware(now, "now") - timedelta(seconds=grace_s)
    return [tick for tick in ticks if tick >= cutoff]


def _newest(cron: str, timezone: str, start: datetime, now: datetime) -> list[datetime]:
    """The newest tick in [start, now] (or []), looking back in growing windows so that a long
    downtime of a frequent schedule costs about as much as a short one."""
    span = timedelta(hours=1)
    while True:
        low = max(start, now - span)
        newest: datetime | None = None
        for tick in _ticks(cron, timezone, low - _TINY):
            if tick > now:
                break
            newest = tick
        if newest is not None or low == start:
            return [] if newest is None else [newest]
        span *= 4


def plan(
    cron: str,
    timezone: str,
    catch_up: str,
    next_fire_at: datetime,
    now: datetime,
    grace_s: float,
    limit: int = MAX_CATCH_UP,
) -> tuple[list[datetime], datetime | None]:
    """The ticks a due schedule fires at `now`, and its `next_fire_at` afterwards.

    Equivalent to `choose(catch_up, ticks_between(cron, timezone, next_fire_at, now), now, grace_s)`
    followed by `next_fires(cron, timezone, after=now)[0]`, except that the work stays bounded after
    a long downtime: `latest` and `none` look only at the ticks they could choose, and `all` fires
    at most `limit` ticks, leaving `next_fire_at` on the first tick it did not fire yet (the next
    pass continues from there). None as the next time: the expression never matches again.
    """
    _check_policy(catch_up)
    now = _aware(now, "now")
    start = _aware(next_fire_at, "next_fire_at")
    if catch_up == "all":
        ticks = ticks_between(cron, timezone, start, now, limit + 1)
        if len(ticks) > limit:
            log.warning(
                "cron '%s' (%s) missed more than %d ticks; firing the oldest %d now, the rest next pass",
                cron,
                timezone,
                limit,
                limit,
            )
            return ticks[:limit], ticks[limit]
    elif catch_up == "latest":
        ticks = _newest(cron, timezone, start, now)
    else:
        ticks = ticks_between(cron, timezone, max(start, now - timedelta(seconds=grace_s)), now, limit)
    following = next_fires(cron, timezone, now, 1)
    return choose(catch_up, ticks, now, grace_s), (following[0] if following else None)


def idempotency_key(schedule_id: int, tick: datetime) -> str:
    """The run key of one tick of one schedule: equal in every scheduler process."""
    return f"schedule:{schedule_id}:{tick.astimezone(UTC).isoformat()}"


SubmitFn = Callable[[ScheduleRecord, datetime, str], str]
"""`(schedule, tick in UTC, idempotency key) -> run id`. Submitting a known key must return the run
that key already made (the run table's UNIQUE(org_id, idempotency_key) does that)."""


@dataclass(frozen=True)
class Firing:
    """One tick submitted by a pass; two schedulers may both report a tick, with the same run id."""

    schedule: str
    org_id: str
    tick: datetime
    run_id: str


class Scheduler:
    """Fires due ticks of every org's schedules by submitting runs; safe to run in several processes.

    Args:
        engine: the metadata database.
        submit: queues one run (see `SubmitFn`).
        clock: the current time (aware); tests pass a fake one.
        grace_s: how late a tick may be and still count as on time for catch-up policy `none`;
            longer than the pass interval, or `none` schedules miss ticks in normal operation.
    """

    def __init__(
        self,
        engine: Engine,
        submit: SubmitFn,
        *,
        clock: Callable[[], datetime] = _utcnow,
        grace_s: float = 60.0,
    ) -> None:
        self.engine = engine
        self.submit = submit
        self.clock = clock
        self.grace_s = grace_s

    def tick(self) -> list[Firing]:
        """One pass over every due schedule: submit the ticks its catch-up policy chooses, in order,
        then advance its `next_fire_at` past now (compare-and-set; losing to another scheduler is
        fine, it submitted the same keys).

        A schedule whose ticks cannot be submitted (the submit raised) is logged and left as it
        was, so the next pass tries the same ticks again; the other schedules go on.
        """
        now = _aware(self.clock(), "clock()")
        firings: list[Firing] = []
        for schedule in ScheduleRepo.due(self.engine, now):
            try:
                firings.extend(self._fire(schedule, now))
            except Exception:
                log.exception(
                    "schedule '%s' (org '%s'): firing failed; it stays due and is tried again next pass",
                    schedule.name,
                    schedule.org_id,
                )
        return firings

    def _fire(self, schedule: ScheduleRecord, now: datetime) -> list[Firing]:
        expected = schedule.next_fire_at
        assert expected is not None  # `due` only returns schedules with a next tick
        ticks, new_next = plan(
            schedule.cron, schedule.timezone, schedule.catch_up, expected, now, self.grace_s
        )
        firings = []
        for tick in ticks:
            run_id = self.submit(schedule, tick, idempotency_key(schedule.id, tick))
            firings.append(Firing(schedule.name, schedule.org_id, tick, run_id))
            log.info(
                "schedule '%s' (org '%s'): tick %s -> run %s", schedule.name, schedule.org_id, tick, run_id
            )
        repo = ScheduleRepo(self.engine, org_id=schedule.org_id, user="scheduler")
        moved = repo.advance(
            schedule.id, expected_next=expected, new_next=new_next, fired_at=ticks[-1] if ticks else None
        )
        if not moved:
            log.debug("schedule '%s': another scheduler advanced it first", schedule.name)
        return firings

    def run_forever(self, stop: threading.Event, interval_s: float = 1.0) -> None:
        """Run passes every `interval_s` until `stop` is set; a failed pass (the database is down)
        is logged and the loop goes on."""
        while not stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("scheduler pass failed; trying again in %.1f s", interval_s)
            stop.wait(interval_s)


__all__ = [
    "CATCH_UP",
    "Firing",
    "Scheduler",
    "SubmitFn",
    "choose",
    "idempotency_key",
    "next_fires",
    "plan",
    "ticks_between",
    "validate",
]
