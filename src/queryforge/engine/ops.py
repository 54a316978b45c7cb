"""Built-in transform ops: each compiles its step body to one sqlglot query over its inputs.

An op is a small class in a registry, found by the step kind. Inputs are referenced as tables
named by their step ids; every op gets the input schemas so it can name columns explicitly
(which keeps the SQL portable across engines) and report unknown columns with a suggestion.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import sqlglot
from sqlglot import exp

from ..errors import SpecError, did_you_mean
from ..spec import models as m
from ..sql.parse import (
    DIALECT,
    SqlProblem,
    column_names,
    ident,
    parse_expression,
    parse_order,
    parse_type,
    table,
)

Schema = list[tuple[str, str]]


@dataclass(frozen=True)
class OpContext:
    """What an op may know while compiling: input schemas and where to point errors."""

    step_id: str
    schemas: Mapping[str, Schema]
    where: Callable[..., str]

    def columns(self, step_id: str) -> list[str]:
        return [c for c, _ in self.schemas[step_id]]

    def require(self, step_id: str, names: list[str], field: str) -> None:
        """Fail with a did-you-mean hint when a named column is not in the input."""
        known = self.columns(step_id)
        lowered = {c.lower() for c in known}
        for name in names:
            if name.lower() not in lowered:
                raise SpecError(
                    f"Unknown column '{name}' in step '{self.step_id}' (input '{step_id}' has "
                    f"{', '.join(known[:15])}{', ...' if len(known) > 15 else ''})",
                    where=self.where(field),
                    hint=did_you_mean(name, known),
                )

    def expression(self, text: str, step_id: str, field: str) -> exp.Expr:
        try:
            expression = parse_expression(text)
        except SqlProblem as exc:
            raise SpecError(
                f"Invalid SQL expression in step '{self.step_id}': {exc}", where=self.where(field)
            ) from None
        aliases: set[str] = set()
        for a in expression.find_all(exp.Alias):
            aliases.add(a.alias)
        self.require(step_id, [c for c in column_names(expression) if c not in aliases], field)
        return expression


def col(name: str, qualifier: str | None = None) -> exp.Column:
    return exp.Column(this=ident(name), table=ident(qualifier) if qualifier else None)


def star_from(step_id: str) -> exp.Select:
    return exp.select(exp.Star()).from_(table(step_id))


def order_terms(items: list[str], ctx: OpContext, step_id: str, field: str) -> list[exp.Ordered]:
    terms: list[exp.Ordered] = []
    for item in items:
        try:
            parsed = parse_order(item)
        except SqlProblem as exc:
            raise SpecError(
                f"Cannot read sort term {item!r} of step '{ctx.step_id}': {exc}",
                where=ctx.where(field),
                hint="write it as 'column' or 'column DESC'",
            ) from None
        for term in parsed:
            ctx.require(step_id, column_names(term), field)
            terms.append(term)
    return terms


class Op:
    """One transform kind. Subclasses register themselves by `kind`.

    `sql_fields` declares which fields of the op's body carry SQL written by a person or a planner
    (field -> "expression" or "order"): the ask gate audits exactly these, and compiling parses each
    through `sql.parse`, which vets it against the allow-list.
    """

    kind: ClassVar[str]
    registry: ClassVar[dict[str, type[Op]]] = {}
    sql_fields: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Op.registry[cls.kind] = cls

    def compile(self, body: Any, ctx: OpContext) -> exp.Query:
        raise NotImplementedError


def get_op(kind: str) -> Op:
    try:
        return Op.registry[kind]()
    except KeyError:
        raise SpecError(f"Unknown transform op '{kind}'", hint=did_you_mean(kind, Op.registry)) from None


class FilterOp(Op):
    kind = "filter"
    sql_fields = {"where": "expression"}

    def compile(self, body: m.Filter, ctx: OpContext) -> exp.Query:
        return star_from(body.input).where(ctx.expression(body.where, body.input, "where"))


class SelectOp(Op):
    kind = "select"

    def compile(self, body: m.Select, ctx: OpContext) -> exp.Query:
        if bool(body.columns) == bool(body.exclude):
            raise SpecError(f"Step '{ctx.step_id}': give either 'columns' or 'exclude'", where=ctx.where())
        if body.columns:
            ctx.require(body.input, body.columns, "columns")
            return exp.select(*[col(c) for c in body.columns]).from_(table(body.input))
        assert body.exclude
        ctx.require(body.input, body.exclude, "exclude")
        dropped = {c.lower() for c in body.exclude}
        keep = [c for c in ctx.columns(body.input) if c.lower() not in dropped]
        return exp.select(*[col(c) for c in keep]).from_(table(body.input))


class RenameOp(Op):
    kind = "rename"

    def compile(self, body: m.Rename, ctx: OpContext) -> exp.Query:
        ctx.require(body.input, list(body.columns), "columns")
        lookup = {k.lower(): v for k, v in body.columns.items()}
        items = [
            exp.alias_(col(c), lookup[c.lower()], quoted=True) if c.lower() in lookup else col(c)
            for c in ctx.columns(body.input)
        ]
        return exp.select(*items).from_(table(body.input))


class CastOp(Op):
    kind = "cast"

    def compile(self, body: m.Cast, ctx: OpContext) -> exp.Query:
        ctx.require(body.input, list(body.columns), "columns")
        types: dict[str, exp.DataType] = {}
        for name, type_text in body.columns.items():
            try:
                types[name.lower()] = parse_type(type_text)
            except SqlProblem as exc:
                raise SpecError(
                    f"Step '{ctx.step_id}': {exc} for column '{name}'",
                    where=ctx.where("columns"),
                    hint="use a SQL type such as INTEGER, DOUBLE, DECIMAL(12,2), DATE, VARCHAR",
                ) from None
        items = [
            exp.alias_(exp.Cast(this=col(c), to=types[c.lower()]), c, quoted=True)
            if c.lower() in types
            else col(c)
            for c in ctx.columns(body.input)
        ]
        return exp.select(*items).from_(table(body.input))


class DeriveOp(Op):
    kind = "derive"
    sql_fields = {"columns": "expression"}

    def compile(self, body: m.Derive, ctx: OpContext) -> exp.Query:
        derived = {name: ctx.expression(text, body.input, "columns") for name, text in body.columns.items()}
        lowered = {k.lower(): k for k in derived}
        items: list[exp.Expr] = []
        for c in ctx.columns(body.input):
            if c.lower() in lowered:
                name = lowered.pop(c.lower())
                items.append(exp.alias_(derived[name], c, quoted=True))
            else:
                items.append(col(c))
        items += [exp.alias_(derived[name], name, quoted=True) for name in lowered.values()]
        return exp.select(*items).from_(table(body.input))


class JoinOp(Op):
    kind = "join"

    def compile(self, body: m.Join, ctx: OpContext) -> exp.Query:
        pairs = list(body.on.items()) if isinstance(body.on, dict) else [(k, k) for k in body.on]
        ctx.require(body.left, [left for left, _ in pairs], "on")
        ctx.require(body.right, [right for _, right in pairs], "on")
        condition = exp.and_(*[exp.EQ(this=col(a, "l"), expression=col(b, "r")) for a, b in pairs])
        left_cols, right_cols = ctx.columns(body.left), ctx.columns(body.right)
        shared_keys = {a.lower() for a, b in pairs if a.lower() == b.lower()}
        items: list[exp.Expr] = []
        for c in left_cols:
            if c.lower() in shared_keys and body.how in ("right", "full"):
                items.append(exp.alias_(exp.func("coalesce", col(c, "l"), col(c, "r")), c, quoted=True))
            else:
                items.append(col(c, "l"))
        if body.how not in ("semi", "anti"):
            taken = {c.lower() for c in left_cols}
            for c in right_cols:
                if c.lower() in shared_keys:
                    continue
                name = c if c.lower() not in taken else f"{c}_{body.right}"
                taken.add(name.lower())
                items.append(exp.alias_(col(c, "r"), name, quoted=True) if name != c else col(c, "r"))
        left = exp.alias_(table(body.left), "l", table=True)
        right = exp.alias_(table(body.right), "r", table=True)
        if body.how in ("semi", "anti"):
            exists = exp.Exists(this=exp.select(exp.Literal.number(1)).from_(right).where(condition))
            cond: exp.Expr = exists if body.how == "semi" else exp.Not(this=exists)
            return exp.select(*items).from_(left).where(cond)
        side = {"inner": None, "left": "LEFT", "right": "RIGHT", "full": "FULL"}[body.how]
        return exp.select(*items).from_(left).join(right, on=condition, join_type=side)


class UnionOp(Op):
    kind = "union"

    def compile(self, body: m.Union, ctx: OpContext) -> exp.Query:
        query: exp.Query = star_from(body.inputs[0])
        for other in body.inputs[1:]:
            query = exp.Union(
                this=query, expression=star_from(other), distinct=body.distinct, by_name=body.by_name or None
            )
        return query


class AggregateOp(Op):
    kind = "aggregate"
    sql_fields = {"measures": "expression"}

    def compile(self, body: m.Aggregate, ctx: OpContext) -> exp.Query:
        ctx.require(body.input, body.group_by, "group_by")
        measures = [
            exp.alias_(ctx.expression(text, body.input, "measures"), name, quoted=True)
            for name, text in body.measures.items()
        ]
        query = exp.select(*[col(c) for c in body.group_by], *measures).from_(table(body.input))
        if body.group_by:
            query = query.group_by(*[col(c) for c in body.group_by])
        return query


class DedupeOp(Op):
    kind = "dedupe"
    sql_fields = {"order_by": "order"}

    def compile(self, body: m.Dedupe, ctx: OpContext) -> exp.Query:
        if not body.keys:
            return star_from(body.input).distinct()
        ctx.require(body.input, body.keys, "keys")
        order = (
            order_terms(body.order_by, ctx, body.input, "order_by")
            if body.order_by
            else [exp.Ordered(this=col(c)) for c in ctx.columns(body.input)]
        )
        window = exp.Window(
            this=exp.RowNumber(), partition_by=[col(k) for k in body.keys], order=exp.Order(expressions=order)
        )
        return star_from(body.input).qualify(exp.EQ(this=window, expression=exp.Literal.number(1)))


class SortOp(Op):
    kind = "sort"
    sql_fields = {"by": "order"}

    def compile(self, body: m.Sort, ctx: OpContext) -> exp.Query:
        return star_from(body.input).order_by(*order_terms(body.by, ctx, body.input, "by"))


class LimitOp(Op):
    kind = "limit"

    def compile(self, body: m.Limit, ctx: OpContext) -> exp.Query:
        query = star_from(body.input).limit(body.n)
        return query.offset(body.offset) if body.offset else query


class PivotOp(Op):
    kind = "pivot"
    sql_fields = {"using": "expression"}

    def compile(self, body: m.Pivot, ctx: OpContext) -> exp.Query:
        ctx.require(body.input, [body.on, *body.group_by], "on")
        using = ctx.expression(body.using, body.input, "using")
        if body.values is None:
            # Values known only from the data: DuckDB's own PIVOT finds them at run time.
            text = (
                f"PIVOT {table(body.input).sql(DIALECT)} ON {col(body.on).sql(DIALECT)} "
                f"USING {using.sql(DIALECT)}"
            )
            if body.group_by:
                text += " GROUP BY " + ", ".join(col(c).sql(DIALECT) for c in body.group_by)
            pivot = sqlglot.parse_one(text, read=DIALECT)
            return exp.select(exp.Star()).from_(exp.Subquery(this=pivot))
        items: list[exp.Expr] = [col(c) for c in body.group_by]
        for value in body.values:
            literal = exp.Literal.string(value) if isinstance(value, str) else exp.Literal.number(value)
            agg = using.copy()
            items.append(
                exp.alias_(
                    exp.Filter(
                        this=agg, expression=exp.Where(this=exp.EQ(this=col(body.on), expression=literal))
                    ),
                    str(value),
                    quoted=True,
                )
            )
        query = exp.select(*items).from_(table(body.input))
        return query.group_by(*[col(c) for c in body.group_by]) if body.group_by else query


class UnpivotOp(Op):
    kind = "unpivot"

    def compile(self, body: m.Unpivot, ctx: OpContext) -> exp.Query:
        ctx.require(body.input, body.columns, "columns")
        cols = ", ".join(col(c).sql(DIALECT) for c in body.columns)
        text = (
            f"SELECT * FROM {table(body.input).sql(DIALECT)} UNPIVOT ({ident(body.value).sql(DIALECT)} "
            f"FOR {ident(body.name).sql(DIALECT)} IN ({cols}))"
        )
        return sqlglot.parse_one(text, read=DIALECT)  # type: ignore[return-value]
