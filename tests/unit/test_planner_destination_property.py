"""Property: whatever the request and the catalog, a draft never destroys.

For random catalogs (files and warehouse tables with random names and columns, stems shared
between them on purpose) and random requests assembled from loading verbs, names of things in
the catalog, conditions and destination phrases, the offline planner followed by the destination
rule (what `AskService.ask` runs) either asks (`PlannerQuestion`) or drafts a pipeline whose load

* never writes into a table the pipeline also reads, and
* writes into an existing warehouse table only when the request names that table and says the
  write mode in words (replace/overwrite..., append/add..., merge/upsert...).

The expectations are computed here from the request text and the catalog, not by calling the
guard's helpers, so the test checks the guard rather than restating it.
"""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from queryforge.planner.context import PlannerContext, Source
from queryforge.planner.draft import PlannerQuestion
from queryforge.planner.guard import check_destinations
from queryforge.planner.rules import RulesPlanner

WAREHOUSE = "warehouse"
NAMES = ["orders", "customers", "sales", "events", "accounts", "items", "clients", "orders_2026", "report"]
COLUMNS = [
    ("id", "BIGINT"),
    ("amount", "DOUBLE"),
    ("status", "VARCHAR"),
    ("country", "VARCHAR"),
    ("created", "DATE"),
    ("customer_id", "BIGINT"),
]
MODE_WORDS = {
    "replace": r"replac\w*|overwrit\w*|refresh\w*|rebuild\w*|recreat\w*|reload\w*",
    "append": r"append\w*|add\w*|insert\w*",
    "merge": r"merg\w*|upsert\w*|updat\w*|sync\w*",
}


@st.composite
def catalogs(draw: st.DrawFn) -> PlannerContext:
    file_names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3, unique=True))
    table_names = draw(st.lists(st.sampled_from(NAMES), min_size=0, max_size=4, unique=True))
    sources: list[Source] = []
    for name in file_names:
        cols = tuple(draw(st.lists(st.sampled_from(COLUMNS), min_size=2, max_size=6, unique=True)))
        domains = {"status": ("shipped", "cancelled")} if ("status", "VARCHAR") in cols else {}
        sources.append(
            Source(
                name=f"data/{name}.csv", kind="file", columns=cols, path=f"data/{name}.csv", domains=domains
            )
        )
    for name in table_names:
        cols = tuple(draw(st.lists(st.sampled_from(COLUMNS), min_size=2, max_size=6, unique=True)))
        sources.append(Source(name=name, kind="table", columns=cols, connection=WAREHOUSE, table=name))
    return PlannerContext(sources=tuple(sources), target_connection=WAREHOUSE)


@st.composite
def requests(draw: st.DrawFn) -> str:
    verb = draw(
        st.sampled_from(["Load", "Copy", "Put", "Replace", "Append", "Merge", "Overwrite", "Take", ""])
    )
    src = draw(st.sampled_from([f"{n}.csv" for n in NAMES] + NAMES + [f"the {n} table" for n in NAMES]))
    cond = draw(
        st.sampled_from(
            ["", " where amount > 10", " shipped only", " per country", " not cancelled", " top 5 by amount"]
        )
    )
    dest = draw(
        st.sampled_from(
            [""]
            + [f" into {n}" for n in NAMES]
            + [f" as a table called {n}" for n in NAMES]
            + [f", replacing {n}" for n in NAMES]
            + [f" and append it to {n}" for n in NAMES]
            + [f" on id into {n}" for n in NAMES]
        )
    )
    return f"{verb} {src}{cond}{dest}".strip()


def draft_or_question(request: str, ctx: PlannerContext) -> dict | None:
    """What AskService.ask does before any gate: draft, then the destination rule."""
    try:
        draft = RulesPlanner().draft(request, ctx)
        check_destinations(request, draft.pipeline, ctx)
    except PlannerQuestion:
        return None
    return draft.pipeline


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ctx=catalogs(), request=requests())
def test_a_draft_never_writes_where_it_reads_or_over_a_table_not_named(
    ctx: PlannerContext, request: str
) -> None:
    pipeline = draft_or_question(request, ctx)
    if pipeline is None:
        return
    steps = pipeline["steps"]
    loads = [s["load"] for s in steps if "load" in s]
    assert len(loads) == 1
    target = loads[0]["table"].lower()
    mode = loads[0].get("mode", "replace")
    read_tables = {
        str(s["extract"].get("table")).lower()
        for s in steps
        if "extract" in s and s["extract"].get("table") and not s["extract"].get("path")
    }
    assert target not in read_tables, f"{request!r} loads into its own source {target}"
    existing = {(s.table or "").lower() for s in ctx.tables()}
    if target in existing:
        named = re.search(rf"(?<![\w.]){re.escape(target)}(?![\w])", request.lower())
        said = re.search(rf"\b(?:{MODE_WORDS[mode]})\b", request, re.I)
        assert named, f"{request!r} writes into existing {target} without naming it"
        assert said, f"{request!r} does {mode} into existing {target} without saying so"


@settings(max_examples=150, deadline=None)
@given(ctx=catalogs(), request=requests())
def test_a_draft_always_names_its_destination_in_the_request(ctx: PlannerContext, request: str) -> None:
    """The offline planner no longer invents a destination: the table it writes is one the request names."""
    pipeline = draft_or_question(request, ctx)
    if pipeline is None:
        return
    target = next(s["load"]["table"] for s in pipeline["steps"] if "load" in s)
    assert re.search(rf"(?<![\w.]){re.escape(target.lower())}(?![\w])", request.lower()), (request, target)
