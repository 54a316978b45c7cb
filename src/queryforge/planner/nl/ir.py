"""The intermediate form of a request: what to read, keep, group, measure, rank and where to write.

Independent of SQL and of the words used; `compile` turns it into a pipeline and `reading`
into plain words. Conditions form a boolean tree with negation and OR.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..context import Source


@dataclass(frozen=True)
class Col:
    alias: str  # the source's alias in the query
    name: str

    def sql(self, qualified: bool) -> str:
        from .render import qident

        return f"{self.alias}.{qident(self.name)}" if qualified else qident(self.name)


@dataclass
class Compare:
    col: Col
    op: str  # = <> > >= < <= in not_in
    value: Any  # a number, a string, a date, or a list of them


@dataclass
class IsNull:
    col: Col
    negated: bool = False  # True: the column has a value (not null, not empty text)


@dataclass
class DateRange:
    col: Col
    lo: Any  # inclusive: a date, a timestamp, a SQL expression or None
    hi: Any  # exclusive (inclusive when hi_inclusive)
    words: str = ""
    hi_inclusive: bool = False


@dataclass
class DatePart:
    col: Col
    part: str  # month | hour | year | quarter | dow
    op: str
    value: Any


@dataclass
class VersusAggregate:
    """A row's value compared with an aggregate of the column over all rows, or over the rows that
    share the `within` columns: 'priced above the average price of its category'."""

    col: Col
    op: str  # > >= < <=
    func: str  # avg median min max
    within: list[str] = field(default_factory=list)  # column names of the main source


@dataclass
class Recent:
    col: Col
    n: int
    unit: str  # day | week | month | year


@dataclass
class Exists:
    """Rows of the main source that have (or, negated, have no) matching rows in another source."""

    source: SourceUse
    keys: list[tuple[str, str]]  # (main column, other column)
    where: list[Cond] = field(default_factory=list)
    negated: bool = False


@dataclass
class Not:
    cond: Cond


@dataclass
class And:
    items: list[Cond]


@dataclass
class Or:
    items: list[Cond]


Cond = Compare | IsNull | DateRange | DatePart | Recent | VersusAggregate | Exists | Not | And | Or


@dataclass
class SourceUse:
    source: Source
    alias: str
    step: str = ""  # the extract step id
    dedupe: bool = False  # a lookup side with repeated identical rows


@dataclass
class Join:
    right: SourceUse
    keys: list[tuple[Col, Col]]
    how: str = "inner"
    on: list[Any] = field(default_factory=list)  # conditions on the right rows (a left join's ON)


@dataclass
class GroupKey:
    col: Col
    unit: str | None = None  # a time bucket (hour day week month quarter year weekday) or a text part

    @property
    def name(self) -> str:
        if self.unit is None:
            return self.col.name
        return {"day": self.col.name}.get(self.unit, self.unit)


@dataclass
class Measure:
    func: str  # count sum avg median min max, range (max - min), days (days from min to max)
    col: Col | None = None  # None: count(*)
    distinct: bool = False
    where: Cond | None = None  # a conditional aggregate
    alias: str = ""
    share: str | None = None  # None | percent | fraction: of the total over all groups
    parts: tuple[Measure, Measure] | None = None  # func ratio (a / b), change (b - a), pct_change
    arg: float | None = None  # func quantile: the fraction (0.9 for the 90th percentile)


@dataclass
class Rank:
    """Keep the first `n` rows by `by` — over all rows, or per group (`partition`)."""

    n: int
    by: list[tuple[Col | str, bool]]  # (a column or a measure alias, descending)
    partition: list[Col] = field(default_factory=list)
    unit: str | None = None  # the partition is this period of its date column: 'the biggest order per month'


@dataclass
class Running:
    measure: Measure
    order: Col
    partition: list[Col] = field(default_factory=list)
    alias: str = "running_total"
    window: str = "sum"  # sum: a running total; avg: a moving average (with `frame`)
    frame: int | None = None  # the rows of a moving window: this one and frame - 1 before it


@dataclass
class Having:
    measure: str  # alias of a measure
    op: str
    value: float


@dataclass
class Request:
    sources: list[SourceUse]
    joins: list[Join] = field(default_factory=list)
    union: bool = False
    round_to: int | None = None  # decimals every measure is rounded to
    sequence: tuple[Cond, Cond, Col, Col] | None = None  # (first, then, key, time): keys with a row of
    # `first` and a later row of `then`
    cohort: tuple[Col, Col, str] | None = (
        None  # (entity key, date, unit): entities by the period of their first row
    )
    rollup: tuple[str, list[GroupKey]] | None = None  # (func, outer keys): an aggregate of the measures
    overlay_key: str | None = None  # sources[1]'s rows replace sources[0]'s of the same key, new ones added
    where: list[Cond] = field(default_factory=list)
    group: list[GroupKey] = field(default_factory=list)
    measures: list[Measure] = field(default_factory=list)
    having: list[Having] = field(default_factory=list)
    rank: Rank | None = None
    order: list[tuple[Col | str, bool]] = field(default_factory=list)
    running: Running | None = None
    derived: dict[str, str] = field(default_factory=dict)  # name -> SQL expression over columns
    fills: dict[str, Any] = field(default_factory=dict)  # column -> value for NULL/empty
    select: list[Col] = field(default_factory=list)  # explicit column choice (row-level)
    extra: list[Col] = field(default_factory=list)  # columns of joined sources added to main.*
    exclude: list[str] = field(default_factory=list)
    renames: dict[str, str] = field(default_factory=dict)
    distinct: bool = False
    distinct_keys: list[Col] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    target: str = ""
    target_said: bool = True  # False: the planner derived the name
    mode: str = "replace"  # replace | append | merge
    mode_said: bool = False  # the request asked for that write mode in so many words
    keys: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)  # words the reading did not use
    named: list[Any] = field(default_factory=list)  # the sources the request names (files, tables)

    @property
    def main(self) -> SourceUse:
        return self.sources[0]

    @property
    def aggregated(self) -> bool:
        return bool(self.measures)
