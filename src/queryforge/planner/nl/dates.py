"""Time expressions: years, months, quarters, halves, explicit dates, ranges, 'last N days', hours.

Each match covers a span of the request's words and yields a period (a half-open date range,
open at either end), a calendar part (month 3 of any year, hours 9 to 17) or a rolling window
relative to today. Explicit dates go through dateutil, so '1 March 2026', 'March 1st, 2026'
and '2026-03-01' read the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from dateutil import parser as dateparser
from dateutil.relativedelta import relativedelta

from .lexicon import MONTHS, NUMBER_WORDS

MONTH = "(?:" + "|".join(sorted(MONTHS, key=len, reverse=True)) + ")"
YEAR = r"(?:19|20)\d\d"
DAY = r"\d{1,2}(?: ?(?:st|nd|rd|th))?"
ORD = {
    "final": 4,
    "first": 1,
    "1st": 1,
    "second": 2,
    "2nd": 2,
    "third": 3,
    "3rd": 3,
    "fourth": 4,
    "4th": 4,
    "last": 4,
}
QUARTER = r"(?:q ?([1-4])|(first|second|third|fourth|last|final|1st|2nd|3rd|4th) quarter|quarter ([1-4]))"
QUARTER_NC = r"(?:q ?[1-4]|(?:first|second|third|fourth|last|final|1st|2nd|3rd|4th) quarter|quarter [1-4])"
# One date-like phrase: a day, a month (with or without year), a quarter, a half, a year.
POINT = (
    rf"(?:\d{{4}}-\d{{1,2}}-\d{{1,2}}(?:[ t]\d{{1,2}}:\d\d(?::\d\d)?)?"
    rf"|\d{{1,2}}/\d{{1,2}}/\d{{4}}"
    rf"|{MONTH} {DAY}(?: ,)? {YEAR}|{DAY} (?:of )?{MONTH}(?: ,)? {YEAR}"
    rf"|{MONTH} (?:of )?{YEAR}|{MONTH} '?\d\d\b|{QUARTER_NC}(?: (?:of|in) )?(?: ?{YEAR})?"
    rf"|(?:first|second|1st|2nd|last) half(?: of)?(?: {YEAR})?|h[12] {YEAR}"
    rf"|{MONTH}|{YEAR})"
)
SMALL_NUMBERS = {w: n for w, n in NUMBER_WORDS.items() if 1 <= n <= 12}  # "the first six months"
# DuckDB's dayofweek: Sunday is 0
WEEKDAYS = {"sunday": 0, "monday": 1, "tuesday": 2, "wednesday": 3, "thursday": 4, "friday": 5, "saturday": 6}
WEEKDAY = "(?:" + "|".join(WEEKDAYS) + ")"
CLOCK = r"\d{1,2}(?::\d\d)? ?(?:am|pm)|\d{1,2}:\d\d|noon|midday|midnight"


@dataclass
class Period:
    lo: Any  # date, datetime, a SQL expression (str) or None
    hi: Any  # exclusive, unless hi_inclusive (a range that ends at a named time of day)
    text: str
    hi_inclusive: bool = False


@dataclass
class Part:
    part: str  # month | quarter | hour | dow
    op: str  # = in between < >= ..., or "examples": values shown as examples, no condition
    value: Any
    text: str


@dataclass
class Rolling:
    n: int
    unit: str
    text: str


DateSpec = Period | Part | Rolling


@dataclass
class DateMatch:
    start: int  # character offsets in the normalised text
    end: int
    spec: DateSpec


def _year(text: str) -> int | None:
    m = re.search(rf"\b({YEAR})\b", text)
    if m:
        return int(m.group(1))
    m = re.search(r"'(\d\d)\b", text) or re.search(rf"{MONTH} (\d\d)\b", text)
    return 2000 + int(m.group(1)) if m else None


def _month(text: str) -> int | None:
    m = re.search(rf"\b({MONTH})\b", text)
    return MONTHS[m.group(1)] if m else None


def point(text: str, year_hint: int | None = None) -> Period | Part | None:
    """A date-like phrase as a period [lo, hi), or a calendar part when it names no year."""
    t = text.strip()
    if re.fullmatch(r"\d{4}-\d{1,2}-\d{1,2}(?:[ t].*)?|\d{1,2}/\d{1,2}/\d{4}", t):
        try:
            stamp = dateparser.parse(t)
        except (ValueError, OverflowError):
            return None
        if re.search(r"\d:\d\d", t):  # a moment: a range starts or ends exactly there
            return Period(stamp, stamp, t, hi_inclusive=True)
        d = stamp.date()
        return Period(d, d + timedelta(days=1), t)
    year = _year(t) or year_hint
    q = re.search(QUARTER, t)
    if q:
        n = int(q.group(1) or q.group(3) or ORD[q.group(2)])
        if year is None:
            return Part("quarter", "=", n, t)
        lo = date(year, 3 * (n - 1) + 1, 1)
        return Period(lo, lo + relativedelta(months=3), t)
    h = re.search(r"(first|second|1st|2nd|last) half|\bh([12])\b", t)
    if h:
        if year is None:
            return None
        lo = date(year, 1 if h.group(1) in ("first", "1st") or h.group(2) == "1" else 7, 1)
        return Period(lo, lo + relativedelta(months=6), t)
    month = _month(t)
    day = re.search(r"(?:^|\s)(\d{1,2})(?: ?(?:st|nd|rd|th))?(?=\s|$|,)", re.sub(YEAR, "", t))
    if month and day and year:
        try:
            d = date(year, month, int(day.group(1)))
        except ValueError:
            return None
        return Period(d, d + timedelta(days=1), t)
    if month:
        if year is None:
            return Part("month", "=", month, t)
        lo = date(year, month, 1)
        return Period(lo, lo + relativedelta(months=1), t)
    if year:
        return Period(date(year, 1, 1), date(year + 1, 1, 1), t)
    return None


def _hour(text: str) -> int:
    if text.strip() in ("noon", "midday"):
        return 12
    if text.strip() == "midnight":
        return 0
    m = re.match(r"(\d{1,2})(?::(\d\d))? ?(am|pm)?", text.strip())
    assert m is not None
    h = int(m.group(1)) % 24
    if m.group(3) == "pm" and h < 12:
        h += 12
    if m.group(3) == "am" and h == 12:
        h = 0
    return h


def _clock(text: str) -> timedelta:
    """A time of day as an offset from midnight: '18:00', '6pm', 'noon'."""
    m = re.match(r"\d{1,2}(?::(\d\d))?", text.strip())
    minutes = int(m.group(1)) if m and m.group(1) else 0
    return timedelta(hours=_hour(text), minutes=minutes)


RELATIVE_UNITS = {"day": "day", "week": "week", "month": "month", "year": "year", "quarter": "quarter"}


def find_dates(text: str) -> list[DateMatch]:
    """Every time expression in a normalised request, longest and leftmost first, not overlapping."""
    found: list[DateMatch] = []
    taken: list[tuple[int, int]] = []

    def add(m: re.Match[str], spec: DateSpec | None) -> None:
        if spec is None:
            return
        if any(not (m.end() <= a or m.start() >= b) for a, b in taken):
            return
        taken.append((m.start(), m.end()))
        found.append(DateMatch(m.start(), m.end(), spec))

    # a time window on one day: "between 12:00 and 18:00 on 2 Sep 2026", "2026-09-02 12:00 to 18:00"
    day = rf"(?:\d{{4}}-\d{{1,2}}-\d{{1,2}}|{MONTH} {DAY}(?: ,)? {YEAR}|{DAY} (?:of )?{MONTH}(?: ,)? {YEAR})"
    for m in re.finditer(
        rf"\b(?:(?:on|of) (?:the )?(?P<d1>{day}) ,? )?(?:between|from) (?P<a>{CLOCK}) (?:and|to|until|till|-|"
        rf"up to) "
        rf"(?P<b>{CLOCK})(?: (?:on|of) (?:the )?(?P<d2>{day}))?|\b(?P<d3>\d{{4}}-\d{{1,2}}-\d{{1,2}}) "
        rf"(?P<a2>\d{{1,2}}:\d\d) "
        rf"(?:to|until|till|-|and) (?P<b2>\d{{1,2}}:\d\d)\b",
        text,
    ):
        when = point(m.group("d1") or m.group("d2") or m.group("d3") or "")
        if not isinstance(when, Period) or not isinstance(when.lo, date):
            continue
        base = datetime(when.lo.year, when.lo.month, when.lo.day)
        start_at, end_at = _clock(m.group("a") or m.group("a2")), _clock(m.group("b") or m.group("b2"))
        add(m, Period(base + start_at, base + end_at, m.group(0), hi_inclusive=True))
    # hours of the day
    for m in re.finditer(rf"\bbetween ({CLOCK}) and ({CLOCK})", text):
        add(m, Part("hour", "between", (_hour(m.group(1)), _hour(m.group(2))), m.group(0)))
    for m in re.finditer(
        rf"\b(after|before|from|since|until|earlier than|later than|prior to|no later than) ({CLOCK})", text
    ):
        later = m.group(1) in ("after", "from", "since", "later than")
        op = ">=" if later else "<"
        add(m, Part("hour", op, _hour(m.group(2)), m.group(0)))
    for m in re.finditer(r"\b(?:in the )?(morning|afternoon|evening|night)s?\b", text):
        span = {"morning": (6, 12), "afternoon": (12, 18), "evening": (18, 22), "night": (22, 6)}
        add(m, Part("hour", "between", span[m.group(1)], m.group(0)))
    for m in re.finditer(r"\b(?:on |during |over )?(?:the )?weekends?\b", text):
        add(m, Part("dow", "in", (0, 6), m.group(0)))
    for m in re.finditer(
        rf"\b(?:on |during )?(?:a |the )?({WEEKDAY})s?(?:(?: ,| or| and| ,? or| ,? and)(?: on)?(?: a| the)? "
        rf"(?:{WEEKDAY})s?)*\b",
        text,
    ):
        days = tuple(sorted({WEEKDAYS[d] for d in re.findall(WEEKDAY, m.group(0))}))
        if re.match(r" ?,? ?(?:\. ?\. ?\.|…|etc\b)", text[m.end() :]):
            # "(Monday, Tuesday, ...)": examples of the values, not the days wanted
            end = re.match(r" ?,? ?(?:\. ?\. ?\.|…|etc)\.?", text[m.end() :])
            assert end is not None
            ex_lo, ex_hi = m.start(), m.end() + end.end()
            if not any(not (ex_hi <= a or ex_lo >= b) for a, b in taken):
                found.append(DateMatch(ex_lo, ex_hi, Part("dow", "examples", days, m.group(0))))
                taken.append((ex_lo, ex_hi))
            continue
        add(m, Part("dow", "in", days, m.group(0)))
    for m in re.finditer(r"\b(?:on )?weekdays\b", text):
        add(m, Part("dow", "in", (1, 2, 3, 4, 5), m.group(0)))
    # ranges between two points
    for m in re.finditer(
        rf"\b(?:between|from) (?:the )?(?:(?:start|beginning) of )?"
        rf"({POINT}|{DAY} (?:of )?{MONTH}|{MONTH} {DAY}) "
        rf"(?:and|to|until|till|through|thru|-) (?:the )?(?:end of )?({POINT})(?: inclusive)?"
        rf"|\b({MONTH}) (?:to|until|till|through|thru|-) ({MONTH} {YEAR})\b",
        text,
    ):
        first, last = m.group(1) or m.group(3), m.group(2) or m.group(4)
        b = point(last)
        year = _year(last)
        a = point(first, year)
        if isinstance(a, Period) and isinstance(b, Period):
            add(m, Period(a.lo, b.hi, m.group(0), hi_inclusive=b.hi_inclusive))
        elif isinstance(a, Part) and isinstance(b, Part) and a.part == b.part == "month":
            add(m, Part("month", "between", (a.value, b.value), m.group(0)))
    for m in re.finditer(
        rf"\b(?:in |from )?(?:the )?({POINT}) or (earlier|before|sooner|prior|later|after|afterwards)\b", text
    ):
        p = point(m.group(1))
        if isinstance(p, Period):
            later = m.group(2) in ("later", "after", "afterwards")
            add(m, Period(p.lo, None, m.group(0)) if later else Period(None, p.hi, m.group(0)))
    for m in re.finditer(
        rf"\b(?:from |between )?(?:the )?(\d{{1,2}})(?: ?(?:st|nd|rd|th))? (?:to|-|through|until|and) (?:the "
        rf")?"
        rf"(\d{{1,2}})(?: ?(?:st|nd|rd|th))? (?:of )?({MONTH}) ({YEAR})(?: \( ?both days included ?\)| "
        rf"inclusive)?",
        text,
    ):
        month, year = MONTHS[m.group(3)], int(m.group(4))
        try:
            lo, last = date(year, month, int(m.group(1))), date(year, month, int(m.group(2)))
        except ValueError:
            continue
        add(m, Period(lo, last + timedelta(days=1), m.group(0)))
    # "the first six months of 2025", "the last 3 months of 2024"
    for m in re.finditer(
        rf"\b(?:in |during |over )?(?:the )?(first|last|final) (\d+|{'|'.join(SMALL_NUMBERS)}) months "
        rf"(?:of|in) ({YEAR})\b",
        text,
    ):
        n = int(m.group(2)) if m.group(2).isdigit() else SMALL_NUMBERS[m.group(2)]
        year = int(m.group(3))
        if not 1 <= n <= 12:
            continue
        lo = date(year, 1, 1) if m.group(1) == "first" else date(year, 13 - n, 1)
        add(m, Period(lo, lo + relativedelta(months=n), m.group(0)))
    # open ranges
    for m in re.finditer(
        rf"\b(since|after|starting(?: from| on| in)?|as of|on or after|beginning(?: in)?|"
        rf"before|until|till|prior to|up to|up until|through|no later than|not after|by the end of) "
        rf"(?:the )?(?:end of |start of |beginning of )?({POINT})\b",
        text,
    ):
        p = point(m.group(2))
        if not isinstance(p, Period):
            continue
        word = m.group(1)
        end_of = "end of" in m.group(0)
        if word.startswith(("since", "starting", "from", "as of", "on or after", "beginning")):
            add(m, Period(p.hi if end_of else p.lo, None, m.group(0)))
        elif word == "after":
            add(m, Period(p.hi, None, m.group(0)))
        elif word in ("before", "prior to"):
            add(m, Period(None, p.hi if end_of else p.lo, m.group(0)))
        else:  # until, through, up to, no later than: inclusive of the named period
            add(m, Period(None, p.hi, m.group(0)))
    # operators, as analysts write them in terse requests: "order_date >= 2026-01-01", "ts = 2026-03-14"
    for m in re.finditer(rf"(?<![<>=!])(>=|<=|==|=|>|<|≥|≤) ({POINT})\b", text):
        p = point(m.group(2))
        if not isinstance(p, Period):
            continue
        op = {"≥": ">=", "≤": "<=", "==": "="}.get(m.group(1), m.group(1))
        if op == ">" and p.lo == p.hi:
            continue  # strictly after a moment: a range here starts inclusive, so no reading
        lo, hi = {">=": (p.lo, None), ">": (p.hi, None), "<": (None, p.lo), "<=": (None, p.hi)}.get(
            op, (p.lo, p.hi)
        )
        add(m, Period(lo, hi, m.group(0), hi_inclusive=p.hi_inclusive and op in ("<=", "=")))
    for m in re.finditer(rf"\bfrom (?:the )?({POINT}) (?:on|onwards?|forward|and later|or later)\b", text):
        p = point(m.group(1))
        if isinstance(p, Period):
            add(m, Period(p.lo, None, m.group(0)))
    # rolling windows and calendar periods relative to today
    for m in re.finditer(
        r"\b(?:in |within |over |during |for |from )?(?:the )?(?:last|past|previous|recent|trailing) "
        r"(\d+|one|two|three|four|five|six|seven|ten|twelve|thirty|ninety)? ?"
        r"(day|week|month|year|quarter)s?\b(?! (?:of|in) (?:19|20)\d\d)",
        text,
    ):
        raw = m.group(1)
        unit = RELATIVE_UNITS[m.group(2)]
        if raw is None:  # "last month": the previous calendar period
            add(m, Period(f"{_trunc(unit)} - INTERVAL 1 {unit.upper()}", _trunc(unit), m.group(0)))
        else:
            n = int(raw) if raw.isdigit() else NUMBER_WORDS[raw]
            add(m, Rolling(n, unit, m.group(0)))
    for m in re.finditer(r"\b(?:in |during |for )?(?:the )?(this|current) (year|month|quarter|week)\b", text):
        unit = m.group(2)
        add(m, Period(_trunc(unit), f"{_trunc(unit)} + INTERVAL 1 {unit.upper()}", m.group(0)))
    for m in re.finditer(r"\b(?:so far this year|year to date|ytd)\b", text):
        add(m, Period(_trunc("year"), None, m.group(0)))
    for m in re.finditer(r"\b(yesterday|today)\b", text):
        lo_sql = "current_date - INTERVAL 1 DAY" if m.group(1) == "yesterday" else "current_date"
        hi_sql = "current_date" if m.group(1) == "yesterday" else "current_date + INTERVAL 1 DAY"
        add(m, Period(lo_sql, hi_sql, m.group(0)))
    # single periods
    for m in re.finditer(
        rf"\b(?:(?:placed|made|created|happened|dated|recorded|logged) )?"
        rf"(?:in|during|for|of|on|from|within|throughout|dated)? ?(?:the )?"
        rf"(?:year |month of (?!(?:19|20)\d\d\b))?({POINT})\b",
        text,
    ):
        p = point(m.group(1))
        said = next((w for w in m.group(0).split() if w not in ("the", "year")), "")
        bare = said == m.group(1).split()[0] if m.group(1).split() else True
        # A bare "may" or "2000" is a word or a number; a period needs a preposition or a verb
        # ("in May", "placed 2026"), unless it is a full date or a month with its year.
        if bare and (isinstance(p, Part) or re.fullmatch(YEAR, m.group(1))):
            continue
        add(m, p)
    found.sort(key=lambda d: d.start)
    return found


def _trunc(unit: str) -> str:
    return f"date_trunc('{unit}', current_date)"
