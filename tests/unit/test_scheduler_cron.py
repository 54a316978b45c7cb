"""Cron maths of the scheduler: DST in the schedule's zone, catch-up choices, clear user errors.

Every expected tick below was worked out by hand from the zone's rules (written next to it as local
time), never computed with the code under test. The 2026 transitions used:

- Europe/Berlin: 2026-03-29 02:00 CET (01:00 UTC) -> 03:00 CEST; 2026-10-25 03:00 CEST (01:00 UTC)
  -> 02:00 CET.
- America/New_York: 2026-03-08 02:00 EST (07:00 UTC) -> 03:00 EDT; 2026-11-01 02:00 EDT (06:00 UTC)
  -> 01:00 EST.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from queryforge.errors import UserError
from queryforge.runs.scheduler import (
    CATCH_UP,
    MAX_CATCH_UP,
    choose,
    idempotency_key,
    next_fires,
    plan,
    ticks_between,
    validate,
)

BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def local(ticks: list[datetime], zone: str) -> list[str]:
    """The ticks as wall-clock text with the zone's abbreviation, e.g. '03-29 03:00 CEST'."""
    return [tick.astimezone(ZoneInfo(zone)).strftime("%m-%d %H:%M %Z") for tick in ticks]


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def simulate(
    cron: str, zone: str, policy: str, clock: FakeClock, until: datetime, step: timedelta, grace_s: float = 60
) -> list[datetime]:
    """What the scheduler loop fires for one schedule created at `clock()` and polled every `step`."""
    next_fire = next_fires(cron, zone, clock())[0]
    fired: list[datetime] = []
    while clock() < until:
        now = clock.advance(seconds=step.total_seconds())
        if next_fire <= now:
            ticks, following = plan(cron, zone, policy, next_fire, now, grace_s)
            fired.extend(ticks)
            assert following is not None
            next_fire = following
    return fired


# -- Europe/Berlin, spring forward (2026-03-29) ------------------------------------------------------


def test_berlin_spring_forward_fixed_time_fires_once_at_three() -> None:
    ticks = ticks_between("30 2 * * *", BERLIN, utc(2026, 3, 27), utc(2026, 3, 31))

    assert ticks == [
        utc(2026, 3, 27, 1, 30),  # 02:30 CET
        utc(2026, 3, 28, 1, 30),  # 02:30 CET
        utc(2026, 3, 29, 1, 0),  # 02:30 does not exist: 03:00 CEST, once
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
    ]
    assert local(ticks, BERLIN) == [
        "03-27 02:30 CET",
        "03-28 02:30 CET",
        "03-29 03:00 CEST",
        "03-30 02:30 CEST",
    ]


def test_berlin_spring_forward_hourly_skips_the_missing_hour() -> None:
    ticks = ticks_between("0 * * * *", BERLIN, utc(2026, 3, 28, 23, 30), utc(2026, 3, 29, 2, 30))

    assert ticks == [utc(2026, 3, 29, 0), utc(2026, 3, 29, 1), utc(2026, 3, 29, 2)]
    assert local(ticks, BERLIN) == ["03-29 01:00 CET", "03-29 03:00 CEST", "03-29 04:00 CEST"]


def test_berlin_spring_forward_half_hourly_keeps_elapsed_time() -> None:
    ticks = ticks_between("*/30 * * * *", BERLIN, utc(2026, 3, 28, 23, 45), utc(2026, 3, 29, 1, 45))

    # Every 30 real minutes; the wall clock jumps from 01:30 CET to 03:00 CEST.
    assert ticks == [
        utc(2026, 3, 29, 0),
        utc(2026, 3, 29, 0, 30),
        utc(2026, 3, 29, 1),
        utc(2026, 3, 29, 1, 30),
    ]
    assert local(ticks, BERLIN) == [
        "03-29 01:00 CET",
        "03-29 01:30 CET",
        "03-29 03:00 CEST",
        "03-29 03:30 CEST",
    ]


# -- Europe/Berlin, fall back (2026-10-25) ------------------------------------------------------------


def test_berlin_fall_back_fixed_time_fires_exactly_once() -> None:
    ticks = ticks_between("30 2 * * *", BERLIN, utc(2026, 10, 24), utc(2026, 10, 26, 12))

    assert ticks == [
        utc(2026, 10, 24, 0, 30),  # 02:30 CEST
        utc(2026, 10, 25, 0, 30),  # the first 02:30 (CEST); the second one (01:30 UTC) does not fire
        utc(2026, 10, 26, 1, 30),  # 02:30 CET
    ]
    assert local(ticks, BERLIN) == ["10-24 02:30 CEST", "10-25 02:30 CEST", "10-26 02:30 CET"]


def test_berlin_fall_back_next_fire_from_inside_the_second_fold() -> None:
    # 01:15 UTC is 02:15 CET, in the repeated hour: that day's 02:30 (00:30 UTC) already passed.
    assert next_fires("30 2 * * *", BERLIN, utc(2026, 10, 25, 1, 15), 2) == [
        utc(2026, 10, 26, 1, 30),
        utc(2026, 10, 27, 1, 30),
    ]
    # Right after the first-fold firing, the next one is also a day later (not 75 minutes later).
    assert next_fires("30 2 * * *", BERLIN, utc(2026, 10, 25, 0, 30)) == [utc(2026, 10, 26, 1, 30)]


def test_berlin_fall_back_hourly_fires_twice_at_two() -> None:
    ticks = ticks_between("0 * * * *", BERLIN, utc(2026, 10, 24, 23, 30), utc(2026, 10, 25, 2, 30))

    assert ticks == [utc(2026, 10, 25, 0), utc(2026, 10, 25, 1), utc(2026, 10, 25, 2)]
    assert local(ticks, BERLIN) == ["10-25 02:00 CEST", "10-25 02:00 CET", "10-25 03:00 CET"]


def test_berlin_fall_back_half_hourly_fires_in_both_folds() -> None:
    ticks = ticks_between("*/30 * * * *", BERLIN, utc(2026, 10, 24, 23, 45), utc(2026, 10, 25, 1, 45))

    assert ticks == [
        utc(2026, 10, 25, 0),
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 25, 1),
        utc(2026, 10, 25, 1, 30),
    ]
    assert local(ticks, BERLIN) == [
        "10-25 02:00 CEST",
        "10-25 02:30 CEST",
        "10-25 02:00 CET",
        "10-25 02:30 CET",
    ]


def test_berlin_fall_back_hour_list_fires_the_repeated_hour_once() -> None:
    # Fixed minute and hour (a list): wall-clock semantics like a daily job, so 02:00 fires once.
    ticks = ticks_between("0 1-3 * * *", BERLIN, utc(2026, 10, 24, 22), utc(2026, 10, 25, 3))

    assert local(ticks, BERLIN) == ["10-25 01:00 CEST", "10-25 02:00 CEST", "10-25 03:00 CET"]
    assert ticks == [utc(2026, 10, 24, 23), utc(2026, 10, 25, 0), utc(2026, 10, 25, 2)]


# -- America/New_York and UTC -------------------------------------------------------------------------


def test_new_york_spring_forward() -> None:
    assert ticks_between("0 9 * * *", NEW_YORK, utc(2026, 3, 7), utc(2026, 3, 9, 23)) == [
        utc(2026, 3, 7, 14),  # 09:00 EST (UTC-5)
        utc(2026, 3, 8, 13),  # 09:00 EDT (UTC-4)
        utc(2026, 3, 9, 13),
    ]
    # 02:30 does not exist on 2026-03-08: 03:00 EDT = 07:00 UTC.
    assert next_fires("30 2 * * *", NEW_YORK, utc(2026, 3, 7, 12), 2) == [
        utc(2026, 3, 8, 7),
        utc(2026, 3, 9, 6, 30),
    ]


def test_new_york_fall_back() -> None:
    ticks = ticks_between("30 1 * * *", NEW_YORK, utc(2026, 10, 31), utc(2026, 11, 2, 12))

    assert ticks == [
        utc(2026, 10, 31, 5, 30),  # 01:30 EDT
        utc(2026, 11, 1, 5, 30),  # the first 01:30 (EDT) only
        utc(2026, 11, 2, 6, 30),  # 01:30 EST
    ]
    hourly = ticks_between("0 * * * *", NEW_YORK, utc(2026, 11, 1, 4, 30), utc(2026, 11, 1, 7, 30))
    assert local(hourly, NEW_YORK) == ["11-01 01:00 EDT", "11-01 01:00 EST", "11-01 02:00 EST"]


def test_utc_schedules() -> None:
    assert ticks_between("15 */6 * * *", "UTC", utc(2026, 3, 29), utc(2026, 3, 30)) == [
        utc(2026, 3, 29, 0, 15),
        utc(2026, 3, 29, 6, 15),
        utc(2026, 3, 29, 12, 15),
        utc(2026, 3, 29, 18, 15),
    ]
    # 2026-05-01 is a Friday: the next weekday noons are Fri 1st, Mon 4th, Tue 5th.
    assert next_fires("0 12 * * MON-FRI", "UTC", utc(2026, 5, 1), 3) == [
        utc(2026, 5, 1, 12),
        utc(2026, 5, 4, 12),
        utc(2026, 5, 5, 12),
    ]
    assert next_fires("@monthly", "UTC", utc(2026, 1, 31, 23, 59), 2) == [utc(2026, 2, 1), utc(2026, 3, 1)]
    assert next_fires("0 0 29 2 *", "UTC", utc(2026, 1, 1)) == [utc(2028, 2, 29)]


def test_next_fires_is_strictly_after_and_in_utc() -> None:
    at_tick = utc(2026, 6, 1, 6)
    assert next_fires("0 6 * * *", "UTC", at_tick) == [utc(2026, 6, 2, 6)]
    assert next_fires("0 6 * * *", "UTC", at_tick - timedelta(microseconds=1)) == [at_tick]
    # `after` in another zone is the same instant: 08:00 CEST is 06:00 UTC.
    same_instant = datetime(2026, 6, 1, 8, tzinfo=ZoneInfo(BERLIN))
    fires = next_fires("0 6 * * *", "UTC", same_instant, 2)
    assert fires == [utc(2026, 6, 2, 6), utc(2026, 6, 3, 6)]
    assert all(fire.tzinfo is UTC for fire in fires)


def test_ticks_between_is_inclusive_and_limited() -> None:
    start, end = utc(2026, 6, 1, 10), utc(2026, 6, 1, 11)
    assert ticks_between("*/20 * * * *", "UTC", start, end) == [
        utc(2026, 6, 1, 10),
        utc(2026, 6, 1, 10, 20),
        utc(2026, 6, 1, 10, 40),
        utc(2026, 6, 1, 11),
    ]
    assert ticks_between("*/20 * * * *", "UTC", start, end, limit=2) == [
        utc(2026, 6, 1, 10),
        utc(2026, 6, 1, 10, 20),
    ]
    assert ticks_between("*/20 * * * *", "UTC", end, start) == []


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        next_fires("0 6 * * *", "UTC", datetime(2026, 6, 1))


def test_idempotency_key_names_schedule_and_utc_tick() -> None:
    tick = datetime(2026, 3, 29, 3, tzinfo=ZoneInfo(BERLIN))
    assert idempotency_key(7, tick) == "schedule:7:2026-03-29T01:00:00+00:00"


# -- catch-up policies ----------------------------------------------------------------------------------


def test_choose_after_a_downtime_of_five_ticks() -> None:
    clock = FakeClock(utc(2026, 5, 4, 8, 3))
    missed_from = next_fires("*/10 * * * *", "UTC", clock())[0]
    now = clock.advance(minutes=52, seconds=30)  # 08:55:30, down since 08:03
    ticks = ticks_between("*/10 * * * *", "UTC", missed_from, now)
    expected = [utc(2026, 5, 4, 8, m) for m in (10, 20, 30, 40, 50)]
    assert ticks == expected

    assert choose("all", ticks, now, 60) == expected
    assert choose("latest", ticks, now, 60) == [utc(2026, 5, 4, 8, 50)]
    assert choose("none", ticks, now, 60) == []  # 08:50 is 5.5 minutes old: missed, not made up
    assert choose("none", ticks, now, 400) == [utc(2026, 5, 4, 8, 50)]


def test_choose_none_fires_a_tick_that_is_on_time() -> None:
    clock = FakeClock(utc(2026, 5, 4, 8, 50, 20))
    assert choose("none", [utc(2026, 5, 4, 8, 50)], clock(), 60) == [utc(2026, 5, 4, 8, 50)]
    assert choose("none", [utc(2026, 5, 4, 8, 50)], clock.advance(seconds=41), 60) == []
    assert choose("latest", [], clock(), 60) == []
    assert choose("all", [], clock(), 60) == []
    assert CATCH_UP == ("none", "latest", "all")


def test_plan_moves_next_fire_past_now() -> None:
    now = utc(2026, 5, 4, 8, 55, 30)
    for policy, fired in [
        ("all", [utc(2026, 5, 4, 8, m) for m in (10, 20, 30, 40, 50)]),
        ("latest", [utc(2026, 5, 4, 8, 50)]),
        ("none", []),
    ]:
        assert plan("*/10 * * * *", "UTC", policy, utc(2026, 5, 4, 8, 10), now, 60) == (
            fired,
            utc(2026, 5, 4, 9),
        )


def test_plan_after_a_long_downtime_stays_bounded() -> None:
    start, now = utc(2026, 5, 1), utc(2026, 5, 4, 7, 30, 10)  # three and a half days of minutes
    assert plan("* * * * *", "UTC", "latest", start, now, 60) == (
        [utc(2026, 5, 4, 7, 30)],
        utc(2026, 5, 4, 7, 31),
    )
    assert plan("0 0 1 1 *", "UTC", "latest", utc(2020, 1, 1), now, 60) == (
        [utc(2026, 1, 1)],
        utc(2027, 1, 1),
    )
    # 'all' fires the oldest MAX_CATCH_UP and leaves the schedule on the first one it has not fired.
    fired, following = plan("* * * * *", "UTC", "all", start, now, 60)
    assert len(fired) == MAX_CATCH_UP == 1000
    assert fired[0] == start and fired[-1] == start + timedelta(minutes=999)
    assert following == start + timedelta(minutes=1000)


def test_simulated_passes_across_berlin_spring_forward() -> None:
    clock = FakeClock(utc(2026, 3, 27, 12))
    fired = simulate("30 2 * * *", BERLIN, "none", clock, utc(2026, 3, 31, 12), timedelta(seconds=20))
    assert fired == [
        utc(2026, 3, 28, 1, 30),
        utc(2026, 3, 29, 1),
        utc(2026, 3, 30, 0, 30),
        utc(2026, 3, 31, 0, 30),
    ]


def test_simulated_passes_across_berlin_fall_back() -> None:
    clock = FakeClock(utc(2026, 10, 24, 22))
    fired = simulate("0 * * * *", BERLIN, "latest", clock, utc(2026, 10, 25, 3), timedelta(minutes=7))
    # Created at 00:00 CEST (not a tick of its own); polled every 7 minutes until 03:02 UTC.
    assert local(fired, BERLIN) == [
        "10-25 01:00 CEST",
        "10-25 02:00 CEST",
        "10-25 02:00 CET",
        "10-25 03:00 CET",
        "10-25 04:00 CET",
    ]


# -- user errors --------------------------------------------------------------------------------------


def test_invalid_cron_is_one_clear_paragraph() -> None:
    with pytest.raises(UserError) as caught:
        validate("61 * * * *", "UTC")
    text = str(caught.value)
    assert text == (
        "Cron expression '61 * * * *' is invalid: the minute field '61' is not valid (minute: 0-59). "
        "Hint: five fields: minute hour day-of-month month day-of-week, e.g. '0 6 * * *'"
    )
    assert "\n" not in text
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("cron", "fragment"),
    [
        ("0 6 * *", "it has 4 fields, not 5"),
        ("0 6 * * * *", "it has 6 fields, not 5"),
        ("0 25 * * *", "the hour field '25' is not valid"),
        ("0 6 * 13 *", "the month field '13' is not valid"),
        ("0 6 * * FUNDAY", "the day-of-week field 'FUNDAY' is not valid"),
        ("0 6 31 4 *", "the day-of-month field '31' is not valid"),
        ("@often", "it has 1 field, not 5"),
    ],
)
def test_invalid_cron_names_the_field(cron: str, fragment: str) -> None:
    with pytest.raises(UserError, match="Hint: five fields") as caught:
        validate(cron, "UTC")
    assert f"Cron expression '{cron}' is invalid: {fragment}" in str(caught.value)


def test_cron_that_never_fires() -> None:
    # Last weekday of the month, but only in months 7 and 12, only on Sundays (ANDed via */41 ->
    # day-of-week 0 only): the last weekday is never a Sunday.
    with pytest.raises(UserError, match="never fires"):
        validate("47 23 LW 7/5 */41", "UTC")


def test_unknown_time_zone_suggests_the_nearest() -> None:
    with pytest.raises(UserError) as caught:
        validate("0 6 * * *", "Europe/Berln")
    assert str(caught.value) == (
        "Unknown time zone 'Europe/Berln'. Hint: did you mean 'Europe/Berlin'? "
        "Time zones are IANA names such as 'Europe/Berlin', 'America/New_York' or 'UTC'"
    )
    with pytest.raises(UserError, match="did you mean 'America/New_York'"):
        next_fires("0 6 * * *", "america/new_york", utc(2026, 1, 1))
    with pytest.raises(UserError, match=r"^Unknown time zone 'Mars/Olympus'\. Hint: Time zones are IANA"):
        validate("0 6 * * *", "Mars/Olympus")
    with pytest.raises(UserError, match=r"Unknown time zone '\.\./etc/passwd'"):
        validate("0 6 * * *", "../etc/passwd")


def test_unknown_policy() -> None:
    with pytest.raises(UserError, match="did you mean 'latest'"):
        choose("lattest", [], utc(2026, 1, 1), 60)


def test_valid_expressions_pass() -> None:
    for cron in ("0 6 * * *", "*/15 8-18 * * MON-FRI", "0 0 L * *", "@daily", "@hourly", "0 0 1 JAN *"):
        validate(cron, BERLIN)
