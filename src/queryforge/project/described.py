"""What the project's YAML says its tables and columns mean, for the catalog, the docs and the planner.

A load step's `columns:` block (dbt's column docs) describes the columns of the table it publishes;
the step's description, or else its pipeline's, describes the table. The warehouse knows none of
this, so it is read from the pipeline files (already parsed by the graph scan) and laid over what a
connection's introspection returns.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..catalog.cache import CatalogEntry
from ..errors import QueryForgeError
from ..spec import models as m
from .graph import ProjectGraph

MAX_DESCRIPTION = 500  # characters of a description kept for display and prompts


@dataclass(frozen=True)
class TableDoc:
    """The documentation of one published table: who publishes it and what it and its columns mean."""

    pipeline: str
    step: str
    connection: str
    table: str
    mode: str
    description: str | None = None
    columns: dict[str, str] = field(default_factory=dict)  # column -> description
    checks: dict[str, list[str]] = field(default_factory=dict)  # column -> rule names


def _clip(text: str | None) -> str | None:
    if not text:
        return None
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_DESCRIPTION else flat[: MAX_DESCRIPTION - 1] + "…"


def _rule_names(checks: list[str | dict[str, object]]) -> list[str]:
    return [c if isinstance(c, str) else next(iter(c), "?") for c in checks]


def table_docs(graph: ProjectGraph, default_target: str) -> dict[tuple[str, str], TableDoc]:
    """(connection, lower-cased table) -> its documentation, for every table a pipeline loads.

    A pipeline file that does not parse documents nothing (its error is reported where it runs).
    """
    out: dict[tuple[str, str], TableDoc] = {}
    for node in graph.nodes.values():
        try:
            pipeline = node.load().bind(None).pipeline
        except QueryForgeError:
            continue
        for step in pipeline.steps:
            if pipeline.ephemeral or not isinstance(step, m.LoadStep) or not step.load.table:
                continue
            load, table = step.load, step.load.table
            connection = load.connection or default_target
            columns = load.columns or {}
            out[(connection, table.lower())] = TableDoc(
                pipeline=pipeline.name,
                step=step.id,
                connection=connection,
                table=table,
                mode=load.mode,
                description=_clip(step.description or pipeline.description),
                columns={c: d for c, doc in columns.items() if (d := _clip(doc.description))},
                checks={c: _rule_names(doc.checks) for c, doc in columns.items() if doc.checks},
            )
    return out


def describe_catalog(entry: CatalogEntry, docs: dict[tuple[str, str], TableDoc]) -> CatalogEntry:
    """The catalog entry with the project's descriptions on the tables it publishes."""
    tables = []
    changed = False
    for t in entry.tables:
        doc = docs.get((entry.connection, t.qualified.lower())) or docs.get(
            (entry.connection, t.name.lower())
        )
        if doc is None:
            tables.append(t)
            continue
        changed = True
        lowered = {c.lower(): d for c, d in doc.columns.items()}
        columns = tuple(dataclasses.replace(c, description=lowered.get(c.name.lower())) for c in t.columns)
        tables.append(dataclasses.replace(t, description=doc.description, columns=columns))
    return dataclasses.replace(entry, tables=tuple(tables)) if changed else entry
