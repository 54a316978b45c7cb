"""The offline, deterministic planner: plain English to a pipeline, by a semantic parse over the catalog.

`nl.parse` links the request's words to sources, columns, values and dates and builds the
intermediate form; `nl.compile` writes the pipeline and the reading. When the request cannot be
fully accounted for, the parse raises `PlannerQuestion` instead of guessing.
"""

from __future__ import annotations

from typing import Any

from .context import PlannerContext, Source
from .draft import Draft, PlannerQuestion
from .nl.compile import pipeline, reading
from .nl.parse import parse
from .nl.tokens import singular

__all__ = ["Draft", "PlannerQuestion", "RulesPlanner"]


class RulesPlanner:
    """Draft a pipeline from a request and the catalog, offline."""

    name = "rules"

    def draft(self, request: str, ctx: PlannerContext) -> Draft:
        req = parse(request, ctx)
        spec = pipeline(req)
        dropped = [s for s in req.named if not extracted(spec, s) and not by_key(req, s)]
        if dropped:
            names = " and ".join(s.name for s in dropped)
            raise PlannerQuestion(
                f"I did not use {names}, which the request names: my reading is '{reading(req)}', and I "
                f"won't guess how {names} fits in",
                hint="say how the sources combine ('joined on <column>', 'stacked', 'not in <file> by "
                "<column>'), or leave out the source that is not needed",
            )
        spec["description"] = " ".join(request.split())[:200]
        return Draft(pipeline=spec, notes=list(req.notes), reading=reading(req), unused=req.unused)


def extracted(spec: dict[str, Any], source: Source) -> bool:
    """Whether a step of the pipeline reads the source."""
    for step in spec.get("steps", []):
        ex = step.get("extract") or {}
        if source.path is not None:
            if ex.get("path") == source.path and source.table in (None, ex.get("table")):
                return True
        elif ex.get("table") in (source.table, source.name) and (
            source.connection is None or ex.get("connection") in (None, source.connection)
        ):
            return True
    return False


def by_key(req: Any, source: Source) -> bool:
    """Whether the result stands for the source's rows by their key: 'top 3 products by revenue from
    orders.csv and products.csv' groups the orders by product_id."""
    key = f"{singular(source.stem.lower())}_id"
    return any(g.col.name.lower() == key for g in req.group) or any(c.name.lower() == key for c in req.select)
