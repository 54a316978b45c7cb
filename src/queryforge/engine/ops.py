"""Built-in transform ops: each compiles its step body to one sqlglot query over its inputs.

An op is a small class in a registry, found by the step kind. Inputs are referenced as tables
named by their step ids; every op gets the input schemas so it can name columns explicitly
(which keeps the SQL portable across engines) and report unknown columns with a suggestion.
"""

from __future__ import annotations

import math
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


# Aggregates DuckDB knows under names sqlglot does not (they parse as plain function calls): the
# allow-listed ones (sql/functions/duckdb.txt) that duckdb_functions() calls aggregates.
ANONYMOUS_AGGREGATES = frozenset(
    {
        "arbitrary",
        "arg_max_null",
        "arg_max_nulls_last",
        "arg_min_null",
        "arg_min_nulls_last",
        "bitstring_agg",
        "count_star",
        "entropy",
        "favg",
        "fsum",
        "histogram",
        "histogram_exact",
        "kahan_sum",
        "kurtosis_pop",
        "mad",
        "mean",
        "product",
        "reservoir_quantile",
        "sem",
        "sum_no_overflow",
        "sumkahan",
    }
)
# sqlglot's aggregate classes that aggregate no group of rows: window-only functions, and GROUPING().
NOT_GROUP_AGGREGATES: tuple[type[exp.Expr], ...] = (
    exp.Lag,
    exp.Lead,
    exp.Rank,
    exp.DenseRank,
    exp.CumeDist,
    exp.PercentRank,
    exp.Ntile,
    exp.FirstValue,
    exp.LastValue,
    exp.NthValue,
    exp.Grouping,
    exp.GroupingId,
)
# What belongs to an aggregate call around it: `IGNORE NULLS`, `WITHIN GROUP (...)`, `FILTER (...)`.
AGGREGATE_PARTS = (exp.IgnoreNulls, exp.RespectNulls, exp.WithinGroup, exp.Filter)
USING_EXAMPLES = "sum(amount), count(*), coalesce(sum(amount), 0) or sum(amount) / count(*)"


def is_group_aggregate(node: exp.Expr) -> bool:
    if isinstance(node, exp.Anonymous):
        return node.name.lower() in ANONYMOUS_AGGREGATES
    return isinstance(node, exp.AggFunc) and not isinstance(node, NOT_GROUP_AGGREGATES)


def group_aggregates(expression: exp.Expr) -> list[exp.Expr]:
    """The calls in `expression` that aggregate a group's rows, each as its outermost node (with its
    IGNORE NULLS, WITHIN GROUP and FILTER). A window function (`sum(...) OVER (...)`) runs over the
    grouped rows instead: it is not one, but the aggregates in its arguments are."""
    found: list[exp.Expr] = []
    for node in expression.walk():
        if not is_group_aggregate(node):
            continue
        top = node
        while isinstance(top.parent, AGGREGATE_PARTS) and top.arg_key == "this":
            top = top.parent
        if isinstance(top.parent, exp.Window) and top.arg_key == "this":
            continue
        found.append(top)
    return found


def pivot_literal(value: str | int | float | bool) -> exp.Expr:
    """A value of `values:` or `fill:` as a typed SQL literal."""
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, str):
        return exp.Literal.string(value)
    if isinstance(value, float) and not math.isfinite(value):
        text = "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
        return exp.Cast(this=exp.Literal.string(text), to=exp.DataType.build("DOUBLE"))
    return exp.Literal.number(value)


def filtered(using: exp.Expr, condition: exp.Expr) -> exp.Expr:
    """`using` with `FILTER (WHERE condition)` on each of its group aggregates (ANDed to a FILTER
    already there), so that every aggregate reads only the rows of one pivot value."""
    root = using.copy()
    for top in group_aggregates(root):
        where = top.args.get("expression") if isinstance(top, exp.Filter) else None
        if isinstance(where, exp.Where):
            where.set("this", exp.and_(where.this, condition.copy()))
            continue
        wrapped = exp.Filter(this=top.copy(), expression=exp.Where(this=condition.copy()))
        if top is root:
            root = wrapped
        else:
            top.replace(wrapped)
    return root


class PivotOp(Op):
    """One column per value of `on`, one row per `group_by` combination.

    With `values` listed: a GROUP BY whose items are `using` with a FILTER on each aggregate in it,
    so any aggregate expression works (`coalesce(sum(x), 0)`, `sum(a) / count(*)`, windows over
    aggregates). Without: DuckDB's own `PIVOT ... USING`, which finds the values in the data but
    takes an expression with exactly one aggregate and no window, and names columns `{value}` or
    `{value}_<alias>` only.
    """

    kind = "pivot"
    sql_fields = {"using": "expression"}

    def compile(self, body: m.Pivot, ctx: OpContext) -> exp.Query:
        ctx.require(body.input, [body.on], "on")
        ctx.require(body.input, body.group_by, "group_by")
        using = ctx.expression(body.using, body.input, "using")
        self.vet_using(body, using, ctx)
        if body.values is None:
            return self.dynamic(body, using, ctx)
        items: list[exp.Expr] = [col(c) for c in body.group_by]
        for value, name in zip(body.values, self.names(body, ctx), strict=True):
            cell = filtered(using, exp.EQ(this=col(body.on), expression=pivot_literal(value)))
            items.append(exp.alias_(self.filled(cell, body), name, quoted=True))
        query = exp.select(*items).from_(table(body.input))
        return query.group_by(*[col(c) for c in body.group_by]) if body.group_by else query

    @staticmethod
    def filled(cell: exp.Expr, body: m.Pivot) -> exp.Expr:
        return cell if body.fill is None else exp.func("coalesce", cell, pivot_literal(body.fill))

    @staticmethod
    def vet_using(body: m.Pivot, using: exp.Expr, ctx: OpContext) -> None:
        tops = group_aggregates(using)
        if not tops:
            raise SpecError(
                f"Step '{ctx.step_id}': `using` needs an aggregate, and {body.using!r} has none",
                where=ctx.where("using"),
                hint=f"each cell aggregates the rows of its group and value: write e.g. {USING_EXAMPLES}",
            )
        for top in tops:
            outer = top.parent
            while outer is not None and not any(outer is other for other in tops):
                outer = outer.parent
            if outer is not None:
                raise SpecError(
                    f"Step '{ctx.step_id}': `using` nests an aggregate in another "
                    f"({outer.sql(DIALECT)[:80]})",
                    where=ctx.where("using"),
                    hint="aggregate calls cannot be nested; over aggregates, use a window: "
                    "sum(amount) / sum(sum(amount)) OVER ()",
                )

    @staticmethod
    def template(body: m.Pivot, ctx: OpContext) -> str:
        template = body.name if body.name is not None else "{value}"
        rest = template.replace("{value}", "")
        if "{value}" not in template or "{" in rest or "}" in rest:
            raise SpecError(
                f"Step '{ctx.step_id}': the column name template {template!r} "
                + ("has no {value}" if "{value}" not in template else "has braces other than {value}"),
                where=ctx.where("name"),
                hint="name the columns with a template that contains {value} once or more, "
                "e.g. '{value}_amount' or 'amount_{value}'",
            )
        return template

    def names(self, body: m.Pivot, ctx: OpContext) -> list[str]:
        """The output column of each listed value: the template with {value} replaced."""
        assert body.values is not None
        template = self.template(body, ctx)
        names = [template.replace("{value}", str(value)) for value in body.values]
        taken = {c.lower(): f"the group_by column '{c}'" for c in body.group_by}
        for value, name in zip(body.values, names, strict=True):
            if not name.strip():
                raise SpecError(
                    f"Step '{ctx.step_id}': the value {value!r} gives a column with an empty name",
                    where=ctx.where("values"),
                    hint="name the columns with a template around {value}, e.g. name: 'status_{value}'",
                )
            clash = taken.get(name.lower())
            if clash is not None:
                raise SpecError(
                    f"Step '{ctx.step_id}': the value {value!r} gives the column name '{name}', "
                    f"which {clash} has already (column names ignore case)",
                    where=ctx.where("name" if body.name is not None else "values"),
                    hint="list each value once, and pick a template that keeps the names apart, "
                    "e.g. name: '{value}_amount'",
                )
            taken[name.lower()] = f"the value {value!r}"
        return names

    def dynamic(self, body: m.Pivot, using: exp.Expr, ctx: OpContext) -> exp.Query:
        """Values known only from the data: DuckDB's own PIVOT finds them at run time."""
        template = self.template(body, ctx)
        tops = group_aggregates(using)
        windows = list(using.find_all(exp.Window))
        if len(tops) != 1 or windows:
            found = (
                f"a window function ({windows[0].sql(DIALECT)[:60]})"
                if windows
                else f"{len(tops)} aggregates ({', '.join(t.sql(DIALECT)[:40] for t in tops)})"
            )
            raise SpecError(
                f"Step '{ctx.step_id}': without `values:`, `using` may hold exactly one aggregate "
                f"and no window function (DuckDB's PIVOT finds the values then), and "
                f"{body.using!r} has {found}",
                where=ctx.where("using"),
                hint=f"list the values of '{body.on}' that become columns under `values:`; then "
                f"`using` may be any aggregate expression",
            )
        alias = None
        if template != "{value}":
            suffix = template[len("{value}_") :]
            if not template.startswith("{value}_") or not suffix or "{value}" in suffix:
                raise SpecError(
                    f"Step '{ctx.step_id}': without `values:`, the columns can be named only "
                    f"'{{value}}' or '{{value}}_<suffix>' (as DuckDB's PIVOT names them), not {template!r}",
                    where=ctx.where("name"),
                    hint=f"list the values of '{body.on}' that become columns under `values:` to "
                    f"name them {template!r}, or use name: '{{value}}_<suffix>'",
                )
            alias = suffix
        cell = self.filled(using, body).sql(DIALECT)
        text = f"PIVOT {table(body.input).sql(DIALECT)} ON {col(body.on).sql(DIALECT)} USING {cell}" + (
            f" AS {ident(alias).sql(DIALECT)}" if alias is not None else ""
        )
        if body.group_by:
            text += " GROUP BY " + ", ".join(col(c).sql(DIALECT) for c in body.group_by)
        pivot = sqlglot.parse_one(text, read=DIALECT)
        return exp.select(exp.Star()).from_(exp.Subquery(this=pivot))


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
