"""Data-quality rules. Each compiles to a query of the violating rows (or one row per violation).

A rule is a small class registered by name; `compile_rule` turns one YAML rule item such as
`{not_null: [country, day]}` or `{range: {column: revenue, min: 0}, severity: warn}` into
`CompiledRule`s the executor counts and samples -- adding a rule never touches the executor.

A workspace can also declare rules in `queryforge.yaml` (`rules:`): a SQL predicate with named
arguments (`:column > 0`), parsed once; a use puts a quoted column or a literal in place of each
argument in the tree -- never into the text -- and the result passes the `expression` rule's SQL
policy. They reach the compiler as a mapping (`RuleContext.custom`), never as a global registry.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, ClassVar, Protocol

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from ..errors import ConfigError, SpecError, did_you_mean, suggest
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
from ..sql.policy import MAX_SQL_CHARS

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
    custom: Mapping[str, CustomRule] = field(default_factory=dict)  # the workspace's `rules:`

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
    # On a load's column (`columns: {c: {checks: [...]}}`): whether the rule checks one column, and
    # which field a bare argument fills (`accepted_values: [a, b]` is `{values: [a, b]}`).
    per_column: ClassVar[bool] = True
    column_shorthand: ClassVar[str | None] = None

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

    def with_column(self, arg: Any, column: str, where: Callable[[], str]) -> Any:
        """The argument of this rule on `column` of a load (see `column_check`)."""
        if not self.per_column:
            raise SpecError(
                f"Rule '{self.name}' does not check one column, so it cannot be listed under "
                f"'columns: {column}'",
                where=where(),
                hint=f"put it in a check step on the load's input: - {self.name}: ...",
            )
        return _with_column(self.name, arg, column, "column", self.column_shorthand, where)


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
    column_shorthand = "values"

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
    column_shorthand = "pattern"

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
    per_column = False

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
    column_shorthand = "to"

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
    per_column = False

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
    per_column = False

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
    per_column = False

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
    column_shorthand = "max_age"

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


def _with_column(
    rule: str, arg: Any, column: str, field_name: str, shorthand: str | None, where: Callable[[], str]
) -> dict[str, Any]:
    """`arg` of a rule listed under a load's column, with `field_name` set to that column."""
    if arg is None:
        return {field_name: column}
    if isinstance(arg, Mapping):
        if field_name in arg:
            raise SpecError(
                f"Rule '{rule}' under 'columns: {column}' names its column again ('{field_name}')",
                where=where(),
                hint=f"remove '{field_name}': a check listed under a column checks that column",
            )
        return {**arg, field_name: column}
    if shorthand is not None:
        return {field_name: column, shorthand: arg}
    raise SpecError(
        f"Rule '{rule}' under 'columns: {column}' takes a mapping of its arguments, not {arg!r}",
        where=where(),
        hint=f"write e.g. - {rule}: {{...}} (the column is implied)",
    )


# ---------------------------------------------------------------- custom rules (queryforge.yaml)


ARG_KINDS = {
    "column": "a column of the checked step, written as its name",
    "value": "a literal written in the pipeline: a number, a string, true/false or null",
}
RULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
CUSTOM_SHAPE = "a custom rule is {description: TEXT, args: {NAME: column | value}, holds: SQL PREDICATE}"


class RuleDefinition(Protocol):
    """A custom rule as a `rules:` entry of queryforge.yaml declares it (`config.CustomRuleConfig`)."""

    @property
    def description(self) -> str | None: ...

    @property
    def args(self) -> Mapping[str, str]: ...

    @property
    def holds(self) -> str: ...

    def where(self, key: str | None = None) -> str: ...


@dataclass(frozen=True)
class CustomRule:
    """A rule declared in queryforge.yaml: `holds`, a SQL predicate every row must satisfy, parsed
    once with a placeholder (`:name`) for each argument. A row violates it when the predicate is
    FALSE; NULL (e.g. of a NULL column) is no violation, as for the built-in value rules."""

    name: str
    args: dict[str, str]  # argument -> kind (column | value), as declared
    predicate: exp.Expr
    description: str | None = None

    @classmethod
    def define(cls, name: str, spec: RuleDefinition) -> CustomRule:
        """The rule `spec` declares, or a ConfigError naming queryforge.yaml, its line and the rule."""

        def problem(message: str, key: str | None = None, hint: str | None = None) -> ConfigError:
            return ConfigError(
                f"Custom rule '{name}' in queryforge.yaml {message}", where=spec.where(key), hint=hint
            )

        if not RULE_NAME.match(name) or name in RESERVED:
            raise problem(
                "has a name that cannot be used as a rule",
                hint="a rule name is letters, digits and _ (not severity, name, error_if or warn_if)",
            )
        if name in Rule.registry:
            raise problem(
                f"has the name of the built-in rule '{name}'",
                hint="rename it, e.g. to 'my_" + name + "'; built-in rules cannot be replaced",
            )
        for arg, kind in spec.args.items():
            if not RULE_NAME.match(arg) or arg in RESERVED:
                raise problem(
                    f"declares an argument '{arg}' that cannot be used",
                    f"args/{arg}",
                    hint="an argument name is letters, digits and _ "
                    "(not severity, name, error_if or warn_if)",
                )
            if kind not in ARG_KINDS:
                raise problem(
                    f"declares argument '{arg}' of unknown kind {kind!r}",
                    f"args/{arg}",
                    hint=(f"did you mean '{near}'? " if (near := suggest(str(kind), ARG_KINDS)) else "")
                    + f"an argument is of kind column ({ARG_KINDS['column']}) or value "
                    f"({ARG_KINDS['value']})",
                )
        predicate = _parse_template(spec.holds, problem)
        found = [p.name for p in predicate.find_all(exp.Placeholder)]
        if any(not RULE_NAME.match(n) for n in found):
            raise problem(
                "uses a positional placeholder (?, $1) in 'holds'",
                "holds",
                hint="name each argument, e.g. ':column > 0', and declare it under args",
            )
        for n in dict.fromkeys(found):
            if n not in spec.args:
                raise problem(
                    f"uses ':{n}' in 'holds', which is not declared under 'args'",
                    "holds",
                    hint=f"did you mean ':{near}'?"
                    if (near := suggest(n, spec.args))
                    else f"declare it under args: {n}: column (or {n}: value)",
                )
        unused = [a for a in spec.args if a not in found]
        if unused:
            raise problem(
                f"declares argument '{unused[0]}', which 'holds' does not use",
                f"args/{unused[0]}",
                hint=f"write ':{unused[0]}' in 'holds' where its value goes, or remove the argument",
            )
        rule = cls(name, dict(spec.args), predicate, spec.description)
        stand_ins: dict[str, exp.Expr] = {
            a: _col(a) if kind == "column" else exp.Literal.number(0) for a, kind in rule.args.items()
        }
        try:
            rule.instantiate(stand_ins)
        except SqlProblem as exc:
            raise problem(
                f"has a predicate that is not allowed: {exc}",
                "holds",
                hint="'holds' is one condition over the checked step's columns, as an `expression` "
                "rule is: no subquery reading a table, only allow-listed functions",
            ) from None
        return rule

    def instantiate(self, values: Mapping[str, exp.Expr]) -> exp.Expr:
        """The predicate with each placeholder replaced by its value's node, vetted by the SQL policy
        exactly as the predicate of an `expression` rule is (SqlProblem when it is refused)."""
        tree = self.predicate.transform(
            lambda node: values[node.name].copy() if isinstance(node, exp.Placeholder) else node
        )
        # The tree is written and read back by the one gate (`parse_expression`): column names go in
        # quoted and values as literal nodes, so no argument can change the predicate's shape.
        return parse_expression(tree.sql(dialect=DIALECT))

    def usage(self) -> str:
        return f"- {self.name}: {{{', '.join(f'{a}: {k.upper()}' for a, k in self.args.items())}}}"

    def bindings(self, arg: Any, ctx: RuleContext) -> list[dict[str, Any]]:
        """The argument values of one use; a list of columns given to a one-column rule is one use
        per column, as for not_null."""
        if isinstance(arg, Mapping):
            missing = [a for a in self.args if a not in arg]
            extra = [str(a) for a in arg if a not in self.args]
            if missing or extra:
                what = f"is missing argument '{missing[0]}'" if missing else f"has no argument '{extra[0]}'"
                raise SpecError(
                    f"Custom rule '{self.name}' {what}",
                    where=ctx.where(),
                    hint=(
                        f"did you mean '{near}'? " if extra and (near := suggest(extra[0], self.args)) else ""
                    )
                    + f"write {self.usage()}",
                )
            return [dict(arg)]
        if not self.args and arg is None:
            return [{}]
        if len(self.args) == 1:
            ((only, kind),) = self.args.items()
            if kind == "column" and isinstance(arg, list) and arg and all(isinstance(a, str) for a in arg):
                return [{only: a} for a in arg]
            return [{only: arg}]
        raise SpecError(
            f"Custom rule '{self.name}' takes {len(self.args)} arguments, given as a mapping",
            where=ctx.where(),
            hint=f"write {self.usage()}",
        )

    def compile(self, arg: Any, ctx: RuleContext) -> list[CompiledRule]:
        out = []
        for given in self.bindings(arg, ctx):
            values: dict[str, exp.Expr] = {}
            columns: list[str] = []
            for a, kind in self.args.items():
                value = given[a]
                node = _literal(value) if kind == "value" else None
                if kind == "column":
                    if not isinstance(value, str) or not value:
                        raise SpecError(
                            f"Custom rule '{self.name}': argument '{a}' is a column name, not {value!r}",
                            where=ctx.where(),
                            hint=f"write {self.usage()}",
                        )
                    ctx.require([value], self.name)
                    columns.append(value)
                    node = _col(value)
                if node is None:
                    raise SpecError(
                        f"Custom rule '{self.name}': argument '{a}' is a single value, not {value!r}",
                        where=ctx.where(),
                        hint="give a number, a string, true/false or null",
                    )
                values[a] = node
            try:
                predicate = self.instantiate(values)
            except SqlProblem as exc:
                raise SpecError(f"Custom rule '{self.name}': {exc}", where=ctx.where()) from None
            ctx.require(column_names(predicate), self.name)  # columns `holds` names itself
            # FALSE is a violation; NULL is not (pair the rule with not_null when a value is required).
            cond = exp.not_(exp.func("coalesce", exp.paren(predicate), exp.true()))
            column = ", ".join(columns) or None
            out.append(
                CompiledRule(
                    name=f"{self.name}({column})" if column else self.name,
                    rule=self.name,
                    column=column,
                    severity=ctx.severity,
                    violations=_rows_where(ctx, cond),
                )
            )
        return out

    def with_column(self, arg: Any, column: str, where: Callable[[], str]) -> Any:
        """The argument of this rule on `column` of a load: the column goes to its argument named
        `column`, else to its only column argument; a bare value fills its only other argument."""
        targets = [a for a, kind in self.args.items() if kind == "column"]
        target = "column" if "column" in targets else targets[0] if len(targets) == 1 else None
        if target is None:
            raise SpecError(
                f"Custom rule '{self.name}' cannot be listed under 'columns: {column}': it has "
                f"{'no' if not targets else 'more than one'} argument of kind column",
                where=where(),
                hint=f"put it in a check step on the load's input: {self.usage()}",
            )
        others = [a for a in self.args if a != target]
        return _with_column(self.name, arg, column, target, others[0] if len(others) == 1 else None, where)


def _parse_template(text: str, problem: Callable[..., ConfigError]) -> exp.Expr:
    """`holds` as a tree with its placeholders (`:name` parses as exp.Placeholder)."""
    if len(text) > MAX_SQL_CHARS:
        raise problem(f"has a 'holds' of {len(text):,} characters", "holds")
    try:
        tree = sqlglot.parse_one(text, read=DIALECT, into=exp.Condition)
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        detail = first.get("description", str(exc))
        raise problem(
            f"has a 'holds' that does not parse: {detail}",
            "holds",
            hint="write one SQL condition, e.g. ':column > 0' or ':column BETWEEN :low AND :high'",
        ) from None
    except (TokenError, ValueError, RecursionError) as exc:
        raise problem(f"has a 'holds' that does not parse: {exc}", "holds") from None
    if tree is None or isinstance(tree, exp.Query | exp.Command):
        raise problem("has a 'holds' that is not a condition", "holds", hint="e.g. ':column > 0'")
    return tree


def _literal(value: Any) -> exp.Expr | None:
    if value is None:
        return exp.Null()
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        return exp.Literal.number(value)
    if isinstance(value, str):
        return exp.Literal.string(value)
    if isinstance(value, date | datetime):
        return exp.Literal.string(
            value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
        )
    return None


def custom_rules(specs: Mapping[str, RuleDefinition]) -> dict[str, CustomRule]:
    """The workspace's `rules:`, each checked (ConfigError with queryforge.yaml's line)."""
    return {name: CustomRule.define(name, spec) for name, spec in specs.items()}


# ---------------------------------------------------------------- compiling one rule item


def _rule_of(item: Mapping[str, Any], ctx: RuleContext) -> tuple[str, Rule | CustomRule]:
    """The name of the one rule of `item`, and the rule: built-in, else the workspace's."""
    known = sorted({*Rule.registry, *ctx.custom})
    keys = [k for k in item if k not in RESERVED]
    if len(keys) != 1:
        raise SpecError(
            f"A check rule needs exactly one rule name, found {keys or 'none'}",
            where=ctx.where(),
            hint=f"rules are: {', '.join(known)}",
        )
    name = keys[0]
    if name in Rule.registry:
        return name, Rule.registry[name]()
    if name in ctx.custom:
        return name, ctx.custom[name]
    hint = did_you_mean(name, known)
    if not ctx.custom and suggest(name, known) is None:
        hint = f"{hint}; rules of your own are declared under 'rules:' in queryforge.yaml"
    raise SpecError(f"Unknown check rule '{name}'", where=ctx.where(), hint=hint)


def column_check(column: str, check: str | Mapping[str, Any], ctx: RuleContext) -> dict[str, Any]:
    """A check listed under a load's column, as the rule item of a check step it stands for:
    `not_null` under `order_id` is `{not_null: {column: order_id}}`, and
    `{accepted_values: [a, b], severity: warn}` under `status` is
    `{accepted_values: {column: status, values: [a, b]}, severity: warn}`."""
    item: dict[str, Any] = {check: None} if isinstance(check, str) else dict(check)
    name, rule = _rule_of(item, ctx)
    return {**item, name: rule.with_column(item[name], column, ctx.where)}


def rule_reads(item: Mapping[str, Any]) -> list[str]:
    """The other steps a (value) rule item reads: a relationships rule's `to`."""
    arg = item.get("relationships")
    return [str(arg["to"])] if isinstance(arg, Mapping) and arg.get("to") else []


def _hoisted(item: Mapping[str, Any], name: str, where: Callable[[], str]) -> dict[str, Any]:
    """`{rule: {..., severity: warn}}` as `{rule: {...}, severity: warn}`: the reserved keys may be
    written inside the rule's mapping too (as a load's column checks invite)."""
    arg = item[name]
    if not isinstance(arg, Mapping) or not any(k in arg for k in RESERVED):
        return dict(item)
    inner = {k: arg[k] for k in RESERVED if k in arg}
    twice = [k for k in inner if k in item]
    if twice:
        raise SpecError(
            f"Rule '{name}' sets '{twice[0]}' twice, inside and beside its arguments",
            where=where(),
            hint="keep one of them",
        )
    return {**item, **inner, name: {k: v for k, v in arg.items() if k not in RESERVED}}


def compile_rule(item: Mapping[str, Any], ctx: RuleContext) -> list[CompiledRule]:
    name, rule = _rule_of(item, ctx)
    item = _hoisted(item, name, ctx.where)
    severity = str(item.get("severity", ctx.severity))
    if severity not in ("error", "warn"):
        raise SpecError(
            f"Invalid severity {severity!r} for rule '{name}'", where=ctx.where(), hint="use error or warn"
        )
    sub = dataclasses.replace(ctx, severity=severity)
    compiled = rule.compile(item[name], sub)
    extra: dict[str, Any] = {"input": ctx.input}
    if "name" in item:
        extra["name"] = str(item["name"])
    for field_name in ("error_if", "warn_if"):
        if field_name in item:
            extra[field_name] = Threshold.parse(item[field_name], field_name, ctx.where)
    return [CompiledRule(**{**c.__dict__, **extra}) for c in compiled]
