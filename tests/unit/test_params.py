"""`${...}` parameters: date macros with a fixed `now`, env vars, given params, errors with suggestions."""

from __future__ import annotations

import calendar
from datetime import date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from queryforge.errors import SpecError
from queryforge.spec import models as m
from queryforge.spec.loader import parse_text
from queryforge.spec.params import resolve_params, substitute

NOW = datetime(2024, 3, 15, 9, 30, 45, 123456)  # a Friday, mid-month, in a leap year


def pipeline(params: str, where: str = "day = '${day}'") -> str:
    return (
        f"name: p\nparams:\n{params}steps:\n"
        "  - id: src\n    extract: {path: data/x.csv}\n"
        f'  - id: f\n    filter: {{input: src, where: "{where}"}}\n'
    )


def where_of(text: str, params: dict[str, object] | None = None, now: datetime = NOW) -> str:
    bound = parse_text(text).bind(params, now=now)
    step = bound.pipeline.step("f")
    assert isinstance(step, m.FilterStep)
    return step.filter.where


def add_months(d: date, months: int) -> date:
    """Calendar month arithmetic, clamped to the month's last day (an independent reference)."""
    index = d.year * 12 + d.month - 1 + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(d.day, last))


def values(now: datetime = NOW, **declared: object) -> dict[str, object]:
    return resolve_params(declared, {}, now=now)


# ---------------------------------------------------------------- date macros


def test_today_and_yesterday_and_now_use_the_given_now() -> None:
    v = values()
    assert substitute("${today}", v) == "2024-03-15"
    assert substitute("${yesterday}", v) == "2024-03-14"
    assert substitute("${now}", v) == "2024-03-15 09:30:45"  # no microseconds


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("${today - 1d}", "2024-03-14"),
        ("${today + 1d}", "2024-03-16"),
        ("${today-1d}", "2024-03-14"),
        ("${ today - 15d }", "2024-02-29"),
        ("${today - 1w}", "2024-03-08"),
        ("${today + 2w}", "2024-03-29"),
        ("${today + 1m}", "2024-04-15"),
        ("${today - 1y}", "2023-03-15"),
        ("${now - 10h}", "2024-03-14 23:30:45"),
    ],
)
def test_date_arithmetic(expr: str, expected: str) -> None:
    assert substitute(expr, values()) == expected


@pytest.mark.parametrize(
    ("today", "expr", "expected"),
    [
        (date(2023, 1, 31), "${today + 1m}", "2023-02-28"),
        (date(2024, 1, 31), "${today + 1m}", "2024-02-29"),
        (date(2024, 3, 31), "${today - 1m}", "2024-02-29"),
        (date(2024, 5, 31), "${today + 1m}", "2024-06-30"),
        (date(2024, 12, 31), "${today + 1m}", "2025-01-31"),
        (date(2024, 1, 15), "${today - 1m}", "2023-12-15"),
        (date(2024, 2, 29), "${today + 1y}", "2025-02-28"),
        (date(2024, 2, 29), "${today - 4y}", "2020-02-29"),
        (date(2024, 8, 31), "${today + 6m}", "2025-02-28"),
        (date(2023, 12, 31), "${today - 10w}", "2023-10-22"),
    ],
)
def test_month_ends_clamp_to_the_last_day(today: date, expr: str, expected: str) -> None:
    now = datetime.combine(today, datetime.min.time()).replace(hour=12)
    assert substitute(expr, values(now)) == expected


@settings(max_examples=40, deadline=None)
@given(
    day=st.dates(min_value=date(1990, 1, 1), max_value=date(2090, 12, 31)),
    amount=st.integers(min_value=0, max_value=40),
    unit=st.sampled_from("dwmy"),
    sign=st.sampled_from("+-"),
)
def test_date_arithmetic_matches_calendar(day: date, amount: int, unit: str, sign: str) -> None:
    n = amount if sign == "+" else -amount
    if unit == "d":
        expected = day + timedelta(days=n)
    elif unit == "w":
        expected = day + timedelta(weeks=n)
    else:
        expected = add_months(day, n * (12 if unit == "y" else 1))
    now = datetime.combine(day, datetime.min.time())
    assert substitute(f"${{today {sign} {amount}{unit}}}", values(now)) == expected.isoformat()


def test_a_date_param_can_be_shifted() -> None:
    v = values(start="2024-01-31")
    assert substitute("${start + 1m}", v) == "2024-02-29"
    assert substitute("${start - 1w}", v) == "2024-01-24"
    v = values(x="2024-03-01")
    assert substitute("${x - 1w}", v) == "2024-02-23"


def test_shifting_a_non_date_is_an_error() -> None:
    with pytest.raises(SpecError) as info:
        substitute("${country - 1d}", values(country="NO"))
    assert "not a date" in info.value.message


def test_placeholders_inside_longer_text_and_nested_structures() -> None:
    v = values(country="SE")
    doc = {"a": ["from ${today - 1d} to ${today}", {"b": "${country}"}], "n": 3, "t": True}
    assert substitute(doc, v) == {"a": ["from 2024-03-14 to 2024-03-15", {"b": "SE"}], "n": 3, "t": True}


def test_an_unreadable_placeholder_is_an_error_with_a_hint() -> None:
    with pytest.raises(SpecError) as info:
        substitute("${today * 2}", values())
    assert "today * 2" in info.value.message
    assert info.value.hint is not None and "${today - 1d}" in info.value.hint


# ---------------------------------------------------------------- environment variables


def test_env_var_that_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QF_TEST_REGION", "eu-north-1")
    assert substitute("region=${env:QF_TEST_REGION}", {}) == "region=eu-north-1"
    text = pipeline('  region: "${env:QF_TEST_REGION}"\n', where="region = '${region}'")
    assert where_of(text) == "region = 'eu-north-1'"


def test_env_var_that_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QF_TEST_MISSING", raising=False)
    with pytest.raises(SpecError) as info:
        substitute("${env:QF_TEST_MISSING}", {})
    assert "QF_TEST_MISSING" in info.value.message and "not set" in info.value.message
    assert info.value.hint is not None and "export QF_TEST_MISSING" in info.value.hint
    text = pipeline("  day: '${today}'\n", where="token = '${env:QF_TEST_MISSING}'")
    with pytest.raises(SpecError):
        parse_text(text).bind(now=NOW)


# ---------------------------------------------------------------- declared and given params


def test_defaults_may_use_macros() -> None:
    text = pipeline(
        '  day: "${today - 1d}"\n  week_ago: "${today - 1w}"\n', "d between '${week_ago}' and '${day}'"
    )
    bound = parse_text(text).bind(now=NOW)
    assert bound.params == {"day": "2024-03-14", "week_ago": "2024-03-08"}
    assert where_of(text) == "d between '2024-03-08' and '2024-03-14'"


def test_defaults_may_refer_to_earlier_params() -> None:
    text = pipeline('  day: "${today - 1d}"\n  before: "${day - 1m}"\n', "d = '${before}'")
    assert where_of(text) == "d = '2024-02-14'"
    assert where_of(text, {"day": "2024-03-31"}) == "d = '2024-02-29'"


def test_given_params_override_defaults() -> None:
    text = pipeline('  day: "${today - 1d}"\n  n: 5\n', "day = '${day}' and n > ${n}")
    assert where_of(text) == "day = '2024-03-14' and n > 5"
    assert where_of(text, {"day": "2020-02-29"}) == "day = '2020-02-29' and n > 5"
    assert where_of(text, {"n": 7}) == "day = '2024-03-14' and n > 7"
    bound = parse_text(text).bind({"day": "2020-02-29", "n": "9"}, now=NOW)
    assert bound.params == {"day": "2020-02-29", "n": "9"}


def test_given_params_may_use_macros() -> None:
    text = pipeline('  day: "2000-01-01"\n')
    assert where_of(text, {"day": "${today - 2d}"}) == "day = '2024-03-13'"


def test_param_declared_as_a_mapping_with_default() -> None:
    text = pipeline("  day: {default: '${today}', type: date, description: the day}\n")
    bound = parse_text(text).bind(now=NOW)
    assert bound.params == {"day": date(2024, 3, 15)}  # typed: a date param's value is a date
    assert bound.pipeline.params["day"] == m.Param(
        default="${today}", type="date", description="the day"
    )  # the declared form is kept, the bound value is substituted in the steps
    assert where_of(text) == "day = '2024-03-15'"


def test_builtins_are_not_reported_as_params() -> None:
    bound = parse_text(pipeline('  day: "${today}"\n')).bind(now=NOW)
    assert set(bound.params) == {"day"}


def test_unknown_given_param_is_refused_with_a_suggestion() -> None:
    text = pipeline('  day: "${today}"\n')
    with pytest.raises(SpecError) as info:
        parse_text(text).bind({"dya": "2024-01-01"}, now=NOW)
    assert "Unknown parameter 'dya'" in info.value.message
    assert info.value.hint is not None and "'day'" in info.value.hint


def test_unknown_placeholder_name_is_refused_with_a_suggestion() -> None:
    text = pipeline('  country: "NO"\n', where="country = '${countyr}'")
    with pytest.raises(SpecError) as info:
        parse_text(text).bind(now=NOW)
    assert "countyr" in info.value.message
    assert info.value.hint is not None and "'country'" in info.value.hint


def test_a_param_without_value_must_be_given() -> None:
    text = pipeline("  day: null\n")
    with pytest.raises(SpecError) as info:
        parse_text(text).bind(now=NOW)
    assert "'day'" in info.value.message
    assert info.value.hint is not None and "--param day=" in info.value.hint
    assert where_of(text, {"day": "2024-01-02"}) == "day = '2024-01-02'"


def test_params_must_be_a_mapping() -> None:
    text = "name: p\nparams: [a, b]\nsteps:\n  - id: a\n    extract: {path: x.csv}\n"
    with pytest.raises(SpecError) as info:
        parse_text(text, origin="p.yaml").bind(now=NOW)
    assert info.value.where == "p.yaml:2"


@pytest.mark.parametrize(("declared", "given"), [("date", "2024-13-45"), ("int", "many")])
def test_a_given_value_must_match_the_declared_type(declared: str, given: str) -> None:
    text = pipeline(f"  day: {{default: '2024-01-01', type: {declared}}}\n")
    with pytest.raises(SpecError) as info:
        parse_text(text).bind({"day": given}, now=NOW)
    assert "day" in info.value.message and given in info.value.message
