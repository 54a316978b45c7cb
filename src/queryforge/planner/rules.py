"""The offline, deterministic planner: plain English to a pipeline, by a semantic parse over the catalog.

`nl.parse` links the request's words to sources, columns, values and dates and builds the
intermediate form; `nl.compile` writes the pipeline and the reading. When the request cannot be
fully accounted for, the parse raises `PlannerQuestion` instead of guessing.
"""

from __future__ import annotations

from .context import PlannerContext
from .draft import Draft, PlannerQuestion
from .nl.compile import pipeline, reading
from .nl.parse import parse

__all__ = ["Draft", "PlannerQuestion", "RulesPlanner"]


class RulesPlanner:
    """Draft a pipeline from a request and the catalog, offline."""

    name = "rules"

    def draft(self, request: str, ctx: PlannerContext) -> Draft:
        req = parse(request, ctx)
        spec = pipeline(req)
        spec["description"] = " ".join(request.split())[:200]
        return Draft(pipeline=spec, notes=list(req.notes), reading=reading(req), unused=req.unused)
