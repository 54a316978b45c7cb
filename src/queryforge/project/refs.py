"""Resolving `extract: {ref: ...}` through the project graph, not the warehouse.

A ref's columns are those the referenced pipeline's own compilation gives its load step, so a
downstream pipeline validates against what upstream *will* publish, before anything has run, and
a renamed column upstream fails downstream validation with a did-you-mean hint.

A ref to an *ephemeral* pipeline (`ephemeral: true`) reads no table: its compiled plan travels with
the target, and the consumer's compiler inlines its steps (`Compiler.inline_ref`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..errors import SpecError, did_you_mean
from ..runs.plan import ExecutionPlan, RefResolver, RefTarget, StageLoadStage
from ..spec import models as m
from ..spec.loader import BoundPipeline
from .graph import ProjectGraph

Compile = Callable[[BoundPipeline, RefResolver], ExecutionPlan]
# (connection or None for the default target, table) -> (connection, columns), None when absent
Describe = Callable[[str | None, str], tuple[str, list[tuple[str, str]]] | None]


class ProjectRefs:
    """One resolution session: each referenced pipeline compiles once, however many refs name it."""

    def __init__(
        self,
        graph: ProjectGraph,
        compile: Compile,
        describe: Describe | None = None,
        staged: Mapping[str, RefTarget | str] | None = None,
    ) -> None:
        self.graph = graph
        self.compile = compile
        # A rehearsed selection: ref -> the table an upstream of the same selection staged, or why
        # it cannot be read; consulted first, for inlined (ephemeral) pipelines too.
        self.staged = staged or {}
        # Runs: a ref reads the table as published now (`published`), pipelines inlined included.
        self.describe = describe
        self._targets: dict[str, RefTarget] = {}
        self._plans: dict[str, tuple[BoundPipeline, ExecutionPlan]] = {}

    def resolver(self, chain: tuple[str, ...]) -> RefResolver:
        """The resolver for a pipeline compiled on behalf of `chain` (the pipelines that read it)."""

        def resolve(ref: str, where: str) -> RefTarget:
            found = self.staged_target(ref, where)
            if found is None and self.describe is not None:
                found = self.published(ref, where, self.describe)
            return found or self.resolve(ref, where, chain)

        return resolve

    def staged_target(self, ref: str, where: str) -> RefTarget | None:
        """The staged table of a ref in a rehearsed selection (None when its pipeline is not part of it)."""
        found = self.staged.get(ref)
        if isinstance(found, str):
            raise SpecError(
                found,
                where=where,
                hint="run the selection without --sandbox/--atomic (each pipeline then reads what its "
                "upstream published)",
            )
        return found

    def resolve(self, ref: str, where: str, chain: tuple[str, ...]) -> RefTarget:
        name, _, step = ref.partition(".")
        if name in chain:
            cycle = " -> ".join((*chain[chain.index(name) :], name))
            raise SpecError(
                f"Pipelines read each other's output in a cycle: {cycle}",
                where=where,
                hint="a pipeline cannot depend on its own output; remove one of these refs",
            )
        if ref in self._targets:
            return self._targets[ref]
        node = self.graph.nodes.get(name)
        if node is None:
            raise SpecError(
                f"'ref: {ref}' names no pipeline of this project",
                where=where,
                hint=did_you_mean(name, self.graph.nodes) or "pipelines are the files under pipelines/",
            )
        if node.needs:
            raise SpecError(
                f"'ref: {ref}' reads pipeline '{name}', whose parameter '{node.needs[0]}' has no default",
                where=where,
                hint=f"give every parameter of '{name}' a default: a referenced pipeline runs without any",
            )
        bound, plan = self.compiled(name, chain)
        load = self._load_step(bound, ref, step, where)
        if plan.ephemeral:  # nothing published: the consumer inlines the plan and reads the load's input
            target = RefTarget(
                pipeline=name,
                step=load.id,
                connection="",
                table="",
                schema=list(plan.schemas[load.load.input]),
                inline=plan,
                output=load.load.input,
            )
            self._targets[ref] = target
            return target
        stage = next(s for s in plan.stages_of(StageLoadStage) if s.step_id == load.id)
        target = RefTarget(
            pipeline=name,
            step=load.id,
            connection=stage.target.connection,
            table=stage.target.table,
            schema=list(plan.schemas[stage.input]),
        )
        self._targets[ref] = target
        return target

    def published(self, ref: str, where: str, describe: Describe) -> RefTarget | None:
        """The table a ref names as it is published now (what a run reads), without compiling the
        referenced pipeline; an error while it has not been published (the run could not read it).
        None leaves the error of an unknown or parameterised pipeline to `resolve`."""
        name, _, step = ref.partition(".")
        node = self.graph.nodes.get(name)
        if node is None or node.needs or node.ephemeral:
            return None  # resolve() gives the error, or inlines an ephemeral pipeline
        bound = node.load().bind(None)
        load = self._load_step(bound, ref, step, where)
        assert load.load.table is not None
        found = describe(load.load.connection, load.load.table)
        if found is None:
            raise SpecError(
                f"'ref: {ref}' reads table {load.load.table}, which pipeline '{name}' has not published yet",
                where=where,
                hint=f"run it first, or both in order: queryforge run --select +{name}+",
            )
        connection, schema = found
        return RefTarget(
            pipeline=name, step=load.id, connection=connection, table=load.load.table, schema=schema
        )

    def compiled(self, name: str, chain: tuple[str, ...] = ()) -> tuple[BoundPipeline, ExecutionPlan]:
        """A pipeline of the project bound to its defaults and compiled, once per session."""
        if name not in self._plans:
            bound = self.graph.nodes[name].load().bind(None)
            self._plans[name] = (bound, self.compile(bound, self.resolver((*chain, name))))
        return self._plans[name]

    @staticmethod
    def _load_step(bound: BoundPipeline, ref: str, step: str, where: str) -> m.LoadStep:
        name = bound.pipeline.name
        loads = [s for s in bound.pipeline.steps if isinstance(s, m.LoadStep)]
        # An ephemeral pipeline's loads name outputs (their table, if any, is not written).
        tables = loads if bound.pipeline.ephemeral else [s for s in loads if s.load.table]
        if step:
            chosen = next((s for s in loads if s.id == step), None)
            if chosen is None:
                raise SpecError(
                    f"'ref: {ref}': pipeline '{name}' has no load step '{step}'",
                    where=where,
                    hint=did_you_mean(step, [s.id for s in loads])
                    or f"its load steps: {', '.join(s.id for s in loads) or 'none'}",
                )
        elif len(tables) == 1:
            chosen = tables[0]
        else:
            raise SpecError(
                f"'ref: {ref}': pipeline '{name}' loads "
                + ("no table" if not tables else f"{len(tables)} tables ({', '.join(s.id for s in tables)})"),
                where=where,
                hint=f"name the load step: ref: {name}.<step>"
                if tables
                else "a ref reads a pipeline's loaded table",
            )
        if not chosen.load.table and not bound.pipeline.ephemeral:
            raise SpecError(
                f"'ref: {ref}': load step '{chosen.id}' of '{name}' writes a file, not a table",
                where=where,
                hint=f"read the file itself: extract: {{path: {chosen.load.path}}}",
            )
        return chosen
