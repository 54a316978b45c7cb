"""Ad-hoc queries (`queryforge query`, extract queries of `ask` drafts): vet, then cap.

The rules themselves live in `policy.py` (the allow-list) and are applied by `parse.py`, the one
entry for user SQL. This module adds what only ad-hoc queries need: a default LIMIT on plain
listings (a rewrite, reported as such). It imports nothing of ours outside `sql/`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlglot import exp

from .parse import parse_expression, parse_order, parse_select
from .policy import DIALECT, SqlProblem, UnsafeSql

DEFAULT_PREVIEW_LIMIT = 1000

__all__ = [
    "DEFAULT_PREVIEW_LIMIT",
    "UnsafeSql",
    "Verdict",
    "check_expression",
    "check_order",
    "check_query",
    "vet_preview",
]


@dataclass
class Verdict:
    """What the policy decided: the (possibly rewritten) SQL and the reasons for any rewrite."""

    sql: str
    decision: str  # "allow" | "rewrite"
    reasons: list[str] = field(default_factory=list)
    tree: exp.Query | None = None

    def text_for(self, dialect: str) -> str:
        """The vetted query written for `dialect` from its tree (re-parsing `sql` could lose meaning)."""
        return self.tree.sql(dialect=dialect) if self.tree is not None else self.sql


def _unsafe(exc: SqlProblem) -> UnsafeSql:
    return exc if isinstance(exc, UnsafeSql) else UnsafeSql(str(exc))


def check_query(
    sql: str, *, allowed_tables: Iterable[str] | None = None, dialect: str = DIALECT
) -> exp.Query:
    """Parse and vet one read-only query; raises UnsafeSql with the reason."""
    try:
        return parse_select(sql, dialect=dialect, allowed_tables=allowed_tables)
    except SqlProblem as exc:
        raise _unsafe(exc) from None


def vet_preview(
    sql: str,
    *,
    allowed_tables: Iterable[str] | None = None,
    limit: int = DEFAULT_PREVIEW_LIMIT,
    dialect: str = DIALECT,
) -> Verdict:
    """An ad-hoc query: vetted, and capped with a LIMIT when it is a plain (non-aggregated) listing."""
    query = check_query(sql, allowed_tables=allowed_tables, dialect=dialect)
    aggregated = isinstance(query, exp.Select) and (
        query.args.get("group") is not None
        or any(isinstance(e.unalias(), exp.AggFunc) for e in query.expressions)
    )
    if not aggregated and query.args.get("limit") is None:
        capped = (
            query.limit(limit)
            if isinstance(query, exp.Select)
            else exp.select(exp.Star()).from_(query.subquery("listing")).limit(limit)
        )
        return Verdict(
            sql=capped.sql(DIALECT),
            decision="rewrite",
            reasons=[f"added LIMIT {limit} to an ad-hoc listing"],
            tree=capped,
        )
    return Verdict(sql=query.sql(DIALECT), decision="allow", tree=query)


def check_expression(text: str, *, dialect: str = DIALECT) -> None:
    """A step's expression (filter, derive, measure): the same allow-list, and no table reads."""
    try:
        parse_expression(text, dialect=dialect)
    except SqlProblem as exc:
        raise _unsafe(exc) from None


def check_order(text: str) -> None:
    """A sort term list (`sort.by`, `dedupe.order_by`): the same allow-list, and no table reads."""
    try:
        parse_order(text)
    except SqlProblem as exc:
        raise _unsafe(exc) from None
