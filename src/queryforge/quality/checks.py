"""Data-quality rules. Each compiles to a query of the violating rows (or one row per violation).

A rule is a small class registered by name; `compile_rule` turns one YAML rule item such as
`{not_null: [country, day]}` or `{range: {column: revenue, min: 0}, severity: warn}` into
`CompiledRule`s the executor counts and samples -- adding a rule never touches the executor.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar

import sqlglot
from sqlglot import exp

from ..errors import SpecError, did_you_mean
from ..sql.parse import (
    DIALECT,
    SqlProblem,
    column_names,
    ident,
    parse_expression,
    parse_select,
    parse_type,
    table,
)

Schema = list[tuple[str, str]]


@dataclass(frozen=True)
class CompiledRule:
    """One executable rule: `violations` selects offending rows; `count` is used when given."""

    name: str
    rule: str
    column: str | None
    severity: str
    violations: exp.Query | None = None
    count: exp.Query | None = None
    static_failure: str | None = None  # decided without touching data (schema rules)
    error_if: Threshold | None = None  # fail only when the violations meet it (default: any)
    warn_if: Threshold | None = None  # else warn when they meet this
    input: str | None = None  # the checked step (percent thresholds count its rows)


@dataclass(frozen=True)
class Threshold:
    """dbt's `error_if` / `warn_if`: a comparison of the violation count, or of its percentage of rows."""

    op: str
    value: float
    percent: bool
    text: str

    PATTERN: ClassVar[re.Pattern[str]] = re.compile(r"^\s*(>=|<=|!=|==|=|>|<)\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")

    @classmethod
    def parse(cls, text: Any, field: str, where: Callable[[], str]) -> Threshold:
        found = cls.PATTERN.match(str(text))
        if found is None:
            raise SpecError(
                f"'{field}: {text}' is not a threshold",
                where=where(),
                hint=f"write a comparison of the violations, e.g. {field}: '>10' or {field}: '>= 5%'",
            )
        op, value, percent = found.groups()
        return cls("==" if op == "=" else op, float(value), percent == "%", str(text).strip())

    def met(self, violations: int, rows: int | None) -> bool:
        value = violations * 100.0 / rows if self.percent and rows else float(violations)
        return {
            ">": value > self.value,
            ">=": value >= self.value,
            "<": value < self.value,
            "<=": value <= self.value,
            "==": value == self.value,
            "!=": value != self.value,
        }[self.op]


Fetch = Callable[[exp.Query], tuple[list[str], list[tuple[Any, ...]]]]


def evaluate_rules(
    step_id: str, rules: list[CompiledRule], fetch: Fetch, sample_rows: int = 5
) -> list[dict[str, Any]]:
    """Count (and sample) each rule's violations with `fetch`, the engine's way to run a query."""
    results = []
    for rule in rules:
        samples: list[dict[str, Any]] = []
        if rule.static_failure is not None:
            violations = 1
            samples = [{"problem": rule.static_failure}]
        elif rule.violations is None:
            violations = 0
        else:
            _, rows = fetch(exp.select(exp.func("count", exp.Star())).from_(rule.violations.subquery("v")))
            violations = int(rows[0][0])
            if violations:
                names, sample = fetch(rule.violations.limit(sample_rows))
                samples = [dict(zip(names, r, strict=True)) for r in sample]
        severity, passed = rule.severity, violations == 0
        threshold = None
        if violations and (rule.error_if or rule.warn_if):
            total: int | None = None
            if any(t is not None and t.percent for t in (rule.error_if, rule.warn_if)) and rule.input:
                _, counted = fetch(exp.select(exp.func("count", exp.Star())).from_(table(rule.input)))
                total = int(counted[0][0])
            error_if = rule.error_if or Threshold("!=", 0, False, "!=0")
            warn_if = rule.warn_if or Threshold("!=", 0, False, "!=0")
            if rule.severity == "error" and error_if.met(violations, total):
                passed, threshold = False, error_if.text
            elif warn_if.met(violations, total):
                severity, passed, threshold = "warn", False, warn_if.text
            else:
                passed = True
        results.append(
            {
                "step_id": step_id,
                "rule_name": rule.name,
                "rule": rule.rule,
                "column": rule.column,
                "severity": severity,
                "passed": passed,
                "violations": violations,
                "samples": samples,
                **({"threshold": threshold} if threshold else {}),
            }
        )
    return results


@dataclass(frozen=True)
class RuleContext:
    input: str
    schema: Schema
    severity: str
    where: Callable[[], str]
    step_schemas: Mapping[str, Schema]

    @property
    def columns(self) -> list[str]:
        return [c for c, _ in self.schema]

    def require(self, names: list[str], rule: str) -> None:
        known = {c.lower() for c in self.columns}
        for n in names:
            if n.lower() not in known:
                raise SpecError(
                    f"Check rule '{rule}' names unknown column '{n}' of '{self.input}'",
                    where=self.where(),
                    hint=did_you_mean(n, self.columns),
                )


def _col(name: str) -> exp.Column:
    return exp.column(ident(name))


def _src(name: str) -> exp.Table:
    return table(name)


def _rows_where(ctx: RuleContext, condition: exp.Expr) -> exp.Query:
    return exp.select(exp.Star()).from_(_src(ctx.input)).where(condition)


def _columns_arg(value: Any, rule: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value) and value:
        return list(value)
    if isinstance(value, dict) and "columns" in value:
        return _columns_arg(value["columns"], rule)
    if isinstance(value, dict) and "column" in value:
        return _columns_arg(value["column"], rule)
    raise SpecError(f"Rule '{rule}' takes a column name or a list of column names")


class Rule:
    """One check rule kind, registered by `name`.

    `sql_fields` declares where the rule's argument carries SQL ("" = the argument itself when it
    is a string; otherwise a key of its mapping), as `Op.sql_fields` does for transforms.
    """

    name: ClassVar[str]
    registry: ClassVar[dict[str, type[Rule]]] = {}
    sql_fields: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Rule.registry[cls.name] = cls

    def compile(self, arg: Any, ctx: RuleContext) -> list[CompiledRule]:
        raise NotImplementedError

    def one(self, ctx: RuleContext, column: str | None, **kw: Any) -> CompiledRule:
        return CompiledRule(
            name=f"{self.name}({column})" if column else self.name,
            rule=self.name,
            column=column,
            severity=ctx.severity,
            **kw,
        )


class NotNull(Rule):
    name = "not_null"

    def compile(self, arg: Any, ctx: RuleContext) -> list[CompiledRule]:
        cols = _columns_arg(arg, self.name)
        ctx.require(cols, self.name)
        return [
            self.one(ctx, c, violations=_rows_where(ctx, exp.Is(this=_col(c), expression=exp.Null())))
            for c in cols
        ]


class NotEmpty(Rule):
    """Neither NULL nor an empty/blank string."""

    name = "not_empty"

    def compile(self, arg: Any, ctx: RuleContext) -> list[CompiledRule]:
        cols = _columns_arg(arg, self.name)
        ctx.require(cols, self.name)
        out = []
        for c in cols:
            blank = exp.EQ(
                this=exp.func("trim", exp.cast(_col(c), "VARCHAR")), expression=exp.Literal.string("")
            )
            out.append(
                self.one(
                    ctx,
                    c,
                    violations=_rows_where(ctx, exp.or_(exp.Is(this=_col(c), expression=exp.Null()), blank)),
                )
            )
        return out


class Unique(Rule):
    name = "unique"

    def compile(self, arg: Any, ctx: RuleContext) -> list[CompiledRule]:
        cols = _columns_arg(arg, self.name)
        ctx.require(cols, self.name)
        keys = [_col(c) for c in cols]
        dupes = (
            exp.select(*keys, exp.alias_(exp.func("count", exp.Star()), "occurrences"))
            .from_(_src(ctx.input))
            .where(exp.and_(*[exp.not_(exp.Is(this=_col(c), expression=exp.Null())) for c in cols]))
            .group_by(*[k.copy() for k in keys])
            .having(exp.GT(this=exp.func("count", exp.Star()), expression=exp.Literal.number(1)))
        )
        return [self.one(ctx, ", ".join(cols), violations=dupes)]


class AcceptedValues(Rule):
    name = "accepted_values"

    def compile(self, arg: Any, ctx: RuleContext) -> list[CompiledRule]:
        if not isinstance(arg, dict) or "column" not in arg or not isinstance(arg.get("values"), list):
            raise SpecError("Rule 'accepted_values' takes {column: NAME, values: [...]}", where=ctx.where())
        c = str(arg["column"])
        ctx.require([c], self.name)
        values = [
            exp.Literal.string(v) if isinstance(v, str) else exp.Literal.number(v) for v in arg["values"]
        ]
        cond = exp.and_(
            exp.not_(exp.In(this=_col(c), expressions=values)),
            exp.not_(exp.Is(this=_col(c), expression=exp.Null())),
        )
        return [self.one(ctx, c, violations=_rows_where(ctx, cond))]


class Range(Rule):
    name = "range"

    def compile(self, arg: Any, ctx: RuleContext) -> list[CompiledRule]:
        if not isinstance(arg, dict) or "column" not in arg or not ({"min", "max"} & set(arg)):
            raise SpecError("Rule 'range' takes {column: NAME, min: X, max: Y}", where=ctx.where())
        c = str(arg["column"])
        ctx.require([c], self.name)
        parts: list[exp.Expr] = []
        for bound, op in (("min", exp.LT), ("max", exp.GT)):
            if arg.get(bound) is not None:
                v = arg[bound]
                lit = exp.Literal.number(v) if isinstance(v, int | float) else exp.Literal.string(str(v))
                parts.append(op(this=_col(c), expression=lit))
        return [self.one(ctx, c, violations=_rows_where(ctx, exp.or_(*parts)))]


class Regex(Rule):
    name = "regex"

    def compile(self, arg: Any, ctx: RuleContext) -> list[CompiledRule]:
        if not isinstance(arg, dict) or "column" not in arg or "pattern" not in arg:
            raise SpecError("Rule 'regex' takes {column: NAME, pattern: REGEX}", where=ctx.where())
        c = str(arg["column"])
        ctx.require([c], self.name)
        match = exp.RegexpFullMatch(
            this=exp.cast(_col(c), "VARCHAR"), expression=exp.Literal.string(arg["pattern"])
        )
        cond = exp.and_(exp.not_(match), exp.not_(exp.Is(this=_col(c), expression=exp.Null())))
        return [self.one(ctx, c, violations=_rows_where(ctx, cond))]


class RowCount(Rule):
    name = "row_count"

    def compile(self, arg: Any, ctx: RuleContext) -> list[CompiledRule]:
        if not isinstance(arg, dict) or not ({"min", "max"} & set(arg)):
            raise SpecError("Rule 'row_count' takes {min: N, max: M}", where=ctx.where())
        n = exp.func("count", exp.Star())
        bad: list[exp.Expr] = []
        if arg.get("min") is not None:
            bad.append(exp.LT(this=n.copy(), expression=exp.Literal.number(int(arg["min"]))))
        if arg.get("max") is not None:
            bad.append(exp.GT(this=n.copy(), expression=exp.Literal.number(int(arg["max"]))))
        counted = exp.select(exp.alias_(n, "row_count")).from_(_src(ctx.input)).having(exp.or_(*bad))
        return [self.one(ctx, None, violations=counted)]


class Relationships(Rule):
    """Referential integrity: every non-null value must exist in another step's column (anti-join)."""

    name = "relationships"

    def compile(self, arg: Any, ctx: RuleContext) -> list[CompiledRule]:
        if not isinstance(arg, dict) or not {"column", "to"} <= set(arg):
            raise SpecError(
                "Rule 'relationships' takes {column: NAME, to: STEP, field: NAME}", where=ctx.where()
            )
        c, to = str(arg["column"]), str(arg["to"])
        field = str(arg.get("field", c))
        ctx.require([c], self.name)
        if to not in ctx.step_schemas:
            raise SpecError(
                f"Rule 'relationships' refers to unknown step '{to}'",
                where=ctx.where(),
                hint=did_you_mean(to, ctx.step_schemas),
            )
        other = [n for n, _ in ctx.step_schemas[to]]
        if field.lower() not in {o.lower() for o in other}:
            raise SpecError(
                f"Rule 'relationships' names unknown column '{field}' of '{to}'",
                where=ctx.where(),
                hint=did_you_mean(field, other),
            )
        exists = exp.Exists(
            this=exp.select(exp.Literal.number(1))
            .from_(exp.alias_(table(to), "r", table=True))
            .where(
                exp.EQ(
                    this=exp.column(ident(field), table=ident("r")),
                    expression=exp.column(ident(c), table=ident("s")),
                )
            )
        )
        query = (
            exp.select(exp.Star())
            .from_(exp.alias_(table(ctx.input), "s", table=True))
            .where(
                exp.and_(
                    exp.not_(exp.Is(this=exp.column(ident(c), table=ident("s")), expression=exp.Null())),
                    exp.not_(exists),
                )
            )
        )
        return [self.one(ctx, c, violations=query)]


class Expression(Rule):
    """A custom SQL predicate every row must satisfy (NULL counts as a violation)."""

    name = "expression"
    sql_fields = {"": "expression", "sql": "expression"}

    def compile(self, arg: Any, ctx: RuleContext) -> list[CompiledRule]:
        text = arg.get("sql") if isinstance(arg, dict) else arg
        if not isinstance(text, str):
            raise SpecError("Rule 'expression' takes a SQL predicate string", where=ctx.where())
        try:
            predicate = parse_expression(text)
        except SqlProblem as exc:
            raise SpecError(f"Rule 'expression': {exc}", where=ctx.where()) from None
        ctx.require(column_names(predicate), self.name)
        cond = exp.not_(exp.func("coalesce", exp.paren(predicate), exp.false()))
        return [self.one(ctx, None, violations=_rows_where(ctx, cond))]


class Query(Rule):
    """dbt's singular test: a SELECT over the pipeline's steps; every row it returns is a violation."""

    name = "query"
    sql_fields = {"": "query", "sql": "query"}

    def compile(self, arg: Any, ctx: RuleContext) -> list[CompiledRule]:
        text = arg.get("sql") if isinstance(arg, dict) else arg
        if not isinstance(text, str):
            raise SpecError(
                "Rule 'query' takes a SELECT whose rows are the violations",
                where=ctx.where(),
                hint="e.g. - query: SELECT * FROM orders WHERE amount < 0",
            )
        try:
            query = parse_select(text)
        except SqlProblem as exc:
            raise SpecError(
                f"Rule 'query': {exc}", where=ctx.where(), hint="one SELECT over earlier steps"
            ) from None
        # The steps it reads are checked, and ordered before the check, by the plan's dependencies
        # (as a relationships rule's `to` is).
        return [self.one(ctx, None, violations=query.copy())]


class SchemaRule(Rule):
    """Expected columns (and optionally types); strict also forbids extra columns."""

    name = "schema"

    def compile(self, arg: Any, ctx: RuleContext) -> list[CompiledRule]:
        if not isinstance(arg, dict) or "columns" not in arg:
            raise SpecError(
                "Rule 'schema' takes {columns: {name: TYPE} or [names], strict: bool}", where=ctx.where()
            )
        wanted = arg["columns"]
        wanted = dict.fromkeys(wanted) if isinstance(wanted, list) else dict(wanted)
        have = {c.lower(): t for c, t in ctx.schema}
        problems = []
        for c, t in wanted.items():
            if c.lower() not in have:
                problems.append(f"missing column {c}")
            elif t is not None and not _same_type(str(t), have[c.lower()]):
                problems.append(f"column {c} is {have[c.lower()]}, expected {t}")
        if arg.get("strict"):
            extra = [c for c, _ in ctx.schema if c.lower() not in {w.lower() for w in wanted}]
            problems += [f"unexpected column {c}" for c in extra]
        return [self.one(ctx, None, static_failure="; ".join(problems) or None)]


def _same_type(a: str, b: str) -> bool:
    try:
        return parse_type(a).sql(DIALECT) == parse_type(b).sql(DIALECT)
    except SqlProblem:
        return a.lower() == b.lower()


UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class Freshness(Rule):
    """The newest value of a timestamp column is not older than max_age (e.g. 24h, 7d)."""

    name = "freshness"

    def compile(self, arg: Any, ctx: RuleContext) -> list[CompiledRule]:
        if not isinstance(arg, dict) or not {"column", "max_age"} <= set(arg):
            raise SpecError("Rule 'freshness' takes {column: NAME, max_age: 24h}", where=ctx.where())
        c, age = str(arg["column"]), str(arg["max_age"]).strip()
        ctx.require([c], self.name)
        if not age[:-1].isdigit() or age[-1] not in UNITS:
            raise SpecError(
                f"Rule 'freshness': cannot read max_age {age!r}",
                where=ctx.where(),
                hint="write a number and a unit: 30m, 24h, 7d",
            )
        seconds = int(timedelta(**{UNITS[age[-1]]: int(age[:-1])}).total_seconds())
        newest = exp.func("max", exp.cast(_col(c), "TIMESTAMP"))
        limit = sqlglot.parse_one(f"current_localtimestamp() - INTERVAL {seconds} SECOND", read=DIALECT)
        stale = (
            exp.select(exp.alias_(newest, "newest"))
            .from_(_src(ctx.input))
            .having(
                exp.or_(
                    exp.Is(this=newest.copy(), expression=exp.Null()),
                    exp.LT(this=newest.copy(), expression=limit),
                )
            )
        )
        return [self.one(ctx, c, violations=stale)]


RESERVED = ("severity", "name", "error_if", "warn_if")


def compile_rule(item: Mapping[str, Any], ctx: RuleContext) -> list[CompiledRule]:
    keys = [k for k in item if k not in RESERVED]
    if len(keys) != 1:
        raise SpecError(
            f"A check rule needs exactly one rule name, found {keys or 'none'}",
            where=ctx.where(),
            hint=f"rules are: {', '.join(sorted(Rule.registry))}",
        )
    name = keys[0]
    if name not in Rule.registry:
        raise SpecError(
            f"Unknown check rule '{name}'", where=ctx.where(), hint=did_you_mean(name, Rule.registry)
        )
    severity = str(item.get("severity", ctx.severity))
    if severity not in ("error", "warn"):
        raise SpecError(
            f"Invalid severity {severity!r} for rule '{name}'", where=ctx.where(), hint="use error or warn"
        )
    sub = RuleContext(ctx.input, ctx.schema, severity, ctx.where, ctx.step_schemas)
    compiled = Rule.registry[name]().compile(item[name], sub)
    extra: dict[str, Any] = {"input": ctx.input}
    if "name" in item:
        extra["name"] = str(item["name"])
    for field in ("error_if", "warn_if"):
        if field in item:
            extra[field] = Threshold.parse(item[field], field, ctx.where)
    return [CompiledRule(**{**c.__dict__, **extra}) for c in compiled]
