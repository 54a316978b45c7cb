"""What `queryforge docs build` documents: every pipeline, the tables it publishes, checks, lineage, runs.

Gathered once into plain data (`ProjectDocs.to_json()`), so the static site, a `--json` dump and the
future UI read the same thing. Each pipeline is compiled the way `validate` compiles a project (refs
resolved through the graph), so column types are known before anything has run; a pipeline that
does not compile is documented with its error instead of failing the whole build.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from ..errors import QueryForgeError
from ..runs.plan import CheckStage, ExecutionPlan, StageLoadStage
from ..spec import models as m
from ..store import RunRecord
from .described import table_docs
from .graph import ProjectGraph, shown
from .refs import ProjectRefs

RUNS_SHOWN = 5


@dataclass(frozen=True)
class ColumnEntry:
    name: str
    type: str
    description: str | None = None
    checks: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TableEntry:
    key: str  # connection.table: the page's name
    connection: str
    table: str
    pipeline: str
    step: str
    mode: str
    description: str | None
    columns: list[ColumnEntry]
    read_by: list[str]


@dataclass(frozen=True)
class StepEntry:
    id: str
    kind: str
    description: str | None
    inputs: list[str]


@dataclass(frozen=True)
class RunEntry:
    id: str
    status: str
    started_at: str | None
    duration_s: float | None
    rows: int | None
    checks_passed: int | None
    checks_failed: int | None
    error: str | None


@dataclass(frozen=True)
class PipelineEntry:
    name: str
    path: str
    description: str | None
    tags: list[str]
    upstream: list[str]  # pipelines it reads, directly
    downstream: list[str]  # pipelines that read it, directly
    steps: list[StepEntry]
    checks: list[dict[str, Any]]  # {step, input, rule, column, severity}
    tables: list[str]  # keys of the tables it publishes
    runs: list[RunEntry]
    last_success: str | None  # when it last published: its freshness
    error: str | None = None  # the pipeline does not compile: why
    ephemeral: bool = False  # publishes nothing: inlined into the pipelines that read it


@dataclass
class ProjectDocs:
    generated_at: str
    pipelines: list[PipelineEntry]
    tables: list[TableEntry]
    edges: list[tuple[str, str]]  # (upstream, downstream)
    skipped: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "generated_at": self.generated_at,
            "pipelines": [asdict(p) for p in self.pipelines],
            "tables": [asdict(t) for t in self.tables],
            "edges": [{"from": a, "to": b} for a, b in self.edges],
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def run_entry(run: RunRecord) -> RunEntry:
    result = run.result or {}
    loads = result.get("loads") or []
    checks = result.get("checks") or {}
    duration = (run.ended_at - run.started_at).total_seconds() if run.ended_at and run.started_at else None
    return RunEntry(
        id=run.id,
        status=run.status,
        started_at=_iso(run.started_at or run.created_at),
        duration_s=round(duration, 3) if duration is not None else None,
        rows=sum(int(x.get("rows") or 0) for x in loads) if loads else None,
        checks_passed=checks.get("passed"),
        checks_failed=checks.get("failed"),
        error=run.error_message.split("\n", 1)[0][:300] if run.error_message else None,
    )


def _last_results(
    runs: list[RunRecord], checks_of: Callable[[str], list[dict[str, Any]]] | None
) -> dict[str, list[tuple[str, str]]]:
    """Check step -> [(rule, 'passed' or 'N violations')] in rule order, from the newest run that
    checked anything (rule names repeat, so results are matched by position within their step)."""
    if checks_of is None:
        return {}
    for run in runs:
        found = checks_of(run.id)
        if found:
            out: dict[str, list[tuple[str, str]]] = {}
            for c in found:
                said = "passed" if c["passed"] else f"{c['violations']} violations"
                out.setdefault(c["step_id"], []).append((c["rule_name"], said))
            return out
    return {}


def _result_of(last: dict[str, list[tuple[str, str]]], step: str, index: int, rule: str) -> str | None:
    found = last.get(step, [])
    return found[index][1] if index < len(found) and found[index][0] == rule else None


def collect(
    graph: ProjectGraph,
    compile: Callable[[Any, Any], ExecutionPlan],
    runs_of: Callable[[str], list[RunRecord]],
    default_target: str,
    now: datetime,
    checks_of: Callable[[str], list[dict[str, Any]]] | None = None,
) -> ProjectDocs:
    """The project's documentation; `compile(bound, refs)` compiles one pipeline, `runs_of(name)`
    returns its newest runs first, `checks_of(run_id)` a run's check results."""
    session = ProjectRefs(graph, compile)
    described = table_docs(graph, default_target)
    order = graph.order()
    readers: dict[str, list[str]] = {n: [] for n in order}
    for name in order:
        for ref in graph.nodes[name].refs:
            if ref in readers:
                readers[ref].append(name)
    pipelines: list[PipelineEntry] = []
    tables: list[TableEntry] = []
    for name in order:
        node = graph.nodes[name]
        runs = runs_of(name)
        # a sandbox run reaches succeeded only through its commit: that too is a publish
        last_ok = next((r for r in runs if r.status in ("succeeded", "warn")), None)
        entry: dict[str, Any] = {
            "name": name,
            "path": shown(node.path),
            "description": node.description,
            "tags": list(node.tags),
            "upstream": [r for r in node.refs if r in graph.nodes],
            "downstream": readers[name],
            "runs": [run_entry(r) for r in runs[:RUNS_SHOWN]],
            "last_success": _iso(last_ok.ended_at or last_ok.created_at) if last_ok else None,
            "steps": [],
            "checks": [],
            "tables": [],
        }
        try:
            pipeline = node.load().bind(None).pipeline
            entry["steps"] = [StepEntry(s.id, s.kind, s.description, s.inputs) for s in pipeline.steps]
            if node.needs:
                raise QueryForgeError(
                    f"not compiled: parameter '{node.needs[0]}' has no default",
                    hint="give it a default to document its columns",
                )
            plan = session.compiled(name)[1]
            entry["steps"] = [  # what each step reads, as compiled (an sql step's tables too)
                StepEntry(s.id, s.kind, s.description, list(plan.deps.get(s.id, s.inputs)))
                for s in pipeline.steps
            ]
        except QueryForgeError as exc:
            pipelines.append(PipelineEntry(**entry, error=exc.render()))
            continue
        last = _last_results(runs, checks_of)
        checks = [
            {
                "step": stage.step_id,
                "input": stage.input,
                "rule": rule.name,
                "column": rule.column,
                "severity": rule.severity,
                "last": _result_of(last, stage.step_id, i, rule.name),
            }
            for stage in plan.stages_of(CheckStage)
            for i, rule in enumerate(stage.rules)
        ]
        entry["checks"] = checks
        if pipeline.ephemeral:  # its load names what a ref reads; no table is published
            pipelines.append(PipelineEntry(**entry, ephemeral=True))
            continue
        for stage in plan.stages_of(StageLoadStage):
            step = pipeline.step(stage.step_id)
            if isinstance(step, m.LoadStep) and step.load.path:
                continue  # a file output is not a table of the catalog
            key = f"{stage.target.connection}.{stage.target.table}"
            doc = described.get((stage.target.connection, stage.target.table.lower()))
            upstream = plan.upstream_of([stage.input]) | {stage.input}
            column_checks = [c for c in checks if c["input"] in upstream and c["column"]]
            columns = [
                ColumnEntry(
                    name=c,
                    type=t,
                    description=doc.columns.get(c) if doc else None,
                    checks=[
                        k["rule"]
                        for k in column_checks
                        if c.lower() in (x.strip().lower() for x in str(k["column"]).split(","))
                    ],
                )
                for c, t in plan.schemas.get(stage.input, [])
            ]
            entry["tables"].append(key)
            tables.append(
                TableEntry(
                    key=key,
                    connection=stage.target.connection,
                    table=stage.target.table,
                    pipeline=name,
                    step=stage.step_id,
                    mode=stage.mode,
                    description=doc.description if doc else node.description,
                    columns=columns,
                    read_by=readers[name],
                )
            )
        pipelines.append(PipelineEntry(**entry))
    edges = [(r, n) for n in order for r in graph.nodes[n].refs if r in graph.nodes]
    return ProjectDocs(_iso(now) or "", pipelines, tables, edges)
