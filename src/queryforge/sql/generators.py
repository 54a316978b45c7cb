"""Row generators (`range`, `generate_series`, `unnest` of a list) and how many rows they make.

Counted from the syntax tree alone, for the two places that must know before anything runs: the
policy, which admits a generator in `FROM` only when its rows can be counted and stay under
`MAX_GENERATED_ROWS`, and the cost gate's syntax-tree bound (`engine/rowbound.py`), which counts
them where DuckDB's plan does not. Bounds may be numbers, dates or timestamps (literals, casts,
`current_date`/`now()`, `+`/`-` of intervals) with a number or interval step. This module
imports nothing of ours.

A generator whose bounds read the row before it (`FROM t, range(t.n)`, a *lateral* generator) makes
a number of rows per input row that is known only when it runs, and DuckDB's plan estimates it at
about one row per input row whatever the bounds. Where its rows become rows (a FROM item, an
`unnest`), it counts `lateral_rows` per input row when its end is its start plus a constant
(`generate_series(t.d, t.d + INTERVAL 6 DAY, INTERVAL 1 DAY)` is 7), and `UNCOUNTED_LATERAL_ROWS`
otherwise: more than any generator is admitted to make, so a cost gate that multiplies it by the
rows it runs over refuses it without an explicit approval.
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
# Rows per input row of a lateral generator whose count depends on the data (`range(t.n)`).
UNCOUNTED_LATERAL_ROWS = MAX_GENERATED_ROWS + 1

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
_TO_INTERVAL = {
    f"to_{unit}s": unit
    for unit in ("microsecond", "millisecond", "second", "minute", "hour", "day", "week", "month", "year")
} | {"to_decades": "decade", "to_centuries": "century", "to_millennia": "millennium"}
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
    if isinstance(node, exp.Trunc | exp.Floor | exp.Ceil) and not node.args.get("decimals"):
        inner = value(node.this)
        if not isinstance(inner, float) or not math.isfinite(inner):
            return None
        rounding = {exp.Floor: math.floor, exp.Ceil: math.ceil}.get(type(node), math.trunc)
        return float(rounding(inner))
    if isinstance(node, exp.ToDays) or (
        isinstance(node, exp.Anonymous) and node.name.lower() in _TO_INTERVAL and len(node.expressions) == 1
    ):
        # DuckDB stores `INTERVAL '6' DAY` in a view's SQL as to_days(CAST(trunc(CAST('6' AS DOUBLE)) ...)
        unit = "to_days" if isinstance(node, exp.ToDays) else node.name.lower()
        amount = value(node.this if isinstance(node, exp.ToDays) else node.expressions[0])
        found = _unit(_TO_INTERVAL[unit])
        if not isinstance(amount, float) or found is None:
            return None
        kind, size = found
        return Interval(amount * size, 0) if kind == "months" else Interval(0, amount * size)
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


def is_constant(node: exp.Expr) -> bool:
    """No table, query or column anywhere in `node` (words of types, units and intervals aside)."""
    for part in node.walk():
        if isinstance(part, exp.Query | exp.Subquery | exp.Table):
            return False
        if isinstance(part, exp.Column | exp.Identifier) and not isinstance(
            part.parent, exp.DataType | exp.Var | exp.Interval
        ):
            return False
    return True


_JSON_EXTRACTS = (exp.JSONExtract, exp.JSONExtractScalar, exp.JSONBExtract, exp.JSONBExtractScalar)


def row_value(node: exp.Expr | None) -> bool:
    """A value read from the current row as stored: a column, a field or element of one, a JSON
    extraction of one with a constant path, or a cast of one. Computing on it (`t.n * 1e9`) is not."""
    if isinstance(node, exp.Column):
        return isinstance(node.this, exp.Identifier)
    if isinstance(node, exp.Cast | exp.TryCast | exp.Paren):
        return row_value(node.this)
    if isinstance(node, exp.Dot):
        return row_value(node.this) and isinstance(node.expression, exp.Identifier)
    if isinstance(node, _JSON_EXTRACTS):
        path = node.expression
        return row_value(node.this) and (
            isinstance(path, exp.JSONPath) or (isinstance(path, exp.Literal) and path.is_string)
        )
    if isinstance(node, exp.Bracket):
        return row_value(node.this) and all(isinstance(e, exp.Literal) for e in node.expressions)
    return False


def _bounds(node: exp.GenerateSeries) -> list[exp.Expr]:
    return [v for k in ("start", "end", "step") if isinstance(v := node.args.get(k), exp.Expr)]


def is_lateral(node: exp.GenerateSeries) -> bool:
    """Whether a generator's bounds read the row before it (are not all constants)."""
    return not all(is_constant(b) for b in _bounds(node))


_REFERENCE = datetime(2001, 1, 1, tzinfo=UTC)  # offsets in months are counted from a 31-day month


def moved(node: exp.Expr | None) -> tuple[exp.Expr | None, Value | None]:
    """`node` as a base and the constant it is moved by: `(t.n + 10) - 1` is (t.n, 9.0), `t.d +
    INTERVAL 6 DAY` is (t.d, 6 days), `t.n` is (t.n, None). Offsets of different kinds (a number and
    an interval) are not added: the whole node is then the base."""
    base, terms = node, []
    while True:
        while isinstance(base, exp.Paren):
            base = base.this
        if not isinstance(base, exp.Add | exp.Sub) or not is_constant(base.expression):
            break
        terms.append((1 if isinstance(base, exp.Add) else -1, value(base.expression)))
        base = base.this
    if not terms:
        return base, None
    numbers = [sign * v for sign, v in terms if isinstance(v, float)]
    if len(numbers) == len(terms):
        return base, float(sum(numbers))
    if all(isinstance(v, Interval) for _, v in terms):
        parts = [v.scaled(sign) for sign, v in terms if isinstance(v, Interval)]
        return base, Interval(sum(p.months for p in parts), sum(p.micros for p in parts))
    return node, None


def lateral_rows(node: exp.GenerateSeries) -> int | None:
    """Rows per input row of a lateral generator whose end is its start moved by a constant
    (`range(t.n, t.n + 10)`, `generate_series(t.d, t.d + INTERVAL 6 DAY, INTERVAL 1 DAY)`); else None."""
    start, step = node.args.get("start"), node.args.get("step")
    if start is None or (step is not None and not is_constant(step)):
        return None
    base, offset = moved(node.args.get("end"))
    start_base, start_offset = moved(start)
    if base is None or base != start_base or offset is None:
        return None
    stride = value(step) if step is not None else 1.0
    exclusive = bool(node.args.get("is_end_exclusive"))
    if isinstance(offset, float) and isinstance(stride, float):
        begin = start_offset if isinstance(start_offset, float) else 0.0 if start_offset is None else None
        return None if begin is None else _count(begin, offset, stride, exclusive)
    if isinstance(offset, Interval) and isinstance(stride, Interval) and start_offset is None:
        shifted = _shift(_REFERENCE, offset)
        return None if shifted is None else _count(_REFERENCE, shifted, stride, exclusive)
    return None


def generated_rows(node: exp.Expr | None) -> int | None:
    """Rows a `range`/`generate_series` call (list or table), `repeat(x, n)` table or `unnest` of a
    list literal or of a generator makes, when its arguments are constants; else None.

    A lateral generator whose rows become rows (in FROM or unnested) counts per input row: its
    `lateral_rows`, or `UNCOUNTED_LATERAL_ROWS` when those depend on the data (see the module)."""
    if isinstance(node, exp.GenerateSeries) and is_lateral(node):
        if not isinstance(node.parent, exp.Table | exp.Unnest | exp.Explode | exp.Lateral):
            return None  # a list in a select item: one row, whatever its length
        per_row = lateral_rows(node)
        return UNCOUNTED_LATERAL_ROWS if per_row is None else per_row
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
