"""Never destroy, never guess: where a drafted pipeline may write, whichever provider drafted it.

A draft may write to a table the request names as its destination, or to a new table whose name
the planner derived and shows. It never replaces, appends to or merges into an existing table
unless the request names that table and says so in words ("replace", "append", "merge into"),
and never writes into one of its own sources. Anything else is a question, not a publish.
"""

from __future__ import annotations

import re
from typing import Any

from .context import PlannerContext
from .draft import PlannerQuestion

MODE_WORDS = {
    "replace": r"replac\w*|overwrit\w*|refresh\w*|rebuild\w*|recreat\w*|reload\w*|truncate and load|"
    r"start over",
    "append": r"append\w*|add\w*|insert\w*",
    "merge": r"merg\w*|upsert\w*|updat\w*|sync\w*",
}


def _bare(name: str) -> str:
    return name.strip('"`').rsplit(".", 1)[-1].lower()


def named_in(request: str, table: str) -> bool:
    """The request spells the table's name as a word of its own ('orders', 'analytics.orders')."""
    low = request.lower()
    return bool(re.search(rf"(?<![\w.]){re.escape(table.lower())}(?![\w])", low)) or bool(
        re.search(rf"(?<![\w]){re.escape(_bare(table))}(?![\w.])", low)
    )


def check_destinations(request: str, pipeline: dict[str, Any], ctx: PlannerContext) -> None:
    existing = {
        _bare(s.table or ""): s
        for s in ctx.tables()
        if s.table and not s.path and s.connection == ctx.target_connection
    }
    steps = [s for s in pipeline.get("steps") or [] if isinstance(s, dict)]
    read = {
        _bare(str(s["extract"].get("table")))
        for s in steps
        if isinstance(s.get("extract"), dict)
        and s["extract"].get("table")
        and not s["extract"].get("path")
        and s["extract"].get("connection") in (None, ctx.target_connection)
    }
    for step in steps:
        load = step.get("load")
        if not isinstance(load, dict) or not isinstance(load.get("table"), str):
            continue
        if load.get("connection") not in (None, ctx.target_connection):
            continue  # another connection's targets are checked by its own permissions
        table = load["table"]
        bare = _bare(table)
        mode = str(load.get("mode") or "replace")
        if bare in read:
            raise PlannerQuestion(
                f"The draft would write into {table}, which it also reads. I never load over a source",
                hint=f"name a new table for the result ('... into {bare}_clean')",
                candidates=[f"{bare}_new", f"{bare}_clean"],
            )
        if bare not in existing:
            continue
        if not named_in(request, table):
            raise PlannerQuestion(
                f"The draft would {mode} the existing table {table}, which the request does not name "
                "as its destination",
                hint="name the destination table in the request, or a new one",
                candidates=[f"into {bare}_new"],
            )
        if not re.search(rf"\b(?:{MODE_WORDS.get(mode, mode)})\b", request, re.I):
            verb = {"replace": "replace", "append": "append to", "merge": "merge into"}.get(mode, mode)
            raise PlannerQuestion(
                f"{table} already exists. Should I replace it, append to it, or write a new table?",
                hint=f"say it in the request: 'replace {bare} with ...', 'append ... to {bare}', "
                f"'merge ... into {bare} on <key>', or name a new table",
                candidates=[f"{verb} {bare}", f"append to {bare}", f"a new table such as {bare}_new"],
            )
