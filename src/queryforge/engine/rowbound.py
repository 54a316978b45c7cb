"""A bound on the rows a query makes, read from its syntax tree: what the engine's plan misses.

DuckDB's EXPLAIN gives every operator an estimated cardinality, but it estimates `UNNEST` at one
row per input row whatever it unnests, and leaves cross products unestimated when nothing sits
above them. A cost gate that trusts those numbers lets `SELECT unnest(range(200000000))` or a
chain of cross joins through. This module computes, from the sqlglot tree alone, the rows such a
query produces at its largest step: constant-bounded row generators (`range`, `generate_series`
over numbers, dates or timestamps, `repeat`, `unnest` of those or of a list; counted by
`sql/generators.py`, as the policy counts them) count in full, joins without an equality
condition multiply their inputs, and unions add. Table sizes come from a callback; unknown sizes
count as one row, so the bound is "at least this much", to be combined with the plan's own
estimate (the larger wins).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlglot import exp

from ..sql.generators import generated_rows

__all__ = ["Rows", "RowsOf", "generated_rows", "row_bound"]

RowsOf = Callable[[str], int | None]
"""Rows of a named table or view (lower-case name), or None when unknown."""


@dataclass(frozen=True)
class Rows:
    out: int  # rows the query returns
    peak: int  # rows at its largest step (a cross product under a count(*) is large, its output is 1)


def row_bound(query: exp.Expr, rows_of: RowsOf) -> int:
    """Rows `query` handles at its largest step, counting row generators with constant bounds."""
    return _query(query, rows_of, {}).peak


def _number(node: exp.Expression | None) -> float | None:
    if isinstance(node, exp.Literal) and not node.is_string:
        try:
            return float(node.this)
        except ValueError:
            return None
    if isinstance(node, exp.Neg):
        inner = _number(node.this)
        return None if inner is None else -inner
    if isinstance(node, exp.Cast | exp.Paren):
        return _number(node.this)
    return None


def _query(node: exp.Expr, rows_of: RowsOf, ctes: dict[str, int]) -> Rows:
    if isinstance(node, exp.Subquery | exp.Paren):
        return _query(node.this, rows_of, ctes)
    if isinstance(node, exp.SetOperation):
        local = _with(node, rows_of, ctes)
        left = _query(node.left, rows_of, local)
        right = _query(node.right, rows_of, local)
        out = left.out + right.out
        return Rows(out, max(left.peak, right.peak, out))
    if isinstance(node, exp.Select):
        return _select(node, rows_of, ctes)
    return Rows(1, 1)


def _with(node: exp.Expr, rows_of: RowsOf, ctes: dict[str, int]) -> dict[str, int]:
    """The CTEs of `node` (each bounded in order, so later ones see earlier ones) over the outer ones."""
    local = dict(ctes)
    with_ = node.args.get("with_") or node.args.get("with")
    for cte in with_.expressions if with_ else []:
        local[cte.alias_or_name.lower()] = _query(cte.this, rows_of, local).out
    return local


def _select(select: exp.Select, rows_of: RowsOf, ctes: dict[str, int]) -> Rows:
    local = _with(select, rows_of, ctes)
    peak = 0
    from_ = select.args.get("from_") or select.args.get("from")
    rows = 1
    if from_ is not None:
        first = _source(from_.this, rows_of, local)
        rows, peak = first.out, first.peak
    for join in select.args.get("joins") or []:
        right = _source(join.this, rows_of, local)
        peak = max(peak, right.peak)
        if (join.args.get("kind") or "").upper() in ("SEMI", "ANTI"):
            continue
        rows = max(rows, right.out) if _keyed(join, select) else rows * right.out
        peak = max(peak, rows)
    factor = max((_unnested(e) for e in select.expressions), default=1)
    rows *= factor
    peak = max(peak, rows, _inner_peak(select, rows_of, local))
    if select.args.get("group") is None and any(
        isinstance(e.unalias(), exp.AggFunc) for e in select.expressions
    ):
        rows = 1
    limit = select.args.get("limit")
    cap = _number(limit.expression) if isinstance(limit, exp.Limit) else None
    if cap is not None:
        rows = min(rows, max(0, int(cap)))
    return Rows(rows, peak)


def _source(node: exp.Expression, rows_of: RowsOf, ctes: dict[str, int]) -> Rows:
    """Rows of one FROM/JOIN item: a table, a view, a CTE, a subquery or a row generator."""
    if isinstance(node, exp.Subquery):
        return _query(node.this, rows_of, ctes)
    if isinstance(node, exp.Unnest):
        n = max((m for m in map(generated_rows, node.expressions) if m is not None), default=1)
        return Rows(n, n)
    if isinstance(node, exp.Table):
        if not isinstance(node.this, exp.Identifier):  # a table function: range(...), read_csv(...)
            made: int | None = generated_rows(node.this)
        elif node.name.lower() in ctes and not node.args.get("db"):
            made = ctes[node.name.lower()]
        else:
            made = rows_of(".".join(p.name.lower() for p in node.parts))
        return Rows(made or 1, made or 1)  # 0 too: a scratch table stands empty for data to come
    return Rows(1, 1)  # LATERAL and other correlated items: unknown here, the plan estimates them


def _keyed(join: exp.Join, select: exp.Select) -> bool:
    """Whether a join matches rows on equal columns (a hash join, not a product of its inputs)."""
    if join.args.get("using") or (join.args.get("method") or "").upper() in ("NATURAL", "POSITIONAL"):
        return True
    if (join.args.get("kind") or "").upper() == "CROSS":
        return False
    on = join.args.get("on")
    if on is None:  # `FROM a, b WHERE a.x = b.x`: the WHERE carries the key
        where = select.args.get("where")
        on = where.this if where is not None else None
    conjuncts = list(on.flatten()) if isinstance(on, exp.And) else [on] if on is not None else []
    return any(
        isinstance(c, exp.EQ) and isinstance(c.this, exp.Column) and isinstance(c.expression, exp.Column)
        for c in conjuncts
    )


def _unnested(expression: exp.Expression) -> int:
    """How many rows each input row becomes through the UNNESTs in one select item (1 if none)."""
    factor = 1
    for node in expression.walk(prune=lambda n: isinstance(n, exp.Query)):
        if isinstance(node, exp.Explode | exp.Unnest):
            inner = node.this if isinstance(node, exp.Explode) else next(iter(node.expressions), None)
            made = generated_rows(inner) if inner is not None else None
            factor = max(factor, made or 1)
    return factor


def _inner_peak(select: exp.Select, rows_of: RowsOf, ctes: dict[str, int]) -> int:
    """The largest step of subqueries in the select list, WHERE or HAVING (they run too)."""
    peak = 0
    for key in ("expressions", "where", "having"):
        value = select.args.get(key)
        for part in value if isinstance(value, list) else [value] if value is not None else []:
            for sub in part.find_all(exp.Subquery):
                peak = max(peak, _query(sub.this, rows_of, ctes).peak)
    return peak
