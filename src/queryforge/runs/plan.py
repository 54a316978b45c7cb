"""Compile a bound pipeline into an immutable execution plan: a tuple of small stages.

Compiling is also static validation: ids, references, cycles, SQL shape and -- by creating every
step as a view in a scratch engine session -- column names and types. The executor and the
`explain` visitor both walk the same stages.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any

import sqlglot
from sqlglot import exp

from ..connectors.base import SNAPSHOT_COLUMNS, ReadRequest, TargetRef
from ..connectors.files import FilesConnector, file_format
from ..connectors.folder_sink import batch_folder_pattern
from ..connectors.paths import PathFence, glob_base
from ..connectors.registry import FILES, ConnectionSet
from ..connectors.sql import SqlConnector
from ..connectors.streams import StreamConnector, declared_types
from ..engine.base import CANONICAL_ENGINE, Engine, EngineSession
from ..engine.ops import OpContext, get_op
from ..errors import QueryForgeError, SpecError, did_you_mean
from ..quality.checks import CompiledRule, CustomRule, RuleContext, column_check, compile_rule, rule_reads
from ..spec import models as m
from ..spec.loader import BoundPipeline
from ..spec.params import PLACEHOLDER
from ..sql.parse import SqlProblem, ident, parse_select, table, table_references
from ..sql.policy import real_tables
from .failures import Retry

Schema = list[tuple[str, str]]


# ---------------------------------------------------------------- stages


@dataclass(frozen=True)
class Stage:
    step_id: str

    @property
    def kind(self) -> str:
        return type(self).__name__.removesuffix("Stage").lower()


@dataclass(frozen=True)
class ExtractStage(Stage):
    query: exp.Query | None  # files: read directly by the engine
    connection: str | None = None  # databases and APIs: read as Arrow through the connector
    request: ReadRequest | None = None
    incremental: m.Incremental | None = None
    materialize: bool = False
    fingerprint: str = ""
    path: str | None = None  # the file pattern, for files
    stream: bool = False  # the stream source of a streaming pipeline (a broker, or a file-drop folder)


@dataclass(frozen=True)
class TransformStage(Stage):
    op: str
    inputs: tuple[str, ...]
    query: exp.Query
    materialize: bool


@dataclass(frozen=True)
class CheckStage(Stage):
    input: str
    rules: tuple[CompiledRule, ...]


@dataclass(frozen=True)
class StageLoadStage(Stage):
    input: str
    target: TargetRef
    mode: str
    keys: tuple[str, ...]
    on_schema_change: str = "fail"
    check_columns: tuple[str, ...] = ()  # snapshot: the columns whose change makes a new version
    view: str = ""  # mode view: the view's SELECT, in the target's dialect, over its real tables
    sources: tuple[tuple[str, str], ...] = ()  # mode view: (extract step, table it reads) it rests on


@dataclass(frozen=True)
class PublishStage(Stage):
    connection: str
    loads: tuple[str, ...]


@dataclass(frozen=True)
class ExecutionPlan:
    pipeline: str
    content_hash: str
    params: dict[str, Any]
    stages: tuple[Stage, ...]
    schemas: dict[str, Schema] = field(default_factory=dict)
    preserve_order: bool = True
    step_hashes: dict[str, str] = field(default_factory=dict)
    locations: dict[str, str] = field(default_factory=dict)  # step id -> "file:line, step 'x'"
    estimated_rows: int | None = None  # rows the engine expects to scan (ask's cost gate)
    allowed_dirs: list[Path] = field(default_factory=list)  # the engine may read files only here
    retries: dict[str, Retry] = field(default_factory=dict)  # step id -> its retry policy
    timeouts: dict[str, float | None] = field(default_factory=dict)  # step id -> its timeout_s
    # step id -> every step it reads (a check's relationship targets too); from the compiler
    deps: dict[str, tuple[str, ...]] = field(default_factory=dict)
    engine: str = CANONICAL_ENGINE  # the engine that executes the plan (compiled on the canonical one)
    input_bytes: int | None = None  # what the extracts read, where known (routing of engine: auto)
    ephemeral: bool = False  # publishes nothing: inlined into the pipelines that ref it
    placeholders: dict[str, str] = field(default_factory=dict)  # step id -> a ${...} its text used

    def stages_of(self, cls: type[Stage]) -> list[Any]:
        return [s for s in self.stages if isinstance(s, cls)]

    def upstream_of(self, step_ids: Iterable[str]) -> set[str]:
        """Every step the given steps read from, directly or not."""
        seen: set[str] = set()
        todo = list(step_ids)
        while todo:
            for dep in self.deps.get(todo.pop(), ()):
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return seen

    def skipped_with(self, roots: Iterable[str]) -> dict[str, str]:
        """skip_and_continue: the steps skipped when `roots` are, each with the skipped step it
        depends on. A publish is skipped when all its loads are; it publishes the rest otherwise."""
        skipped = {r: r for r in roots}
        for stage in self.stages:
            if isinstance(stage, PublishStage):
                if all(load in skipped for load in stage.loads):
                    skipped[stage.step_id] = skipped[stage.loads[0]]
                continue
            cause = next((skipped[i] for i in self.deps.get(stage.step_id, ()) if i in skipped), None)
            if cause is not None:
                skipped.setdefault(stage.step_id, cause)
        return skipped

    @property
    def targets(self) -> list[TargetRef]:
        return [s.target for s in self.stages_of(StageLoadStage)]


# ---------------------------------------------------------------- compile


@functools.lru_cache(maxsize=1024)
def parsed_sql(text: str) -> exp.Query:
    """A sql step's query, parsed once (validation and compilation both need it; do not mutate)."""
    return parse_select(text)


def dependencies(bound: BoundPipeline) -> dict[str, list[str]]:
    """Step id -> ids it reads; raises SpecError for duplicates, unknown refs and bad SQL."""
    pipeline, source = bound.pipeline, bound.source
    ids: list[str] = []
    for i, step in enumerate(pipeline.steps):
        if step.id in ids:
            raise SpecError(
                f"Duplicate step id '{step.id}'",
                where=source.where(("steps", i, "id")),
                hint="every step needs its own id",
            )
        ids.append(step.id)
    deps: dict[str, list[str]] = {}
    for i, step in enumerate(pipeline.steps):
        if isinstance(step, m.SqlStep):
            try:
                query = parsed_sql(step.sql)
            except SqlProblem as exc:
                raise SpecError(
                    f"Step '{step.id}': {exc}",
                    where=source.where(("steps", i, "sql")),
                    hint="a sql step is exactly one SELECT over earlier steps",
                ) from None
            refs = table_references(query)
            for ref in refs:
                if ref not in ids:
                    raise SpecError(
                        f"Step '{step.id}' reads unknown table '{ref}'",
                        where=source.where(("steps", i, "sql")),
                        hint=did_you_mean(ref, [x for x in ids if x != step.id])
                        or "a sql step may read only the ids of other steps",
                    )
            deps[step.id] = refs
            continue
        for ref in step.inputs:
            if ref not in ids:
                raise SpecError(
                    f"Step '{step.id}' refers to missing step '{ref}'",
                    where=source.where(("steps", i, step.kind)),
                    hint=did_you_mean(ref, [x for x in ids if x != step.id]),
                )
            if ref == step.id:
                raise SpecError(f"Step '{step.id}' reads itself", where=source.where(("steps", i, step.kind)))
        if isinstance(step, m.CheckStep):
            for rule in step.check.rules:
                to = (
                    rule.get("relationships", {}).get("to")
                    if isinstance(rule.get("relationships"), dict)
                    else None
                )
                if to and str(to) not in ids:
                    raise SpecError(
                        f"Check '{step.id}' relates to unknown step '{to}'",
                        where=source.where(("steps", i, "check", "rules")),
                        hint=did_you_mean(str(to), [x for x in ids if x != step.id]),
                    )
                if to:
                    deps.setdefault(step.id, []).append(str(to))
                deps.setdefault(step.id, []).extend(
                    query_rule_reads(rule, step.id, ids, source.where(("steps", i, "check", "rules")))
                )
        deps[step.id] = [*step.inputs, *deps.get(step.id, [])]
    for i, step in enumerate(pipeline.steps):
        for ref in deps[step.id]:
            if isinstance(pipeline.step(ref), m.CheckStep | m.LoadStep):
                raise SpecError(
                    f"Step '{step.id}' reads '{ref}', a {pipeline.step(ref).kind} step that has no output",
                    where=source.where(("steps", i)),
                    hint=f"read the input of '{ref}' instead",
                )
    return deps


def query_rule_reads(rule: Mapping[str, Any], step_id: str, ids: list[str], where: str) -> list[str]:
    """The steps a `query` check rule (a singular test) reads: it runs after them."""
    arg = rule.get("query")
    text = arg.get("sql") if isinstance(arg, dict) else arg
    if not isinstance(text, str):
        return []
    try:
        refs = table_references(parse_select(text))
    except SqlProblem as exc:
        raise SpecError(
            f"Check '{step_id}', rule 'query': {exc}", where=where, hint="one SELECT over earlier steps"
        ) from None
    for ref in refs:
        if ref not in ids or ref == step_id:
            raise SpecError(
                f"Check '{step_id}', rule 'query' reads unknown step '{ref}'",
                where=where,
                hint=did_you_mean(ref, [x for x in ids if x != step_id])
                or "it may read the ids of other steps",
            )
    return list(refs)


def topo_order(bound: BoundPipeline, deps: dict[str, list[str]]) -> list[str]:
    sorter = TopologicalSorter(deps)
    try:
        sorter.prepare()
    except CycleError as exc:
        cycle = list(dict.fromkeys(exc.args[1]))
        raise SpecError(
            f"The steps form a cycle: {' -> '.join([*cycle, cycle[0]])}",
            where=bound.source.step_where(cycle[0]),
            hint="a pipeline is a DAG; make one of these steps read an earlier one",
        ) from None
    position = {s.id: i for i, s in enumerate(bound.pipeline.steps)}
    # Stable: keep the author's order where the DAG allows it.
    result: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=position.__getitem__)
        result.extend(ready)
        sorter.done(*ready)
    return result


def readable_dirs(pipeline: m.Pipeline, connections: ConnectionSet) -> list[Path]:
    """The workspace and the (real) folders the pipeline's own extracts name: nothing else is readable.

    A folder the path fence refuses is never added; the compiler then refuses the step itself.
    """
    fence, files = connections.fence, connections.files
    dirs = [fence.root]
    for step in pipeline.steps:
        if not (isinstance(step, m.ExtractStep) and step.extract.path):
            continue
        pattern = step.extract.path
        base = files.resolve_path(glob_base(pattern))
        # DuckDB checks real paths: a matched file behind a symlink needs its real folder.
        for folder in [base, *(files.resolve_path(str(f)) for f in files.glob(pattern))]:
            folder = folder if folder.is_dir() else folder.parent
            if fence.refusal(pattern, folder) is None and not any(folder.is_relative_to(d) for d in dirs):
                dirs.append(folder)
    return dirs


@dataclass(frozen=True)
class RefTarget:
    """Where another pipeline publishes the output a `ref:` names, and its compiled columns."""

    pipeline: str
    step: str
    connection: str
    table: str
    schema: Schema
    # An ephemeral pipeline publishes nothing: its compiled plan is inlined, and `output` (its load's
    # input) is what the ref reads.
    inline: ExecutionPlan | None = None
    output: str = ""


def renamed(query: exp.Query, names: Mapping[str, str]) -> exp.Query:
    """`query` reading `names`' new names for the steps it reads (its own CTEs left alone); each
    renamed table keeps its old name as an alias, so columns qualified with it still resolve."""
    out = query.copy()
    for t in real_tables(out):
        new = names.get(t.name)
        if new is None or t.args.get("db") or t.args.get("catalog"):
            continue
        old = t.name
        t.set("this", ident(new))
        if not t.alias:
            t.set("alias", exp.TableAlias(this=ident(old)))
    return out


def inlined(plan: ExecutionPlan, prefix: str) -> ExecutionPlan:
    """An ephemeral pipeline's plan with every step id prefixed, to be inlined into a consumer's
    plan: extracts, transforms and checks (it stages and publishes nothing)."""
    ids = {s.step_id for s in plan.stages} | set(plan.schemas) | set(plan.deps)
    names = {i: prefix + i for i in ids}

    def name(step_id: str) -> str:
        return names.get(step_id, step_id)

    def query(q: exp.Query | None) -> exp.Query | None:
        return None if q is None else renamed(q, names)

    stages: list[Stage] = []
    for stage in plan.stages:
        if isinstance(stage, TransformStage):
            q = query(stage.query)
            assert q is not None
            stage = dataclasses.replace(
                stage, step_id=name(stage.step_id), inputs=tuple(map(name, stage.inputs)), query=q
            )
        elif isinstance(stage, CheckStage):
            rules = tuple(
                dataclasses.replace(
                    r,
                    violations=query(r.violations),
                    count=query(r.count),
                    input=name(r.input) if r.input else r.input,
                )
                for r in stage.rules
            )
            stage = dataclasses.replace(
                stage, step_id=name(stage.step_id), input=name(stage.input), rules=rules
            )
        elif isinstance(stage, ExtractStage):
            stage = dataclasses.replace(stage, step_id=name(stage.step_id))
        else:
            continue
        stages.append(stage)
    kept = {s.step_id for s in stages}

    def keys(d: Mapping[str, Any]) -> dict[str, Any]:
        return {name(k): v for k, v in d.items() if name(k) in kept}

    return dataclasses.replace(
        plan,
        stages=tuple(stages),
        schemas={name(k): v for k, v in plan.schemas.items()},
        step_hashes=keys(plan.step_hashes),
        locations=keys(plan.locations),
        retries=keys(plan.retries),
        timeouts=keys(plan.timeouts),
        deps={name(k): tuple(map(name, v)) for k, v in plan.deps.items() if name(k) in kept},
        placeholders=keys(plan.placeholders),
    )


def placeholders(bound: BoundPipeline) -> dict[str, str]:
    """Step id -> the first `${...}` its text uses (a parameter, or today/now): a value fixed when the
    pipeline was bound, which a view would keep forever."""
    raw = bound.source.raw.get("steps")
    found: dict[str, str] = {}
    for step, text in zip(bound.pipeline.steps, raw if isinstance(raw, list) else [], strict=False):
        hit = PLACEHOLDER.search(json.dumps(text, default=str))
        if hit is not None:
            found[step.id] = hit.group(0)
    return found


RefResolver = Callable[[str, str], RefTarget]  # (ref, where) -> its target; raises SpecError


class Compiler:
    def __init__(
        self,
        bound: BoundPipeline,
        scratch: EngineSession,
        connections: ConnectionSet,
        refs: RefResolver | None = None,
        rules: Mapping[str, CustomRule] | None = None,
    ) -> None:
        self.bound = bound
        self.refs = refs
        self.rules = rules or {}  # the workspace's own check rules (`rules:` of queryforge.yaml)
        self.pipeline = bound.pipeline
        self.scratch = scratch
        self.connections = connections
        # Drafts of `ask` get the strict fence; every path field is judged while compiling.
        connections.use_fence(PathFence.for_origin(connections.root, bound.source.origin))
        self.schemas: dict[str, Schema] = {}
        self.hashes: dict[str, str] = {}
        self.locations: dict[str, str] = {}
        self.column_checks: dict[str, str] = {}  # check stage id -> the load whose `columns:` it checks
        # Ephemeral pipelines read by refs: their plans, inlined (see `inline_ref`).
        self.inlined: list[ExecutionPlan] = []
        self.hoisted: list[Stage] = []  # stages inlined by the step being compiled, to go before it
        self.reads: dict[str, list[str]] = {}  # a ref step -> the inlined step it reads
        self.outputs: list[str] = []  # an ephemeral pipeline's loads (they name outputs, write nothing)

    def where(self, step_id: str, *sub: str | int) -> str:
        step_id = self.column_checks.get(step_id, step_id)
        if step_id not in {s.id for s in self.pipeline.steps} and step_id in self.locations:
            return self.locations[step_id]  # a step inlined from an ephemeral pipeline
        step = self.pipeline.step(step_id)
        return self.bound.source.step_where(step_id, step.kind, *sub)

    def compile(self) -> ExecutionPlan:
        deps = dependencies(self.bound)
        if self.pipeline.ephemeral:
            self.ephemeral_rules()
        order = topo_order(self.bound, deps)
        consumers: dict[str, int] = dict.fromkeys(order, 0)
        for step_id in order:
            for ref in deps[step_id]:
                consumers[ref] += 1
        stages: list[Stage] = []
        loads: list[StageLoadStage] = []
        for step_id in order:
            step = self.pipeline.step(step_id)
            try:
                stage = self.compile_step(step, deps[step_id], consumers[step_id])
            except QueryForgeError:
                raise
            stages.extend(self.hoisted)  # an ephemeral pipeline's steps, before the ref that reads them
            self.hoisted = []
            if stage is None:  # a load of an ephemeral pipeline: it names an output, writes nothing
                continue
            deps[step_id] = self.reads.get(step_id, deps[step_id])
            if isinstance(stage, StageLoadStage):
                loads.append(stage)
            stages.append(stage)
            self.hashes[step_id] = self.step_hash(stage, deps[step_id])
        for load in loads:  # after every step: a relationships rule may read any of them
            checked = self.compile_column_checks(load.step_id)
            if checked is not None:
                deps[checked[0].step_id] = checked[1]
                stages.append(checked[0])
                self.hashes[checked[0].step_id] = self.step_hash(checked[0], checked[1])
        for output in self.outputs:  # an ephemeral pipeline's outputs: their `columns:` checks run too
            checked = self.compile_column_checks(output)
            if checked is not None:
                deps[checked[0].step_id] = checked[1]
                stages.append(checked[0])
                self.hashes[checked[0].step_id] = self.step_hash(checked[0], checked[1])
        for plan_in in self.inlined:
            deps.update({k: list(v) for k, v in plan_in.deps.items()})
        found = placeholders(self.bound)
        for plan_in in self.inlined:
            found.update(plan_in.placeholders)
        loads = [self.view_of(s, stages, deps, found) if s.mode == "view" else s for s in loads]
        by_connection: dict[str, list[str]] = {}
        for load in loads:
            by_connection.setdefault(load.target.connection, []).append(load.step_id)
        # Checks run before anything is staged, stage-loads after: write-audit-publish.
        ordered = [s for s in stages if not isinstance(s, StageLoadStage)] + list(loads)
        ordered += [
            PublishStage(step_id=f"publish:{c}", connection=c, loads=tuple(ids))
            for c, ids in by_connection.items()
        ]
        has_sort = any(isinstance(s, m.SortStep) for s in self.pipeline.steps)
        has_sort = has_sort or any(p.preserve_order for p in self.inlined)
        dirs = self.allowed_dirs()
        for d in (d for p in self.inlined for d in p.allowed_dirs):
            if not any(d.is_relative_to(o) for o in dirs):
                dirs.append(d)
        plan = ExecutionPlan(
            pipeline=self.pipeline.name,
            content_hash=self.bound.source.content_hash(),
            params=self.bound.params,
            stages=tuple(ordered),
            schemas=dict(self.schemas),
            preserve_order=has_sort,
            step_hashes=dict(self.hashes),
            locations=dict(self.locations),
            allowed_dirs=dirs,
            retries={s.id: Retry.of(s.retry, self.pipeline.retry) for s in self.pipeline.steps}
            | {k: v for p in self.inlined for k, v in p.retries.items()},
            timeouts={s.id: s.timeout_s for s in self.pipeline.steps}
            | {k: v for p in self.inlined for k, v in p.timeouts.items()},
            deps={k: tuple(v) for k, v in deps.items()},
            ephemeral=self.pipeline.ephemeral,
            placeholders=found,
        )
        if self.pipeline.mode == "streaming":
            streaming_rules(plan, self.where, self.connections)
        return plan

    def vet_for(self, plan: ExecutionPlan, engine: Engine) -> ExecutionPlan:
        """The plan, to run on `engine`; a step the engine cannot run with the canonical meaning is
        refused here, at validation, with the step's location."""

        def refuse(step_id: str, why: str) -> SpecError:
            return SpecError(
                f"Step '{step_id}' is not supported on the {engine.name} engine: {why}",
                where=self.where(step_id),
                hint="run the pipeline with --engine duckdb, or write that part another way",
            )

        for stage in plan.stages:
            for column, canonical_type in plan.schemas.get(stage.step_id, []):
                why = engine.unsupported_type(canonical_type)
                if why is not None:
                    raise refuse(stage.step_id, f"column {column}: {why}")
            queries = [(getattr(stage, "query", None), plan.schemas.get(stage.step_id))]
            if isinstance(stage, CheckStage):
                queries += [(rule.violations, None) for rule in stage.rules]
            for query, output in queries:
                why = engine.unsupported(query, plan.schemas, output) if query is not None else None
                if why is not None:
                    raise refuse(stage.step_id, why)
        return dataclasses.replace(plan, engine=engine.name)

    def allowed_dirs(self) -> list[Path]:
        return readable_dirs(self.pipeline, self.connections)

    def step_hash(self, stage: Stage, deps: list[str]) -> str:
        """Identity of a step's output: its compiled form plus its inputs' identities."""
        text = repr(stage) + "|" + "|".join(self.hashes.get(d, d) for d in deps)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def compile_step(self, step: m.StepBase, deps: list[str], consumers: int) -> Stage | None:
        if isinstance(step, m.ExtractStep):
            return self.compile_extract(step, consumers)
        if isinstance(step, m.CheckStep):
            return self.compile_check(step)
        if isinstance(step, m.LoadStep) and self.pipeline.ephemeral:
            self.outputs.append(step.id)  # what a ref reads; its table (if any) is not written
            self.locations[step.id] = self.where(step.id)
            return None
        if isinstance(step, m.LoadStep):
            return self.compile_load(step)
        if isinstance(step, m.SqlStep):
            query = parsed_sql(step.sql).copy()
            op = "sql"
        else:
            ctx = OpContext(
                step_id=step.id, schemas=self.schemas, where=lambda *sub, _s=step.id: self.where(_s, *sub)
            )
            query = get_op(step.kind).compile(step.body, ctx)
            op = step.kind
        # DuckDB cannot keep a PIVOT whose columns come from the data in a view.
        must_be_table = isinstance(step, m.PivotStep) and step.pivot.values is None
        table = (
            must_be_table or step.materialize == "table" or (step.materialize == "auto" and consumers != 1)
        )
        self.register(step.id, query, table=must_be_table)
        return TransformStage(step_id=step.id, op=op, inputs=tuple(deps), query=query, materialize=table)

    def register(self, step_id: str, query: exp.Query, *, table: bool = False) -> None:
        self.locations[step_id] = self.where(step_id)
        try:
            self.scratch.create(step_id, query, table=table)
            self.schemas[step_id] = self.scratch.describe(step_id)
        except QueryForgeError as exc:
            detail = exc.message.split(": ", 1)[-1]
            raise SpecError(
                f"Step '{step_id}' is invalid: {detail}", where=self.where(step_id), hint=exc.hint
            ) from None

    def compile_extract(self, step: m.ExtractStep, consumers: int) -> ExtractStage | TransformStage:
        body = step.extract
        where = self.where(step.id)
        if body.ref is not None:
            return self.compile_ref(step, where, consumers)
        if bool(body.path) == bool(body.connection):
            raise SpecError(f"Extract step '{step.id}' needs either 'path' or 'connection'", where=where)
        self.connections.fence_step(step.id, "extract", body.model_dump(), where)
        database = ConnectionSet.database_file_name(body.path) if body.path else None
        if database is not None:
            body = body.model_copy(update={"connection": database, "path": None})
        if body.path and (body.incremental or body.endpoint or body.table or body.query):
            extra = next(
                k for k in ("incremental", "endpoint", "table", "query") if getattr(body, k) is not None
            )
            raise SpecError(
                f"Extract step '{step.id}' reads a file, which has no '{extra}'",
                where=where,
                hint="'incremental', 'endpoint', 'table' and 'query' are for connections",
            )
        streaming = self.pipeline.mode == "streaming"
        if body.types is not None and not (body.stream or (streaming and body.path)):
            raise SpecError(
                f"Extract step '{step.id}' declares 'types', which only a streaming pipeline's stream "
                "or file-drop folder needs",
                where=where,
                hint="remove 'types' (tables and files describe themselves)",
            )
        if body.path and streaming and body.types is not None:
            # A file-drop folder: empty at validation time, so its files' columns are declared.
            schema = declared_types(tuple(body.types.items()), where)
            self.scratch.create_empty(step.id, schema)
            self.schemas[step.id] = self.scratch.describe(step.id)
            return ExtractStage(
                step_id=step.id,
                query=None,
                request=ReadRequest(types=tuple(schema), options=body.options),
                materialize=True,
                path=body.path,
                stream=True,
            )
        if body.path:
            files = self.connections.files
            cols: list[exp.Expr] = (
                [exp.column(ident(c)) for c in body.columns] if body.columns else [exp.Star()]
            )
            pinned = files.source(body.path, body.format, body.options, where, pinned=True)
            self.register(step.id, exp.select(*cols).from_(pinned))
            query = exp.select(*[c.copy() for c in cols]).from_(
                files.source(body.path, body.format, body.options, where)
            )
            fingerprint = files.fingerprint_files(body.path)
            return ExtractStage(
                step_id=step.id,
                query=query,
                materialize=step.materialize == "table",
                fingerprint=fingerprint,
                path=body.path,
            )
        assert body.connection is not None
        connector = self.connections.get(body.connection, where)
        if isinstance(connector, FilesConnector):
            raise SpecError(
                f"Extract step '{step.id}' reads connection '{body.connection}', which holds files",
                where=where,
                hint="read files with 'extract: {path: ...}'",
            )
        is_stream = isinstance(connector, StreamConnector)
        if is_stream and not streaming:
            raise SpecError(
                f"Extract step '{step.id}' reads stream connection '{body.connection}', which only a "
                "streaming pipeline can read",
                where=where,
                hint="add 'mode: streaming' to the pipeline and start it with 'queryforge stream'",
            )
        if body.stream is not None and not is_stream:
            raise SpecError(
                f"Extract step '{step.id}' names a stream, but connection '{body.connection}' is not a "
                "stream connection (nats://, redis://, rate://)",
                where=where,
                hint="read a table with 'table:' or 'query:'",
            )
        wanted = [body.table, body.query, body.endpoint, body.stream]
        if sum(x is not None for x in wanted) != 1:
            raise SpecError(
                f"Extract step '{step.id}' needs exactly one of 'table', 'query', 'endpoint' or 'stream' "
                f"for connection '{body.connection}'",
                where=where,
            )
        request = ReadRequest(
            table=body.table,
            query=body.query,
            endpoint=body.endpoint,
            stream=body.stream,
            types=tuple(body.types.items()) if body.types else None,
            columns=tuple(body.columns) if body.columns else None,
            options=body.options,
            cursor=body.incremental.cursor if body.incremental else None,
        )
        schema = connector.describe(request, where)
        if body.incremental and body.incremental.cursor.lower() not in {c.lower() for c, _ in schema}:
            raise SpecError(
                f"Incremental cursor '{body.incremental.cursor}' of step '{step.id}' is not a column "
                "it reads",
                where=where,
                hint=did_you_mean(body.incremental.cursor, [c for c, _ in schema]),
            )
        self.scratch.create_empty(step.id, schema)
        self.schemas[step.id] = self.scratch.describe(step.id)
        return ExtractStage(
            step_id=step.id,
            query=None,
            connection=body.connection,
            request=request,
            incremental=body.incremental,
            materialize=True,
            stream=is_stream,
        )

    def compile_ref(
        self, step: m.ExtractStep, where: str, consumers: int = 1
    ) -> ExtractStage | TransformStage:
        """Another pipeline's output: its table, with the columns its own compilation gives (so a
        project validates before anything has run)."""
        body = step.extract
        extra = [k for k, v in body.model_dump(exclude={"ref"}).items() if v not in (None, {}, [])]
        if extra:
            raise SpecError(
                f"Extract step '{step.id}' reads 'ref: {body.ref}' and also sets '{extra[0]}'",
                where=where,
                hint="a ref names another pipeline's output; filter or select in a later step",
            )
        if self.refs is None:
            raise SpecError(
                f"Extract step '{step.id}' reads 'ref: {body.ref}', which only a pipeline of a workspace "
                "project can resolve",
                where=where,
                hint="save the pipeline under pipelines/ beside the one it references",
            )
        assert body.ref is not None
        target = self.refs(body.ref, where)
        if target.inline is not None:
            return self.inline_ref(step, target, where, consumers)
        request = ReadRequest(table=target.table)
        self.scratch.create_empty(step.id, target.schema)
        self.schemas[step.id] = self.scratch.describe(step.id)
        return ExtractStage(
            step_id=step.id,
            query=None,
            connection=target.connection,
            request=request,
            materialize=True,
        )

    def inline_ref(
        self, step: m.ExtractStep, target: RefTarget, where: str, consumers: int
    ) -> TransformStage:
        """A ref to an ephemeral pipeline: its extracts, transforms and checks join this plan, each
        id prefixed with the pipeline's name (once, however many refs read it), and the ref step
        reads its output like any other step."""
        assert target.inline is not None
        prefix = f"{target.pipeline}__"
        if all(p.pipeline != target.pipeline for p in self.inlined):
            plan = inlined(target.inline, prefix)
            own = {s.id for s in self.pipeline.steps} | {s.step_id for p in self.inlined for s in p.stages}
            taken = next((s.step_id for s in plan.stages if s.step_id in own), None)
            if taken is not None:
                raise SpecError(
                    f"Step '{taken}' has the id that step '{taken.removeprefix(prefix)}' of ephemeral "
                    f"pipeline '{target.pipeline}' takes when it is inlined here",
                    where=self.where(taken),
                    hint="rename this step",
                )
            self.inlined.append(plan)
            self.hoisted.extend(plan.stages)
            self.schemas.update(plan.schemas)
            self.hashes.update(plan.step_hashes)
            self.locations.update(plan.locations)
        output = prefix + target.output
        self.reads[step.id] = [output]
        self.locations[step.id] = where
        self.scratch.create_empty(step.id, target.schema)
        self.schemas[step.id] = self.scratch.describe(step.id)
        table_ = step.materialize == "table" or (step.materialize == "auto" and consumers != 1)
        return TransformStage(
            step_id=step.id,
            op="ref",
            inputs=(output,),
            query=exp.select(exp.Star()).from_(table(output)),
            materialize=table_,
        )

    def ephemeral_rules(self) -> None:
        """What an ephemeral pipeline cannot be: it has no run of its own (so no stream, no trigger,
        no high-water mark) and must name the output a ref reads."""
        source, name = self.bound.source, self.pipeline.name
        at = source.where(("ephemeral",))
        if self.pipeline.mode == "streaming":
            raise SpecError(
                f"Pipeline '{name}' is ephemeral and streaming; an ephemeral pipeline never runs on its own",
                where=at,
                hint="remove 'ephemeral: true', or 'mode: streaming'",
            )
        if self.pipeline.after:
            raise SpecError(
                f"Pipeline '{name}' is ephemeral but runs 'after' {self.pipeline.after[0]}; an ephemeral "
                "pipeline has no runs to trigger",
                where=source.where(("after",)),
                hint="remove 'after:' (the pipelines that ref it run instead)",
            )
        if not any(isinstance(s, m.LoadStep) for s in self.pipeline.steps):
            raise SpecError(
                f"Ephemeral pipeline '{name}' has no load step, so a ref to it has nothing to read",
                where=at,
                hint="add a load step naming the output: - {id: out, load: {input: STEP}}",
            )
        for s in self.pipeline.steps:
            if isinstance(s, m.ExtractStep) and s.extract.incremental is not None:
                raise SpecError(
                    f"Step '{s.id}' of ephemeral pipeline '{name}' is incremental, but an ephemeral "
                    "pipeline has no runs of its own to keep a high-water mark",
                    where=self.where(s.id),
                    hint="read it whole, or make the pipeline a table (remove 'ephemeral: true')",
                )

    def view_of(
        self,
        load: StageLoadStage,
        stages: list[Stage],
        deps: Mapping[str, list[str]],
        frozen: Mapping[str, str],
    ) -> StageLoadStage:
        """A load of mode view with its SELECT: the steps it reads as CTEs, in the target's dialect,
        over the target's own tables. What a view cannot express is refused here, at validation."""
        where = self.where(load.step_id)
        connection = load.target.connection
        needed = {load.input}
        todo = [load.input]
        while todo:
            for dep in deps.get(todo.pop(), []):
                if dep not in needed:
                    needed.add(dep)
                    todo.append(dep)

        def refuse(step_id: str, why: str) -> SpecError:
            return SpecError(
                f"Load step '{load.step_id}' publishes a view of connection '{connection}', but step "
                f"'{step_id}' {why}",
                where=self.where(step_id),
                hint="use mode: replace to copy the data",
            )

        steps: list[tuple[str, exp.Query | ReadRequest]] = []
        sources: list[tuple[str, str]] = []
        target = load.target.table.lower()
        for stage in stages:
            if stage.step_id not in needed or isinstance(stage, CheckStage):
                continue
            if stage.step_id in frozen:
                raise refuse(
                    stage.step_id,
                    f"uses {frozen[stage.step_id]}, a value fixed when the pipeline runs, which the view "
                    "would keep forever (a view takes no parameters)",
                )
            if isinstance(stage, TransformStage):
                steps.append((stage.step_id, stage.query))
                continue
            assert isinstance(stage, ExtractStage)
            request = stage.request
            if stage.path is not None or request is None:
                raise refuse(
                    stage.step_id, "reads files, and a view can only select from tables of its database"
                )
            if stage.connection != connection:
                raise refuse(
                    stage.step_id,
                    f"reads connection '{stage.connection}', and a view can only select from tables of "
                    "its own database",
                )
            if request.table is None:
                raise refuse(stage.step_id, "reads a query, and a view reads tables (select in a later step)")
            if stage.incremental is not None:
                raise refuse(stage.step_id, "is incremental, and a view shows every row of what it reads")
            if request.table.lower() == target:
                raise refuse(stage.step_id, f"reads {request.table}, the view itself")
            steps.append((stage.step_id, ReadRequest(table=request.table, columns=request.columns)))
            sources.append((stage.step_id, request.table))
        connector = self.connections.get(connection, where)
        assert isinstance(connector, SqlConnector)
        try:
            text = connector.view_definition(steps, load.input, [c for c, _ in self.schemas[load.input]])
        except (sqlglot.errors.SqlglotError, QueryForgeError) as exc:
            detail = exc.message if isinstance(exc, QueryForgeError) else str(exc).splitlines()[0]
            raise SpecError(
                f"Load step '{load.step_id}' publishes a view, whose SQL cannot be written in "
                f"{connector.dialect}'s dialect: {detail}",
                where=where,
                hint="write the step another way, or use mode: replace to copy the data",
            ) from None
        return dataclasses.replace(load, view=text, sources=tuple(sources))

    def compile_check(self, step: m.CheckStep) -> CheckStage:
        body = step.check
        schema = self.schemas[body.input]
        rules: list[CompiledRule] = []
        for i, item in enumerate(body.rules):
            where = functools.partial(self.where, step.id, "rules", i)
            ctx = RuleContext(
                input=body.input,
                schema=schema,
                severity=body.severity,
                where=where,
                step_schemas=self.schemas,
                custom=self.rules,
            )
            rules.extend(compile_rule(item, ctx))
        return CheckStage(step_id=step.id, input=body.input, rules=tuple(rules))

    def compile_column_checks(self, load_id: str) -> tuple[CheckStage, list[str]] | None:
        """The checks under a load's `columns:`, as a check step `LOAD.columns` on its input would
        run them (`quality.checks.column_check` expands each), with the steps it reads."""
        step = self.pipeline.step(load_id)
        assert isinstance(step, m.LoadStep)
        body = step.load
        known = [c for c, _ in self.schemas[body.input]]
        rules: list[CompiledRule] = []
        reads = [body.input]
        for column, doc in (body.columns or {}).items():
            if column.lower() not in {c.lower() for c in known}:
                raise SpecError(
                    f"Load step '{step.id}' lists column '{column}', which '{body.input}' does not have",
                    where=self.where(step.id, "columns", column),
                    hint=did_you_mean(column, known),
                )
            for i, check in enumerate(doc.checks):
                ctx = RuleContext(
                    input=body.input,
                    schema=self.schemas[body.input],
                    severity="error",
                    where=functools.partial(self.where, step.id, "columns", column, "checks", i),
                    step_schemas=self.schemas,
                    custom=self.rules,
                )
                item = column_check(column, check, ctx)
                rules.extend(compile_rule(item, ctx))
                reads += [r for r in rule_reads(item) if r not in reads]
        if not rules:
            return None
        check_id = f"{step.id}.columns"
        self.column_checks[check_id] = step.id
        self.locations[check_id] = self.where(step.id, "columns")
        return CheckStage(step_id=check_id, input=body.input, rules=tuple(rules)), reads

    def compile_load(self, step: m.LoadStep) -> StageLoadStage:
        body = step.load
        where = self.where(step.id)
        if bool(body.table) == bool(body.path):
            raise SpecError(f"Load step '{step.id}' needs either 'table' or 'path'", where=where)
        if body.mode == "view":
            self.view_rules(step, where)
        self.connections.fence_step(step.id, "load", body.model_dump(), where)
        name = body.connection or (FILES if body.path else self.connections.default_target)
        connector = self.connections.get(name, where)
        if body.path and not isinstance(connector, FilesConnector):
            raise SpecError(
                f"Load step '{step.id}' writes a file, but connection '{name}' is a database",
                where=where,
                hint="drop 'connection' to write a file, or use 'table' instead of 'path'",
            )
        if body.path and "*" in body.path and self.pipeline.mode != "streaming":
            raise SpecError(
                f"Load step '{step.id}' writes '{body.path}', a folder of batch files, which only a "
                "streaming pipeline writes",
                where=where,
                hint="name one file (e.g. out/result.parquet), or add 'mode: streaming'",
            )
        if body.path and body.mode != "replace" and self.pipeline.mode != "streaming":
            raise SpecError(
                f"Load step '{step.id}' writes a file, which supports mode 'replace' only",
                where=where,
                hint="remove 'mode', or load into a table to append or merge",
            )
        if body.path:
            try:
                file_format(body.path)
            except SpecError:
                raise SpecError(
                    f"Load step '{step.id}' cannot tell the file format of '{body.path}'",
                    where=where,
                    hint="end the path in .parquet, .csv or .json",
                ) from None
        connector.ensure_writable(where)
        target = TargetRef(connection=name, table=str(body.table or body.path))
        keys = tuple(body.keys or ())
        known = [c for c, _ in self.schemas[body.input]]
        if body.mode in ("merge", "snapshot"):
            if not keys:
                raise SpecError(
                    f"Load step '{step.id}' uses mode '{body.mode}' but names no keys",
                    where=where,
                    hint="add keys: [id_column]",
                )
            for k in keys:
                if k.lower() not in {c.lower() for c in known}:
                    raise SpecError(
                        f"{body.mode.capitalize()} key '{k}' of step '{step.id}' is not a column of "
                        f"'{body.input}'",
                        where=where,
                        hint=did_you_mean(k, known),
                    )
        if body.check_columns is not None and body.mode != "snapshot":
            raise SpecError(
                f"Load step '{step.id}' sets 'check_columns', which only mode 'snapshot' uses",
                where=where,
                hint="remove it, or set mode: snapshot",
            )
        checked: tuple[str, ...] = ()
        if body.mode == "snapshot":
            checked = self.snapshot_columns(step, known, keys, connector, where)
        return StageLoadStage(
            step_id=step.id,
            input=body.input,
            target=target,
            mode=body.mode,
            keys=keys,
            on_schema_change=body.on_schema_change,
            check_columns=checked,
        )

    def view_rules(self, step: m.LoadStep, where: str) -> None:
        """What a load of mode view cannot be, whatever it reads (see `view_of` for that)."""
        body = step.load
        if body.path:
            raise SpecError(
                f"Load step '{step.id}' publishes '{body.path}' as a view, but a file cannot be a view: a "
                "view is a query kept in a database, over that database's tables",
                where=where,
                hint="use mode: replace to write the data to the file, or load into a table of a database",
            )
        if self.pipeline.mode == "streaming":
            raise SpecError(
                f"Load step '{step.id}' publishes a view, which a streaming pipeline cannot: a view shows "
                "its tables as they are, there is no batch to add",
                where=where,
                hint="use mode: append, or mode: merge with keys",
            )
        name = body.connection or self.connections.default_target
        if not getattr(self.connections.get(name, where), "supports_views", False):
            raise SpecError(
                f"Load step '{step.id}' publishes a view in connection '{name}', which cannot hold views",
                where=where,
                hint="views are published into DuckDB, SQLite, PostgreSQL and MySQL; use mode: replace "
                "to copy the data",
            )
        if body.keys or body.on_schema_change != "fail":
            field_ = "keys" if body.keys else "on_schema_change"
            raise SpecError(
                f"Load step '{step.id}' sets '{field_}', which a view does not use (it copies no rows)",
                where=where,
                hint=f"remove '{field_}'",
            )

    def snapshot_columns(
        self, step: m.LoadStep, known: list[str], keys: tuple[str, ...], connector: Any, where: str
    ) -> tuple[str, ...]:
        """The columns compared to decide a new version (SCD type 2), after the checks a snapshot needs."""
        body = step.load
        if not getattr(connector, "supports_snapshot", False) or body.path:
            raise SpecError(
                f"Load step '{step.id}' keeps a snapshot, which connection "
                f"'{body.connection or self.connections.default_target}' does not support",
                where=where,
                hint="snapshots are kept in the DuckDB warehouse, SQLite and PostgreSQL",
            )
        if self.pipeline.mode == "streaming":
            raise SpecError(
                f"Load step '{step.id}' keeps a snapshot, which a streaming pipeline cannot",
                where=where,
                hint="use mode: merge with keys",
            )
        taken = {c.lower() for c in known} & set(SNAPSHOT_COLUMNS)
        if taken:
            raise SpecError(
                f"Step '{body.input}' already has a column named {sorted(taken)[0]}, which a snapshot adds",
                where=where,
                hint="rename it before the load",
            )
        lowered = {c.lower(): c for c in known}
        if body.check_columns is None:
            return tuple(c for c in known if c.lower() not in {k.lower() for k in keys})
        for c in body.check_columns:
            if c.lower() not in lowered:
                raise SpecError(
                    f"Check column '{c}' of step '{step.id}' is not a column of '{body.input}'",
                    where=where,
                    hint=did_you_mean(c, known),
                )
        return tuple(lowered[c.lower()] for c in body.check_columns)


def streaming_rules(
    plan: ExecutionPlan, where: Callable[[str], str], connections: ConnectionSet
) -> tuple[ExtractStage, str]:
    """The stream step and the sink connection of a streaming plan; refuses (at validation) what
    cannot be published exactly once."""
    streams = [s for s in plan.stages_of(ExtractStage) if s.stream]
    if len(streams) != 1:
        raise SpecError(
            f"A streaming pipeline reads exactly one stream; '{plan.pipeline}' reads {len(streams)}",
            hint="read a stream connection with 'stream:' or a file-drop folder with 'path:' and 'types:'",
        )
    for stage in plan.stages_of(ExtractStage):
        if stage.incremental is not None:
            raise SpecError(
                f"Step '{stage.step_id}' is incremental; a streaming pipeline keeps its place in the stream",
                where=where(stage.step_id),
                hint="remove 'incremental'",
            )
    loads = plan.stages_of(StageLoadStage)
    if not loads:
        raise SpecError(f"Streaming pipeline '{plan.pipeline}' has no load step", hint="add a load step")
    for load in loads:
        if load.mode == "replace":
            raise SpecError(
                f"Load step '{load.step_id}' replaces its table, which a stream would do every batch",
                where=where(load.step_id),
                hint="use mode: append, or mode: merge with keys",
            )
    sinks = {load.target.connection for load in loads}
    if len(sinks) != 1:
        raise SpecError(
            f"A streaming pipeline loads into one connection, so each batch commits in one transaction; "
            f"'{plan.pipeline}' loads into {', '.join(sorted(sinks))}",
            hint="split it into one streaming pipeline per target database",
        )
    sink_name = sinks.pop()
    sink = connections.get(sink_name)
    if sink_name == FILES:  # a folder of batch files: idempotent by batch number, appends only
        for load in loads:
            batch_folder_pattern(load.target.table, where(load.step_id))
            if load.mode != "append":
                raise SpecError(
                    f"Load step '{load.step_id}' merges into files; a folder of batch files can only grow",
                    where=where(load.step_id),
                    hint="use mode: append, or load into a database table to merge",
                )
    elif not isinstance(sink, SqlConnector):
        raise SpecError(
            f"A streaming pipeline publishes into a database (one transaction per batch) or a folder "
            f"of batch files; connection '{sink_name}' is a {sink.scheme} connection",
            where=where(loads[0].step_id),
            hint="load into a DuckDB, SQLite, PostgreSQL or MySQL connection, or to path: folder/*.parquet",
        )
    return streams[0], sink_name
