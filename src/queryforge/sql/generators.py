"""Row generators (`range`, `generate_series`, `unnest` of a list) and how many rows they make.

Counted from the syntax tree alone, for the two places that must know before anything runs: the
policy, which admits a generator in `FROM` only when its rows can be counted and stay under
`MAX_GENERATED_ROWS`, and the cost gate's syntax-tree bound (`engine/rowbound.py`), which counts
them where DuckDB's plan does not. Bounds may be numbers, dates or timestamps (literals, casts,
`current_date`/`now()`, `+`/`-` of intervals) with a number or interval step. This module
imports nothing of ours.
"""

from __future__ import annotations

import calendar
import math
import re
from datetime import UTC, date, datetime, time, timedelta

from sqlglot import exp

# The most rows one generator in FROM may make: the default cost cap of `ask`. A date spine by the
# second over three years is 95 million; `range(1e12)` is a runaway query, not a spine.
MAX_GENERATED_ROWS = 100_000_000

_TEMPORAL = {
    exp.DataType.Type.DATE,
    exp.DataType.Type.DATETIME,
    exp.DataType.Type.TIMESTAMP,
    exp.DataType.Type.TIMESTAMPNTZ,
    exp.DataType.Type.TIMESTAMPTZ,
    exp.DataType.Type.TIMESTAMPLTZ,
}
_MICROS = {
    "microsecond": 1,
    "millisecond": 1_000,
    "second": 1_000_000,
    "minute": 60_000_000,
    "hour": 3_600_000_000,
    "day": 86_400_000_000,
    "week": 7 * 86_400_000_000,
}
_MONTHS = {"month": 1, "quarter": 3, "year": 12, "decade": 120, "century": 1200, "millennium": 12000}
_NOW = frozenset({"now", "get_current_timestamp", "current_localtimestamp", "transaction_timestamp"})
_PART = re.compile(r"\s*([+-]?\d+(?:\.\d+)?)\s*([a-z]+?)s?\s*(?=[+-]?\d|$)")


class Interval:
    """An interval as (months, microseconds): months have no fixed length, the rest do."""

    def __init__(self, months: float, micros: float) -> None:
        self.months, self.micros = months, micros

    def scaled(self, factor: float) -> Interval:
        return Interval(self.months * factor, self.micros * factor)


Value = float | datetime | Interval


def _unit(name: str) -> tuple[str, float] | None:
    word = name.lower().rstrip("s") if name.lower() not in ("ms", "us") else name.lower()
    word = {"ms": "millisecond", "us": "microsecond", "min": "minute", "sec": "second"}.get(word, word)
    if word in _MICROS:
        return "micros", _MICROS[word]
    if word in _MONTHS:
        return "months", _MONTHS[word]
    return None


def _interval(node: exp.Interval) -> Interval | None:
    text = node.this.name if isinstance(node.this, exp.Literal) else None
    unit = node.args.get("unit")
    if text is None:
        return None
    pairs: list[tuple[str, str]]
    if unit is not None:
        pairs = [(text, unit.name)]
    else:  # INTERVAL '1 day 2 hours'
        pairs = _PART.findall(text.lower())
        if not pairs or _PART.sub("", text.lower()).strip():
            return None
    months = micros = 0.0
    for amount, word in pairs:
        found = _unit(word)
        try:
            value = float(amount)
        except ValueError:
            return None
        if found is None:
            return None
        if found[0] == "months":
            months += value * found[1]
        else:
            micros += value * found[1]
    return Interval(months, micros)


def _moment(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def value(node: exp.Expr | None) -> Value | None:
    """The constant a generator bound or step stands for, or None when it is not one."""
    if node is None:
        return None
    if isinstance(node, exp.Literal):
        if node.is_string:
            return None
        try:
            return float(node.this)
        except ValueError:
            return None
    if isinstance(node, exp.Paren):
        return value(node.this)
    if isinstance(node, exp.Neg):
        inner = value(node.this)
        if isinstance(inner, float):
            return -inner
        return inner.scaled(-1) if isinstance(inner, Interval) else None
    if isinstance(node, exp.Cast | exp.TryCast):
        to = node.args.get("to")
        if isinstance(node.this, exp.Literal) and node.this.is_string:
            if isinstance(to, exp.DataType) and to.this in _TEMPORAL:
                return _moment(node.this.name)
            try:
                return float(node.this.name)
            except ValueError:
                return None
        return value(node.this)
    if isinstance(node, exp.Interval):
        return _interval(node)
    if isinstance(node, exp.CurrentDate):
        return datetime.combine(date.today(), time(), tzinfo=UTC)
    if isinstance(node, exp.CurrentTimestamp | exp.CurrentDatetime) or (
        isinstance(node, exp.Anonymous) and node.name.lower() in _NOW and not node.expressions
    ):
        return datetime.now(UTC)
    if isinstance(node, exp.DateTrunc | exp.TimestampTrunc):  # within one unit of its input
        return value(node.this)
    if isinstance(node, exp.Add | exp.Sub):
        left, right = value(node.this), value(node.expression)
        sign = 1 if isinstance(node, exp.Add) else -1
        if isinstance(left, float) and isinstance(right, float):
            return left + sign * right
        if isinstance(left, datetime) and isinstance(right, Interval):
            return _shift(left, right.scaled(sign))
        if isinstance(left, Interval) and isinstance(right, datetime) and sign == 1:
            return _shift(right, left)
        if isinstance(left, datetime) and isinstance(right, float):  # date + days
            return _shift(left, Interval(0, sign * right * _MICROS["day"]))
        return None
    if isinstance(node, exp.Mul | exp.Div):
        left, right = value(node.this), value(node.expression)
        if isinstance(left, float) and isinstance(right, float):
            if isinstance(node, exp.Mul):
                return left * right
            return left / right if right else None
        if isinstance(node, exp.Mul) and isinstance(left, Interval) and isinstance(right, float):
            return left.scaled(right)
        if isinstance(node, exp.Mul) and isinstance(left, float) and isinstance(right, Interval):
            return right.scaled(left)
        return None
    return None


def _shift(moment: datetime, by: Interval) -> datetime | None:
    months = moment.year * 12 + moment.month - 1 + round(by.months)
    year, month = divmod(months, 12)
    if not 1 <= year <= 9999:
        return None
    try:
        day = min(moment.day, calendar.monthrange(year, month + 1)[1])
        return moment.replace(year=year, month=month + 1, day=day) + timedelta(microseconds=by.micros)
    except (OverflowError, ValueError):
        return None


def _count(start: Value, end: Value, step: Value, exclusive: bool) -> int | None:
    """Values from start to end (inclusive unless `exclusive`) by step; None when not countable."""
    if isinstance(start, float) and isinstance(end, float) and isinstance(step, float):
        if not step:
            return None
        span = (end - start) / step
    elif isinstance(start, datetime) and isinstance(end, datetime) and isinstance(step, Interval):
        if step.months and not step.micros:
            months = (end.year - start.year) * 12 + (end.month - start.month)
            span = months / step.months
        elif step.micros:
            seconds = (end - start).total_seconds() + step.months * 30 * 86_400
            span = seconds * 1_000_000 / (step.micros + step.months * 30 * _MICROS["day"])
        else:
            return None
    else:
        return None
    if not math.isfinite(span):
        return None
    if span < 0:
        return 0
    return math.ceil(span) if exclusive else math.floor(span) + 1


def generated_rows(node: exp.Expr | None) -> int | None:
    """Rows a `range`/`generate_series` call (list or table), `repeat(x, n)` table or `unnest` of a
    list literal or of a generator makes, when its arguments are constants; else None."""
    if isinstance(node, exp.GenerateSeries):
        start = value(node.args.get("start")) if node.args.get("start") is not None else 0.0
        end = value(node.args.get("end"))
        step = node.args.get("step")
        if step is not None:
            stride = value(step)
        elif isinstance(start, datetime):
            return None  # a date series needs an interval step (DuckDB refuses it too)
        else:
            stride = 1.0
        if start is None or end is None or stride is None:
            return None
        return _count(start, end, stride, bool(node.args.get("is_end_exclusive")))
    if isinstance(node, exp.Repeat):
        times = value(node.args.get("times"))
        return None if not isinstance(times, float) else max(0, int(times))
    if isinstance(node, exp.Array):
        return len(node.expressions)
    if isinstance(node, exp.Unnest | exp.Explode):
        inner = node.expressions if isinstance(node, exp.Unnest) else [node.this]
        counts = [generated_rows(e) for e in inner]
        if not counts or any(c is None for c in counts):
            return None
        return max(c for c in counts if c is not None)
    return None
