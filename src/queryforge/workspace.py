"""The one facade the CLI and the API use. It wires services together and holds no SQL of its own."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlglot import exp

from . import connectors as _connectors  # noqa: F401 -- registers built-in connectors
from . import engine as _engines  # noqa: F401 -- registers built-in engines
from .catalog import CatalogCache, CatalogEntry
from .config import CONFIG_FILE, STATE_DIR, Settings, WorkspaceConfig, load_config, process_settings
from .connectors.base import ConnectionConfig, ReadRequest
from .connectors.files import FilesConnector
from .connectors.registry import FILES, ConnectionSet
from .engine.base import CANONICAL_ENGINE, Engine, get_engine
from .engine.duckdb import ScratchPool, run_readonly
from .engine.spark import SparkWorkSession
from .errors import NotFoundError, ProductionChanged, QueryBlocked, QueryForgeError, UserError, did_you_mean
from .planner.catalog import build_context
from .planner.providers import get_provider
from .planner.service import AskOutcome, AskService, CostPolicy
from .project.described import TableDoc, describe_catalog, table_docs
from .project.docs import RUNS_SHOWN, ProjectDocs
from .project.docs import collect as collect_docs
from .project.graph import ProjectGraph, ProjectValidation, shown
from .project.lineage import Lineage
from .project.refs import ProjectRefs
from .project.site import write_site
from .quality.checks import custom_rules
from .runs.control import RunControl, record_hard_stop, worker_failure_status
from .runs.events import follow as follow_events
from .runs.executor import OK_STATUSES, Executor, Prior, RunOutcome, staged_from_json
from .runs.explain import explain
from .runs.gc import collect_staging
from .runs.plan import (
    CheckStage,
    Compiler,
    ExecutionPlan,
    ExtractStage,
    PublishStage,
    RefResolver,
    RefTarget,
    StageLoadStage,
    readable_dirs,
)
from .runs.reporter import Reporter
from .runs.spark_stream import SparkStreamRunner, stream_engine
from .runs.stream import StreamOptions, StreamRunner, StreamStatus, stream_lock
from .runs.triggers import check_dependencies, derived_key, downstream, expand_values
from .runs.worker import Slot, Watchdog, die, owner_name
from .scaffold import create_workspace
from .secrets import scrub
from .spec.loader import BoundPipeline, PipelineSource, load_file
from .spec.models import LoadStep, Trigger
from .sql.parse import SqlProblem, parse_select, table, table_references
from .sql.safety import DEFAULT_PREVIEW_LIMIT, UnsafeSql, Verdict, vet_preview
from .store import Repo, RunRecord, Store
from .store.queue import Claim, RunQueue, utcnow

SELECTION_TRIGGER = "selection:"  # the trigger of the runs of one rehearsed selection: selection:<id>
AUTO_ENGINE = "auto"  # engine: auto -- DuckDB, or Spark when the input is larger than a threshold
TABLE_ROW_BYTES = 100  # a database table's size is guessed from its row estimate


@dataclasses.dataclass(frozen=True)
class Submitted:
    """A submission's answer: the run, whether this call created it, and its place in the queue."""

    run_id: str
    created: bool
    status: str
    position: int | None


@dataclasses.dataclass(frozen=True)
class QueryResult:
    """An ad-hoc query's rows; `cut` when the query had more rows than the cap and only the first show."""

    names: list[str]
    rows: list[tuple[Any, ...]]
    cut: bool = False


if TYPE_CHECKING:  # the scheduler is imported where it is used
    from .runs.scheduler import Scheduler
    from .store.schedules import ScheduleRecord, ScheduleRepo


log = logging.getLogger(__name__)
PLAN_CACHE_S = 60.0


def refuse_ephemeral(bound: BoundPipeline) -> None:
    """An ephemeral pipeline publishes nothing and is never run: what reads it runs it, inlined."""
    if bound.pipeline.ephemeral:
        raise UserError(
            f"Pipeline {bound.pipeline.name} is ephemeral: it is inlined into the pipelines that read it, "
            "and has no run of its own",
            where=bound.source.where(("ephemeral",)),
            hint=f"run what reads it: queryforge run --select {bound.pipeline.name}+",
        )


class Workspace:
    """A folder with queryforge.yaml, pipelines/, data/ and .queryforge/ (metadata, warehouse, runs)."""

    def __init__(self, root: Path, settings: Settings | None = None) -> None:
        self.root = root.resolve()
        self.settings = settings or process_settings()
        self.config: WorkspaceConfig = load_config(self.root)
        self.state = self.root / STATE_DIR
        self.state.mkdir(exist_ok=True)
        url = self.settings.database_url or f"sqlite:///{self.state / 'metadata.db'}"
        self.store = Store(url)
        self.store.ensure_schema()
        self.repo: Repo = self.store.repo(self.settings.org, self.settings.user)
        self._plans: dict[tuple[str, int, str], tuple[float, ExecutionPlan]] = {}

    # ------------------------------------------------------------ opening
    @classmethod
    def init(
        cls, folder: Path, *, bare: bool = False, example: str | None = None, settings: Settings | None = None
    ) -> Workspace:
        create_workspace(folder, bare=bare, example=example)
        return cls(folder, settings)

    @classmethod
    def find(cls, start: Path | None = None, settings: Settings | None = None) -> Workspace:
        """The workspace containing `start` (default: the current folder or QUERYFORGE_WORKSPACE)."""
        settings = settings or process_settings()
        here = (start or Path(settings.workspace or os.getcwd())).resolve()
        for folder in (here, *here.parents):
            if (folder / CONFIG_FILE).is_file():
                return cls(folder, settings)
        raise NotFoundError(
            f"No {CONFIG_FILE} found in {here} or any parent folder",
            hint="run 'queryforge init DIR' to create a workspace, or pass --workspace DIR",
        )

    def close(self) -> None:
        self.store.dispose()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ engine
    @property
    def engine_name(self) -> str:
        """The engine runs execute on: QUERYFORGE_ENGINE / --engine, else queryforge.yaml's `engine`."""
        return self.settings.engine or self.config.engine

    def use_engine(self, name: str) -> None:
        """Run this process's runs on engine `name`, or `auto` (checked: an unknown name is an error now)."""
        if name != AUTO_ENGINE:
            get_engine(name)
        self.settings = self.settings.model_copy(update={"engine": name})

    def engine(self) -> Engine:
        """The engine named in the settings (for `auto`, the canonical one; each plan says where it runs)."""
        name = CANONICAL_ENGINE if self.engine_name == AUTO_ENGINE else self.engine_name
        return get_engine(name, max_memory=self.settings.max_memory)

    def _route(self, connections: ConnectionSet, plan: ExecutionPlan) -> tuple[str, int | None]:
        """The engine a plan runs on, and the input bytes that decided it when the engine is `auto`:
        Spark when the extracts read more than QUERYFORGE_SPARK_ABOVE_BYTES, else the canonical one."""
        if self.engine_name != AUTO_ENGINE:
            return self.engine_name, None
        size = 0
        for stage in plan.stages_of(ExtractStage):
            if stage.path:
                size += connections.files.total_bytes(stage.path)
            else:
                size += self._table_estimate(connections, stage) * TABLE_ROW_BYTES
        return ("spark" if size > self.settings.spark_above_bytes else CANONICAL_ENGINE), size

    # ------------------------------------------------------------ pipelines
    def pipeline_path(self, ref: str) -> Path:
        """A pipeline by path, or by name under pipelines/."""
        for candidate in (
            Path(ref),
            self.root / ref,
            self.root / "pipelines" / f"{ref}.yaml",
            self.root / "pipelines" / f"{ref}.yml",
        ):
            if candidate.is_file():
                return candidate.resolve()
        node = self.project().nodes.get(ref) if "/" not in ref and "." not in ref else None
        if node is not None:  # a pipeline in a sub-folder, by its name
            return node.path.resolve()
        known = [p.stem for p in (self.root / "pipelines").rglob("*.y*ml")]
        raise NotFoundError(
            f"Pipeline '{ref}' not found",
            hint=did_you_mean(Path(ref).stem, known)
            or "give a path to a .yaml file or a name under pipelines/",
        )

    def load(self, ref: str) -> PipelineSource:
        path = self.pipeline_path(ref)
        return load_file(path, display=shown(path))

    def connections(self) -> ConnectionSet:
        configs = {
            name: ConnectionConfig(
                name=name, url=spec.url, writable=spec.writable, options=spec.model_extra or {}
            )
            for name, spec in self.config.connections.items()
        }
        return ConnectionSet(configs, self.root, self.config.target)

    def bind(self, ref: str, params: dict[str, Any] | None = None) -> BoundPipeline:
        return self.load(ref).bind(params)

    def compile(
        self,
        bound: BoundPipeline,
        *,
        estimate: bool = False,
        refs: RefResolver | None = None,
        pool: ScratchPool | None = None,
        published_refs: bool = False,
    ) -> ExecutionPlan:
        """The execution plan; with `estimate`, also the engine's estimate of the rows it will scan.

        `ref:` extracts resolve through the project graph (`refs`, else a fresh resolution); `pool`
        lends the scratch session when many pipelines compile together."""
        if refs is None:
            refs = self._lazy_refs((bound.pipeline.name,), published=published_refs)
        # Plans compile on the canonical engine (DuckDB); another engine vets every step's query.
        canonical = get_engine(CANONICAL_ENGINE, max_memory=self.settings.max_memory)
        connections = self.connections()
        scratch = (
            pool.session()
            if pool is not None
            else canonical.session(None, allowed_dirs=readable_dirs(bound.pipeline, connections))
        )
        try:
            compiler = Compiler(bound, scratch, connections, refs, rules=custom_rules(self.config.rules))
            plan = compiler.compile()
            name, size = self._route(connections, plan)
            plan = dataclasses.replace(plan, input_bytes=size)
            if name != CANONICAL_ENGINE:
                plan = compiler.vet_for(plan, get_engine(name, max_memory=self.settings.max_memory))
            if estimate:
                # DuckDB guesses CSV sizes low before reading them; the files themselves tell better,
                # and the engine multiplies these through joins and generators by its plan.
                extracted = {
                    s.step_id: connections.files.estimate_rows(s.path)
                    if s.path
                    else self._table_estimate(connections, s)
                    for s in plan.stages_of(ExtractStage)
                }
                inputs = {s.input for s in plan.stages if isinstance(s, StageLoadStage | CheckStage)}
                explained = sum(
                    scratch.estimate_rows(exp.select(exp.Star()).from_(table(i)), known=extracted)
                    for i in sorted(inputs)
                )
                plan = dataclasses.replace(plan, estimated_rows=max(explained, sum(extracted.values())))
            return plan
        finally:
            scratch.close()
            connections.close()

    def _lazy_refs(
        self,
        chain: tuple[str, ...],
        *,
        published: bool = False,
        staged: dict[str, RefTarget | str] | None = None,
    ) -> RefResolver:
        """A resolver that reads the project only when a pipeline has a ref (most have none).

        `published` (runs): a ref takes the columns of the table as published now, which is what
        the run reads (a table not published yet is an error that says to run upstream first).
        Validation compiles upstream instead (what it *will* publish)."""
        session: ProjectRefs | None = None

        def resolve(ref: str, where: str) -> RefTarget:
            nonlocal session
            describe = self._describe_table if published else None  # also for refs of inlined pipelines
            session = session or ProjectRefs(self.project(), self._compile_ref, describe, staged)
            found = session.staged_target(ref, where)
            if found is None and published:
                found = session.published(ref, where, self._describe_table)
            return found or session.resolve(ref, where, chain)

        return resolve

    def _describe_table(self, connection: str | None, name: str) -> tuple[str, list[tuple[str, str]]] | None:
        connections = self.connections()
        try:
            conn = connection or connections.default_target
            return conn, connections.get(conn).describe(ReadRequest(table=name), f"table {name}")
        except QueryForgeError:
            return None
        finally:
            connections.close()

    def _compile_ref(self, bound: BoundPipeline, refs: RefResolver) -> ExecutionPlan:
        return self.compile(bound, refs=refs)

    def project(self) -> ProjectGraph:
        """The pipelines under pipelines/ (sub-folders too) and the refs between them."""
        return ProjectGraph.scan(self.root / "pipelines")

    def validate_project(self, select: str | None = None) -> ProjectValidation:
        """Every pipeline (or a selection), upstream first, each checked against what its refs will
        publish; nothing runs. The first invalid pipeline raises. A pipeline with a parameter that
        has no default cannot compile on its own: it is listed as skipped, with the reason."""
        graph = self.project()
        names = graph.select(select) if select else graph.order()
        pool = ScratchPool(self._project_dirs(graph), self.settings.max_memory)
        done = ProjectValidation()
        try:
            session = ProjectRefs(graph, lambda bound, refs: self.compile(bound, refs=refs, pool=pool))
            for name in names:
                needs = graph.nodes[name].needs
                if needs:
                    done.skipped.append((name, f"parameter '{needs[0]}' has no default"))
                else:
                    done.plans.append((name, session.compiled(name)[1]))
            return done
        finally:
            pool.close()

    def _project_dirs(self, graph: ProjectGraph) -> list[Path]:
        """Every folder some pipeline of the project may read (the shared scratch instance's fence)."""
        connections = self.connections()
        try:
            dirs: list[Path] = []
            for node in graph.nodes.values():
                try:
                    pipeline = node.load().bind(None).pipeline
                except QueryForgeError:
                    continue  # reported when that pipeline compiles
                dirs += [d for d in readable_dirs(pipeline, connections) if d not in dirs]
            return dirs or [connections.fence.root]
        finally:
            connections.close()

    def docs(self) -> ProjectDocs:
        """The project documented: pipelines, steps, published tables with column types and
        descriptions, checks, lineage and the last runs. Nothing runs; a pipeline that does not
        compile is documented with its error."""
        graph = self.project()
        pool = ScratchPool(self._project_dirs(graph), self.settings.max_memory)
        try:
            with self._connections() as conns:
                target = conns.default_target
            return collect_docs(
                graph,
                lambda bound, refs: self.compile(bound, refs=refs, pool=pool),
                lambda name: self.repo.list_runs(limit=RUNS_SHOWN * 4, pipeline=name),
                target,
                datetime.now(UTC),
                self.repo.list_check_results,
            )
        finally:
            pool.close()

    def docs_build(self, out: Path | None = None) -> tuple[ProjectDocs, Path, list[Path]]:
        """Write the static docs site (default: build/docs under the workspace)."""
        folder = out if out is not None else self.root / "build" / "docs"
        docs = self.docs()
        return docs, folder, write_site(docs, folder)

    def lineage(self, pipeline: str | None = None) -> Lineage:
        """What feeds a pipeline and what reads it (or the whole project), from the refs."""
        return Lineage.of(self.project(), pipeline)

    def _table_estimate(self, connections: ConnectionSet, stage: ExtractStage) -> int:
        """Rows a database-table extract reads, from the catalog's row estimate (0 when unknown)."""
        if stage.connection is None or stage.request is None or stage.request.table is None:
            return 0
        wanted = stage.request.table.lower()
        try:
            connector = connections.get(stage.connection)
            entry = self.catalog_cache().get(stage.connection, connector.introspect)
        except QueryForgeError:
            return 0
        found = [t.row_estimate for t in entry.tables if wanted in (t.name.lower(), t.qualified.lower())]
        return int(found[0] or 0) if found else 0

    def validate(self, ref: str, params: dict[str, Any] | None = None) -> ExecutionPlan:
        return self.compile(self.bind(ref, params))

    def explain(self, ref: str, params: dict[str, Any] | None = None) -> list[dict[str, str]]:
        plan = self.validate(ref, params)
        return explain(plan, get_engine(plan.engine).dialect)

    # ------------------------------------------------------------ runs
    def executor(
        self,
        connections: ConnectionSet,
        reporter: Reporter | None,
        *,
        repo: Repo | None = None,
        control: RunControl | None = None,
        failure_status: Callable[[QueryForgeError], tuple[str, datetime | None]] | None = None,
    ) -> Executor:
        return Executor(
            repo=repo or self.repo,
            connections=connections,
            engine=self.engine(),
            runs_dir=self.state / "runs",
            reporter=reporter,
            control=control,
            failure_status=failure_status,
        )

    def run(
        self,
        ref: str,
        params: dict[str, Any] | None = None,
        *,
        sandbox: bool = False,
        reporter: Reporter | None = None,
    ) -> RunOutcome:
        """Validate, then write + audit (+ publish unless sandbox). Errors before the run raise."""
        return self.run_source(self.load(ref), params, sandbox=sandbox, reporter=reporter)

    def run_selection(
        self,
        select: str,
        *,
        sandbox: bool = False,
        atomic: bool = False,
        reporter: Reporter | None = None,
    ) -> tuple[list[tuple[str, RunOutcome]], list[str]]:
        """The selected pipelines, upstream first, each its own write-audit-publish run.

        Stops at the first run that does not succeed: what reads its output would read stale or
        missing data. Returns the runs made and the pipelines left unrun. Every selected pipeline
        is validated against its refs first, so a broken one downstream stops the batch before any
        publish.

        `sandbox`: every pipeline is written and audited only; a pipeline reads what an upstream of
        the same selection *staged* (not production), and `commit` publishes the whole slice.
        `atomic`: the same rehearsal, then one publish of every pipeline's loads (per connection, one
        transaction) once all are audited; a failure anywhere publishes nothing."""
        checked = self.validate_project(select)
        if checked.skipped:
            name, why = checked.skipped[0]
            raise UserError(
                f"Pipeline '{name}' is selected but cannot run on its own: {why}",
                hint=f"run it alone with: queryforge run {name} --param NAME=VALUE",
            )
        # An ephemeral pipeline has no run: it is inlined into the selected pipelines that read it.
        names = [name for name, plan in checked.plans if not plan.ephemeral]
        graph = self.project()
        if sandbox or atomic:
            return self._rehearse_selection(graph, names, reporter, publish=atomic)
        done: list[tuple[str, RunOutcome]] = []
        for i, name in enumerate(names):
            outcome = self.run_source(graph.nodes[name].load(), reporter=reporter)
            done.append((name, outcome))
            if outcome.error is not None or outcome.status not in OK_STATUSES:
                return done, names[i + 1 :]
        return done, []

    def _rehearse_selection(
        self, graph: ProjectGraph, names: list[str], reporter: Reporter | None, *, publish: bool
    ) -> tuple[list[tuple[str, RunOutcome]], list[str]]:
        """Sandbox runs of a selection, each reading its upstream's staged tables; with `publish`,
        then one publish of them all."""
        trigger = f"{SELECTION_TRIGGER}{uuid.uuid4().hex[:12]}"
        # ref -> the table an upstream of this selection staged, or why a downstream cannot read it
        staged: dict[str, RefTarget | str] = {}
        done: list[tuple[str, RunOutcome]] = []
        for i, name in enumerate(names):
            bound = graph.nodes[name].load().bind(None)
            plan = self.compile(bound, refs=self._lazy_refs((name,), published=True, staged=staged))
            run_id = self._create_run(bound, sandbox=True, key=None, trigger=trigger)
            outcome = self._run_here(run_id, reporter, plan=plan)
            done.append((name, outcome))
            if outcome.error is not None or outcome.status != "audited":
                return done, names[i + 1 :]
            tables = [s.id for s in bound.pipeline.steps if isinstance(s, LoadStep) and s.load.table]
            for load in outcome.staged:
                if load.step_id not in tables:
                    continue  # a file output: no ref reads it
                target: RefTarget | str = RefTarget(
                    pipeline=name,
                    step=load.step_id,
                    connection=load.target.connection,
                    table=load.staging_name,
                    schema=list(load.columns),
                )
                if load.mode == "view":
                    target = (
                        f"'ref: {name}' reads a view of the same rehearsed selection: a view holds no "
                        "rows until it is published, so nothing downstream of it can be rehearsed"
                    )
                elif load.mode != "replace":
                    target = (
                        f"'ref: {name}' reads a {load.mode} load of the same rehearsed selection: its "
                        "staged table holds what the run adds, not the table it will publish, so "
                        "nothing downstream of it can be rehearsed"
                    )
                staged[f"{name}.{load.step_id}"] = target
                if tables == [load.step_id]:
                    staged[name] = target
        if publish:
            return self.commit_selection(trigger, reporter), []
        return done, []

    def commit_target(self, run_id: str | None) -> RunRecord:
        """The run `commit` publishes: the given one, or the newest sandbox run if it is audited."""
        return self.get_run(run_id) if run_id is not None else self._newest_sandbox_run()

    def commit_slice(
        self, run_id: str, reporter: Reporter | None = None
    ) -> list[tuple[str, RunOutcome]] | None:
        """`commit` of a run of a rehearsed selection publishes the whole selection (what it staged
        downstream was computed from what it staged upstream); None when the run is a lone one."""
        run = self.get_run(run_id)
        if not (run.trigger or "").startswith(SELECTION_TRIGGER):
            return None
        return self.commit_selection(run.trigger or "", reporter)

    def selection_runs(self, trigger: str) -> list[RunRecord]:
        """The runs of one rehearsed selection (trigger `selection:<id>`), upstream first."""
        found = self.repo.list_runs(limit=None, mode="sandbox", trigger=trigger)
        return sorted(found, key=lambda r: r.created_at)

    def commit_selection(
        self, trigger: str, reporter: Reporter | None = None
    ) -> list[tuple[str, RunOutcome]]:
        """Publish every run of a rehearsed selection at once: per connection, all their loads in one
        transaction (a slice is never half-published on one database). Refused unless every run
        of the slice is audited."""
        runs = self.selection_runs(trigger)
        if not runs:
            raise NotFoundError(
                f"The rehearsed selection {trigger} has no runs",
                hint="rehearse it: queryforge run --select ... --sandbox",
            )
        pending = [r for r in runs if r.status != "audited"]
        if pending:
            listed = ", ".join(f"{r.pipeline_name} ({r.id}, {r.status})" for r in pending)
            raise UserError(
                f"The rehearsed selection cannot be published as a whole: not audited: {listed}",
                hint="rehearse it again: queryforge run --select ... --sandbox",
            )
        outcomes = self.executor(self.connections(), reporter).commit_many([r.id for r in runs])
        for outcome in outcomes:
            self._published(outcome)
        return [(r.pipeline_name, o) for r, o in zip(runs, outcomes, strict=True)]

    def run_source(
        self,
        source: PipelineSource,
        params: dict[str, Any] | None = None,
        *,
        sandbox: bool = False,
        reporter: Reporter | None = None,
    ) -> RunOutcome:
        bound = source.bind(params)
        refuse_ephemeral(bound)  # before compiling: its refs need not be published
        plan = self.compile(bound, published_refs=True)
        run_id = self._create_run(bound, sandbox=sandbox, key=None, trigger="cli")
        return self._run_here(run_id, reporter, plan=plan)

    def stream(
        self,
        ref: str,
        params: dict[str, Any] | None = None,
        *,
        stop: threading.Event | None = None,
        max_batches: int | None = None,
        on_progress: Callable[[StreamStatus, bool], None] | None = None,
    ) -> tuple[str, StreamStatus]:
        """Run a streaming pipeline until `stop` is set (or `max_batches` committed); returns the
        run id and its figures. One process per stream (a lock in the workspace); a run left
        `running` by a killed process is closed here, and the new one resumes from the sink."""
        bound = self.load(ref).bind(params)
        if bound.pipeline.mode != "streaming":
            raise UserError(
                f"Pipeline '{bound.pipeline.name}' is not a streaming pipeline",
                hint="run it with 'queryforge run', or add 'mode: streaming' to stream it",
            )
        plan = self.compile(bound)
        connections = self.connections()
        try:
            engine = stream_engine(self.engine_name, plan, connections)
        finally:
            connections.close()
        folder = self.state / "streams" / bound.pipeline.name
        folder.mkdir(parents=True, exist_ok=True)
        with stream_lock(folder / "lock", bound.pipeline.name):
            for stale in self.repo.list_runs(status="running", pipeline=bound.pipeline.name, limit=100):
                if stale.trigger == "stream":
                    self.repo.update_run(
                        stale.id,
                        status="failed",
                        ended_at=utcnow(),
                        error_class="INTERNAL",
                        error_message="The stream process stopped without a clean shutdown; the next "
                        "start resumed from the position the sink committed",
                    )
            run_id = self._create_run(bound, sandbox=False, key=None, trigger="stream")
            self.repo.update_run(run_id, status="running", started_at=utcnow())
            return run_id, self._serve_stream(
                run_id, bound, plan, folder, stop, max_batches, on_progress, engine=engine
            )

    def _serve_stream(
        self,
        run_id: str,
        bound: BoundPipeline,
        plan: ExecutionPlan,
        folder: Path,
        stop: threading.Event | None,
        max_batches: int | None,
        on_progress: Callable[[StreamStatus, bool], None] | None,
        *,
        engine: str = CANONICAL_ENGINE,
    ) -> StreamStatus:
        def progress(status: StreamStatus, notable: bool) -> None:
            line = status.summary()
            self.repo.stream_progress(
                run_id, status.to_json(), (status.last_error or line) if notable else line
            )
            if on_progress is not None:
                on_progress(status, notable)

        trigger = bound.pipeline.trigger or Trigger()
        source_step = next(s for s in plan.stages_of(ExtractStage) if s.stream)
        step = bound.pipeline.step(source_step.step_id)
        connections = self.connections()
        # On Spark the session's work area is the stream's folder (one Parquet dataset per step).
        session = get_engine(engine, max_memory=self.settings.max_memory).session(
            folder if engine == "spark" else None,
            allowed_dirs=[folder, *plan.allowed_dirs],
            schemas=plan.schemas,
        )
        options = StreamOptions(
            where=lambda step_id: bound.source.step_where(step_id, bound.pipeline.step(step_id).kind),
            max_rows=trigger.max_rows,
            max_wait_s=trigger.max_wait_s,
            on_check_failure=bound.pipeline.on_check_failure,
            stop=stop or threading.Event(),
            progress=progress,
            max_batches=max_batches,
            file_format=getattr(step.body, "format", None),
        )
        runner: StreamRunner | SparkStreamRunner | None = None
        try:
            if isinstance(session, SparkWorkSession):
                runner = SparkStreamRunner(plan, connections, session, folder, options)
            else:
                runner = StreamRunner(plan, connections, session, folder, options)
            status = runner.run()
        except BaseException as exc:
            status = runner.status if runner is not None else StreamStatus(stream=bound.pipeline.name)
            error = exc if isinstance(exc, QueryForgeError) else None
            status.last_error = scrub(str(exc))
            self.repo.update_run(
                run_id,
                status="cancelled" if isinstance(exc, KeyboardInterrupt) else "failed",
                ended_at=utcnow(),
                error_class=str(error.failure_class) if error is not None else "INTERNAL",
                error_message=status.last_error,
                result=status.to_json() | {"engine": engine},
            )
            raise
        finally:
            session.close()
            connections.close()
        self.repo.update_run(
            run_id, status="succeeded", ended_at=utcnow(), result=status.to_json() | {"engine": engine}
        )
        return status

    def _create_run(
        self,
        bound: BoundPipeline,
        *,
        sandbox: bool,
        key: str | None,
        trigger: str,
        backfill_id: str | None = None,
        resumed_from: str | None = None,
        version_id: int | None = None,
    ) -> str:
        if bound.pipeline.mode == "streaming" and trigger != "stream":
            raise UserError(
                f"Pipeline '{bound.pipeline.name}' is a streaming pipeline: it runs until stopped",
                hint=f"start it with 'queryforge stream {bound.pipeline.name}'",
            )
        refuse_ephemeral(bound)
        pipeline_id, saved_version, _ = self.repo.save_pipeline_version(
            bound.pipeline.name,
            bound.source.content_hash(),
            bound.source.canonical_text(),
            bound.source.origin,
        )
        return self.repo.create_run(
            pipeline_id=pipeline_id,
            version_id=version_id or saved_version,
            pipeline_name=bound.pipeline.name,
            mode="sandbox" if sandbox else "publish",
            params=bound.params,
            idempotency_key=key,
            trigger=trigger,
            max_concurrent=bound.pipeline.concurrency,
            backfill_id=backfill_id,
            resumed_from=resumed_from,
        )

    def _run_here(
        self, run_id: str, reporter: Reporter | None, *, plan: ExecutionPlan | None = None
    ) -> RunOutcome:
        """Execute a queued run in this process, holding its lease like a worker would: if this
        process dies, the lease runs out and a worker (or `runs resume`) continues the run."""
        queue = self.queue()
        claim = queue.take(run_id, owner_name("cli"))
        if claim is None:
            run = self.get_run(run_id)
            raise UserError(
                f"Run {run.id} is {run.status}" + (f", held by {run.lease_owner}" if run.lease_owner else ""),
                hint="see it with 'queryforge runs show'",
            )
        control = RunControl()
        settings = self.settings

        def stopped(code: int) -> None:
            try:
                run = self.get_run(claim.run_id)
                log.error(
                    "Run %s stopped: %s (%s)", run.id, run.error_message or "its lease was lost", run.status
                )
            finally:  # the metadata DB may be unreachable: stop all the same
                die(code)

        try:
            with Watchdog(
                queue, claim, control, self._hard_stop, settings.heartbeat_s, settings.cancel_grace_s, stopped
            ):
                return self.execute_claim(claim, control, reporter=reporter, plan=plan, requeue=False)
        finally:  # after the watchdog stopped (see Slot.execute)
            queue.release(claim.run_id, claim.owner)

    def _published(self, outcome: RunOutcome) -> RunOutcome:
        """A publish changes what a connection holds: its cached catalog is stale from now on."""
        for name in {t.connection for t in outcome.published}:
            self.catalog_cache().invalidate(name)
        return outcome

    def commit(
        self, run_id: str | None = None, reporter: Reporter | None = None, *, rerun: bool = False
    ) -> RunOutcome:
        """Publish an audited sandbox run: the given one, or else the newest sandbox run if it is audited.

        With no id, commit never reaches past a newer sandbox run that failed (or is still running) to
        an older audited one: that would publish stale data without a word. It refuses and lists the
        audited runs instead. If production changed since the run staged its data, commit refuses;
        with `rerun` it runs the same pipeline version with the same parameters again (write, audit,
        publish) instead.
        """
        run = self.get_run(run_id) if run_id is not None else self._newest_sandbox_run()
        if (run.trigger or "").startswith(SELECTION_TRIGGER):
            raise UserError(
                f"Run {run.id} ({run.pipeline_name}) belongs to a rehearsed selection: it read what its "
                "upstream staged, so it is published only with the whole selection"
                + (", and --rerun cannot re-run a selection" if rerun else ""),
                hint="queryforge commit (without --rerun) publishes the selection; or rehearse it again",
            )
        age = _age(run.ended_at or run.created_at)
        note = f"Committing run {run.id} ({run.pipeline_name}, audited {age})"
        try:
            outcome = self._published(self.executor(self.connections(), reporter).commit(run.id))
            outcome.note = note
            return outcome
        except ProductionChanged:
            if not rerun:
                raise
        source = self._stored_source(self.repo, run)
        self.executor(self.connections(), None).discard(staged_from_json(run.staged))
        self.repo.update_run(run.id, status="cancelled", staged=[], error_message="superseded by a re-run")
        return self.run_source(source, run.params, reporter=reporter)

    def _newest_sandbox_run(self) -> RunRecord:
        """The newest sandbox run, which `commit` without an id publishes only if it is audited."""
        newest = self.repo.list_runs(limit=1, mode="sandbox")
        if not newest:
            raise NotFoundError(
                "There is no sandbox run to commit", hint="run a pipeline with --sandbox first"
            )
        run = newest[0]
        if run.status == "audited":
            return run
        audited = self.repo.list_runs(limit=5, status="audited", mode="sandbox")
        candidates = "; ".join(
            f"{r.id} ({r.pipeline_name}, audited {_age(r.ended_at or r.created_at)})" for r in audited
        )
        raise UserError(
            f"The newest sandbox run, {run.id} ({run.pipeline_name}, {run.status} "
            f"{_age(run.ended_at or run.created_at)}), is not audited, so commit will not fall back "
            "to an older run by itself. "
            + (f"Audited runs: {candidates}." if audited else "There is no audited run."),
            hint=f"name the run to publish: queryforge commit {audited[0].id}"
            if audited
            else "run the pipeline again with --sandbox, then commit that run",
        )

    def get_run(self, run_id: str) -> RunRecord:
        try:
            return self.repo.get_run(run_id)
        except LookupError as exc:
            if "ambiguous" in str(exc).lower():
                raise
            recent = [r.id for r in self.repo.list_runs(limit=20)]
            raise NotFoundError(
                f"Run '{run_id}' not found",
                hint=did_you_mean(run_id, recent) or "list runs with 'queryforge runs list'",
            ) from None

    def list_runs(
        self, *, limit: int = 20, status: str | None = None, pipeline: str | None = None
    ) -> list[RunRecord]:
        return self.repo.list_runs(limit=limit, status=status, pipeline=pipeline)

    def run_detail(self, run_id: str | None = None, preview_rows: int = 5) -> dict[str, Any]:
        """Everything `runs show` displays: the run, its steps, checks, snapshots and staged previews."""
        if run_id is None:
            newest = self.repo.list_runs(limit=1)
            if not newest:
                raise NotFoundError(
                    "There are no runs yet", hint="run a pipeline with 'queryforge run PIPELINE'"
                )
            run_id = newest[0].id
        run = self.get_run(run_id)
        staged = staged_from_json(run.staged)
        previews: list[dict[str, Any]] = []
        if staged:
            with self._connections() as conns:
                for load in staged:
                    item: dict[str, Any] = {
                        "step_id": load.step_id,
                        "target": dataclasses.asdict(load.target),
                        "mode": load.mode,
                        "rows": load.rows,
                        "diff": load.diff,
                        "columns": [],
                        "preview": [],
                    }
                    try:
                        table = conns.get(load.target.connection).preview(load, preview_rows)
                        item |= {"columns": table.schema.names, "preview": table.to_pylist()}
                    except QueryForgeError as exc:  # a running run's worker may hold the DuckDB file
                        item["preview_error"] = exc.message
                    previews.append(item)
        return {
            "run": dataclasses.asdict(run),
            "steps": [dataclasses.asdict(s) for s in self.repo.list_steps(run.id)],
            "checks": self.repo.list_check_results(run.id),
            "snapshots": self.repo.list_schema_snapshots(run.id),
            "staged": previews,
        }

    @contextmanager
    def _connections(self) -> Iterator[ConnectionSet]:
        conns = self.connections()
        try:
            yield conns
        finally:
            conns.close()

    def read_table(
        self, table: str, connection: str | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """All rows of a production table (tests and small previews; ad-hoc SQL comes with the planner)."""
        with self._connections() as conns:
            connector = conns.sql(connection or self.config.target)
            data = connector.read(ReadRequest(table=table)).read_all()
        if data is None:
            raise UserError(f"Table '{table}' could not be read")
        return data.schema.names, [tuple(r.values()) for r in data.to_pylist()]

    # ------------------------------------------------------------ the queue
    def queue(self) -> RunQueue:
        return RunQueue(
            self.store.engine,
            lease_s=self.settings.lease_s,
            max_lost_leases=self.settings.max_lost_leases,
            org_limit=self.settings.org_concurrency,
        )

    def submit(
        self,
        ref: str,
        params: dict[str, Any] | None = None,
        *,
        sandbox: bool = False,
        idempotency_key: str | None = None,
        force: bool = False,
        trigger: str = "cli",
    ) -> Submitted:
        """Validate and queue a run; the same key (given, or derived from org + version + params)
        returns the run already submitted instead of a second one. `force` queues a new run anyway."""
        return self.submit_source(
            self.load(ref),
            params,
            sandbox=sandbox,
            idempotency_key=idempotency_key,
            force=force,
            trigger=trigger,
        )

    def submit_source(
        self,
        source: PipelineSource,
        params: dict[str, Any] | None = None,
        *,
        sandbox: bool = False,
        idempotency_key: str | None = None,
        force: bool = False,
        trigger: str = "cli",
        backfill_id: str | None = None,
        version_id: int | None = None,
        validate: bool = True,
    ) -> Submitted:
        bound = source.bind(params)
        mode = "sandbox" if sandbox else "publish"
        key = (
            None
            if force
            else idempotency_key or derived_key(self.repo.org_id, source.content_hash(), bound.params, mode)
        )
        existing = self.repo.run_by_key(key) if key else None
        if existing is None:
            if validate:
                self.compile(bound)  # a broken pipeline fails here, not later on a worker
                self.check_dependencies()
            run_id = self._create_run(
                bound,
                sandbox=sandbox,
                key=key,
                trigger=trigger,
                backfill_id=backfill_id,
                version_id=version_id,
            )
        else:
            run_id = existing
        return self._submitted(run_id, created=existing is None)

    def worker_slot(self, index: int, stop: Any = None) -> Slot:
        """One slot of `queryforge worker`: claims runs of this metadata DB and executes them here."""
        slot = Slot(
            self.queue(),
            lambda claim, control: self.execute_claim(claim, control, requeue=True).status,
            self._hard_stop,
            owner_name(index),
            heartbeat_s=self.settings.heartbeat_s,
            grace_s=self.settings.cancel_grace_s,
        )
        if stop is not None:
            slot.stop = stop
        return slot

    def execute_claim(
        self,
        claim: Claim,
        control: RunControl,
        *,
        reporter: Reporter | None = None,
        plan: ExecutionPlan | None = None,
        requeue: bool,
    ) -> RunOutcome:
        """Execute a claimed run: resume it where an earlier attempt stopped, reusing what it left."""
        repo = self.store.repo(claim.org_id, self.settings.user)
        run = repo.get_run(claim.run_id)
        executor = self.executor(
            self.connections(),
            reporter,
            repo=repo,
            control=control,
            failure_status=worker_failure_status(claim.tries, self.settings.run_attempts)
            if requeue
            else None,
        )
        try:
            plan = plan or self._plan_of(repo, run)
        except QueryForgeError as exc:  # the pipeline no longer validates (a table went away...)
            failed = RunOutcome(run_id=run.id, status="failed")
            executor.fail(failed, exc)
            return failed
        steps = {s.step_id: s for s in repo.list_steps(run.id)}
        prior = None
        if steps:
            prior = Prior(run.id, steps, staged_from_json(run.staged), same_run=True)
        elif run.resumed_from:
            earlier = {s.step_id: s for s in repo.list_steps(run.resumed_from)}
            prior = Prior(run.resumed_from, earlier, [], same_run=False)
        outcome = executor.execute(plan, run.id, run.mode, prior=prior, skip=run.skip)
        self._published(outcome)
        if outcome.status == "succeeded" and run.mode == "publish":
            self._start_downstream(repo, run)
        return outcome

    def _plan_of(self, repo: Repo, run: RunRecord) -> ExecutionPlan:
        """The compiled plan of a stored version with the run's params. A worker keeps plans for
        PLAN_CACHE_S: runs of one pipeline (a backfill, a busy schedule) compile and validate once."""
        key = (run.org_id, run.pipeline_version_id, json.dumps(run.params, sort_keys=True, default=str))
        cached = self._plans.get(key)
        if cached is not None and time.monotonic() - cached[0] < PLAN_CACHE_S:
            return cached[1]
        plan = self.compile(self._stored_source(repo, run).bind(run.params), published_refs=True)
        if len(self._plans) > 256:
            self._plans.clear()
        self._plans[key] = (time.monotonic(), plan)
        return plan

    def _hard_stop(self, claim: Claim, reason: str, step: str | None) -> None:
        record_hard_stop(self.store.repo(claim.org_id, self.settings.user), claim.run_id, reason, step)

    def _stored_source(self, repo: Repo, run: RunRecord) -> PipelineSource:
        version = repo.get_pipeline_version(run.pipeline_version_id)
        return PipelineSource(
            raw=json.loads(version["spec_json"]), origin=version["source_path"] or run.pipeline_name
        )

    # ------------------------------------------------------------ dependencies
    def pipeline_graph(self) -> dict[str, list[str]]:
        """Pipeline name -> the pipelines it runs after (from pipelines/*.yaml)."""
        graph: dict[str, list[str]] = {}
        for path in sorted((self.root / "pipelines").glob("*.y*ml")):
            try:
                raw = load_file(path).raw
            except QueryForgeError:
                continue  # a broken file is reported when it is used
            after = raw.get("after") or []
            graph[str(raw.get("name") or path.stem)] = (
                [str(a) for a in after] if isinstance(after, list) else []
            )
        return graph

    def check_dependencies(self) -> None:
        check_dependencies(self.pipeline_graph())

    def _start_downstream(self, repo: Repo, run: RunRecord) -> None:
        """Queue the pipelines that run `after:` this one, once per upstream run."""
        graph = self.pipeline_graph()
        for name in downstream(graph, run.pipeline_name):
            try:
                source = self.load(name)
                declared = source.raw.get("params") or {}
                params = {k: v for k, v in run.params.items() if k in declared}
                self.submit_source(
                    source, params, idempotency_key=f"after:{run.id}:{name}", trigger=f"after:{run.id}"
                )
            except QueryForgeError as exc:
                repo.audit(
                    action="trigger",
                    decision="block",
                    reason=f"could not queue '{name}' after run {run.id}: {exc.render()}",
                )

    # ------------------------------------------------------------ resume, retry, cancel
    def resume(
        self,
        run_id: str,
        *,
        params: dict[str, Any] | None = None,
        pipeline: str | None = None,
        queue: bool = False,
        retry: bool = False,
        skip: list[str] | None = None,
        reporter: Reporter | None = None,
    ) -> RunOutcome | Submitted:
        """Continue a run from its first unfinished step, reusing what earlier attempts produced.

        With `params` or an edited `pipeline`, a new run of the new version starts instead and reuses
        the outputs of steps whose spec and inputs are unchanged (same content hash). With `queue`,
        a worker runs it; otherwise it runs here. `retry` insists the run has a failed step. `skip`
        (skip_and_continue) leaves out those steps and everything that depends on them; the rest
        runs and publishes.
        """
        run = self.get_run(run_id)
        if (run.trigger or "").startswith(SELECTION_TRIGGER):
            raise UserError(
                f"Run {run.id} ({run.pipeline_name}) is part of a rehearsed selection: it read what its "
                "upstream staged in that selection, which a resume cannot read again",
                hint="rehearse the selection again: queryforge run --select ... --sandbox",
            )
        if skip and (params or pipeline):
            raise UserError(
                "--skip cannot be combined with --param or --pipeline",
                hint="resume the edited run first, then skip a step of it",
            )
        if params or pipeline:
            source = self.load(pipeline) if pipeline else self._stored_source(self.repo, run)
            bound = source.bind({**run.params, **(params or {})})
            plan = self.compile(bound)
            new_id = self._create_run(
                bound,
                sandbox=run.mode == "sandbox",
                key=None,
                trigger=f"resume:{run.id}",
                resumed_from=run.id,
            )
            if queue:
                return self._submitted(new_id)
            return self._run_here(new_id, reporter, plan=plan)
        if retry and not any(s.status == "failed" for s in self.repo.list_steps(run.id)):
            raise UserError(
                f"Run {run.id} has no failed step to retry (it is {run.status})",
                hint=f"use 'queryforge runs resume {run.id}' to continue an interrupted run",
            )
        if skip and run.status not in ("succeeded", "audited"):
            self._skip_steps(run, skip)
        self._requeue(run)
        if queue:
            return self._submitted(run.id)
        return self._run_here(run.id, reporter)

    def _skip_steps(self, run: RunRecord, skip: list[str]) -> None:
        """Record steps to leave out of a resumed run, after checking the DAG allows it: a real step,
        not a check (it guards the publish), not one that already succeeded, and something is left
        to publish."""
        if run.status == "running":
            self.queue().reap()  # a run whose worker died is queued again, and can be changed
            run = self.get_run(run.id)
        if run.status == "running":
            raise UserError(
                f"Run {run.id} is running; steps can be skipped only when it stopped",
                hint="cancel it first, or wait for it to fail",
            )
        plan = self._plan_of(self.repo, run)
        steps = {s.step_id: s.status for s in self.repo.list_steps(run.id)}
        stages = {s.step_id: s for s in plan.stages if not isinstance(s, PublishStage)}
        for step_id in skip:
            if step_id not in stages:
                raise UserError(
                    f"Run {run.id} has no step '{step_id}'",
                    hint=did_you_mean(step_id, stages)
                    or f"see its steps with 'queryforge runs show {run.id}'",
                )
            if isinstance(stages[step_id], CheckStage):
                raise UserError(
                    f"Check '{step_id}' cannot be skipped: checks guard what is published",
                    hint="fix the data or the rule, or give the rule severity: warn",
                )
            if steps.get(step_id) in ("succeeded", "warn"):
                raise UserError(
                    f"Step '{step_id}' of run {run.id} already succeeded; only unfinished steps can be "
                    "skipped",
                    hint=f"resume without --skip: 'queryforge runs resume {run.id}'",
                )
        skipped = plan.skipped_with(skip)  # replaces an earlier --skip: a wrong choice can be undone
        for check in plan.stages_of(CheckStage):
            if check.step_id in skipped and check.input not in skipped:
                raise UserError(
                    f"Skipping '{skipped[check.step_id]}' would skip check '{check.step_id}', which "
                    f"reads it, while '{check.input}' (what the check audits) would still be published",
                    hint="fix the failing step instead, or skip what the check audits as well",
                )
        if all(load.step_id in skipped for load in plan.stages_of(StageLoadStage)):
            raise UserError(
                f"Skipping {', '.join(repr(s) for s in skip)} would skip every load of run {run.id}: "
                "nothing would be published",
                hint="fix the failing step and resume, or cancel the run",
            )
        self.repo.update_run(run.id, skip=sorted(set(skip)))
        self.repo.audit(
            action="skip",
            decision="info",
            reason=f"run {run.id} resumes without {', '.join(sorted(skipped))} (skip_and_continue)",
        )

    def _requeue(self, run: RunRecord, *, audit: str | None = None) -> None:
        if run.status == "running":
            self.queue().reap()
            run = self.get_run(run.id)
            if run.status == "running":
                raise UserError(
                    f"Run {run.id} is running, held by {run.lease_owner} until "
                    f"{run.lease_expires_at:%H:%M:%S} UTC",
                    hint="cancel it first, or wait: a worker resumes a run whose lease ran out",
                )
        if run.status in ("succeeded", "audited"):
            raise UserError(
                f"Run {run.id} already {run.status}; there is nothing to resume",
                hint="pass --param or --pipeline to run an edited version, reusing unchanged steps"
                if run.status == "succeeded"
                else f"publish it with 'queryforge commit {run.id}'",
            )
        if run.status != "queued":
            self.repo.update_run(
                run.id,
                status="queued",
                ended_at=None,
                not_before=None,
                cancel_requested_at=None,
                lost_leases=0,
            )
        if audit:
            self.repo.audit(action=audit, decision="info", reason=f"re-queued run {run.id} ({run.status})")

    def _submitted(self, run_id: str, *, created: bool = True) -> Submitted:
        run = self.repo.get_run(run_id)
        return Submitted(run.id, created, run.status, self.queue().positions(run.org_id).get(run.id))

    def cancel(self, run_id: str) -> str:
        """Cancel a queued run now, or ask a running one to stop (between steps; killed after the
        grace period). Returns `cancelled` or `cancelling`."""
        run = self.get_run(run_id)
        answer = self.queue().cancel(run.id)
        if answer is None:
            raise UserError(
                f"Run {run.id} is {run.status}; only queued or running runs can be cancelled",
                hint="see it with 'queryforge runs show'",
            )
        if answer == "cancelled":
            staged = staged_from_json(run.staged)
            if staged:
                with self._connections() as conns:
                    self.executor(conns, None).discard(staged)
        return answer

    def positions(self) -> dict[str, int]:
        return self.queue().positions(self.repo.org_id)

    # ------------------------------------------------------------ dead-letter queue
    def dead_letters(
        self, *, since: timedelta | None = None, pipeline: str | None = None
    ) -> list[dict[str, Any]]:
        """Dead-lettered runs of this org, newest first: the run, the step that failed, and the
        input hash (pipeline version + params) that identifies exactly what was run."""
        runs = self.repo.list_runs(limit=10_000, status="dead_lettered", pipeline=pipeline)
        if since is not None:
            cutoff = utcnow() - since
            runs = [r for r in runs if (r.ended_at or r.created_at) >= cutoff]
        entries = []
        for run in runs:
            version = self.repo.get_pipeline_version(run.pipeline_version_id)
            failed = [s.step_id for s in self.repo.list_steps(run.id) if s.status == "failed"]
            entries.append(
                {
                    **dataclasses.asdict(run),
                    "failed_steps": failed,
                    "input_hash": derived_key(run.org_id, version["content_hash"], run.params, run.mode)[5:],
                }
            )
        return entries

    def requeue_dead_letter(self, run_id: str) -> Submitted:
        run = self.get_run(run_id)
        if run.status != "dead_lettered":
            raise UserError(
                f"Run {run.id} is {run.status}, not in the dead-letter queue",
                hint="list dead-lettered runs with 'queryforge dlq list'",
            )
        self._requeue(run, audit="dlq_requeue")
        return self._submitted(run.id)

    # ------------------------------------------------------------ backfills
    def backfill(
        self,
        ref: str,
        param: str,
        values_spec: str,
        params: dict[str, Any] | None = None,
        *,
        only: set[str] | None = None,
    ) -> dict[str, Any]:
        """One queued run per value of `param`, all pinned to the pipeline's current version.

        `only` (`failed`, `missing`) keeps just the values whose newest run of this pipeline failed
        (failed, dead-lettered, cancelled) or that have no run at all.
        """
        source = self.load(ref)
        declared = source.raw.get("params") or {}
        if param not in declared:
            raise UserError(
                f"Pipeline '{ref}' has no parameter '{param}'",
                hint=did_you_mean(param, declared) or "backfill one of the parameters under 'params:'",
            )
        values = expand_values(values_spec)
        base = dict(params or {})
        first = source.bind({**base, param: values[0]})
        self.compile(first)
        name = first.pipeline.name
        if only:
            latest: dict[str, str] = {}
            for run in reversed(self.repo.list_runs(limit=100_000, pipeline=name)):
                latest[str(run.params.get(param))] = run.status
            keep = []
            for value in values:
                status = latest.get(value)
                if ("missing" in only and status is None) or (
                    "failed" in only and status in ("failed", "dead_lettered", "cancelled")
                ):
                    keep.append(value)
            values = keep
        _, version_id, _ = self.repo.save_pipeline_version(
            name, source.content_hash(), source.canonical_text(), source.origin
        )
        backfill_id = self.repo.create_backfill(
            pipeline_name=name, version_id=version_id, param=param, values=values, params=base
        )
        for value in values:
            self.submit_source(
                source,
                {**base, param: value},
                idempotency_key=f"backfill:{backfill_id}:{value}",
                trigger=f"backfill:{backfill_id}",
                backfill_id=backfill_id,
                version_id=version_id,
                validate=False,
            )
        return self.backfill_status(backfill_id)

    def backfill_status(self, backfill_id: str) -> dict[str, Any]:
        """The backfill and, per value, the state of its run."""
        info = self.repo.get_backfill(backfill_id)
        runs = {str(r.params.get(info["param"])): r for r in self.repo.runs_of_backfill(info["id"])}
        positions = self.queue().positions(self.repo.org_id)
        per_value = [
            {
                "value": v,
                "run_id": runs[v].id if v in runs else None,
                "status": runs[v].status if v in runs else "missing",
                "position": positions.get(runs[v].id) if v in runs else None,
            }
            for v in (str(x) for x in info["values"])
        ]
        counts: dict[str, int] = {}
        for item in per_value:
            status = str(item["status"])
            counts[status] = counts.get(status, 0) + 1
        return {**info, "runs": per_value, "counts": counts}

    def backfills(self) -> list[dict[str, Any]]:
        return [self.backfill_status(b["id"]) for b in self.repo.list_backfills()]

    def cancel_backfill(self, backfill_id: str) -> dict[str, Any]:
        info = self.repo.get_backfill(backfill_id)
        self.repo.set_backfill_status(info["id"], "cancelled")
        for run in self.repo.runs_of_backfill(info["id"]):
            if run.status in ("queued", "running"):
                self.cancel(run.id)
        return self.backfill_status(info["id"])

    # ------------------------------------------------------------ events and schedules
    def events(self, run_id: str, *, follow: bool = False) -> Iterator[dict[str, Any]]:
        """A run's state changes in order; with `follow`, live until it ends."""
        return follow_events(self.repo, self.get_run(run_id).id, live=follow)

    def _schedule_repo(self) -> ScheduleRepo:
        from .store.schedules import ScheduleRepo

        return ScheduleRepo(self.store.engine, org_id=self.repo.org_id, user=self.repo.user)

    def _schedule_info(self, record: ScheduleRecord, count: int = 3) -> dict[str, Any]:
        from .runs.scheduler import next_fires

        zone = ZoneInfo(record.timezone)
        upcoming = [] if record.paused else next_fires(record.cron, record.timezone, utcnow(), count)
        return {
            **dataclasses.asdict(record),
            "next": [t.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z") for t in upcoming],
        }

    def add_schedule(
        self,
        pipeline: str,
        cron: str,
        timezone: str,
        *,
        name: str | None = None,
        params: dict[str, Any] | None = None,
        catch_up: str = "latest",
    ) -> dict[str, Any]:
        """Fire `pipeline` on a cron in a time zone; validated now (the pipeline and its params too)."""
        from .runs.scheduler import CATCH_UP, next_fires
        from .runs.scheduler import validate as validate_cron

        validate_cron(cron, timezone)
        if catch_up not in CATCH_UP:
            raise UserError(
                f"Unknown catch-up policy '{catch_up}'",
                hint=did_you_mean(catch_up, CATCH_UP) or "none, latest or all",
            )
        source = self.load(pipeline)
        bound = source.bind(params)
        self.compile(bound)
        record = self._schedule_repo().add(
            name=name or bound.pipeline.name,
            pipeline=pipeline,
            cron=cron,
            timezone=timezone,
            params=dict(params or {}),
            catch_up=catch_up,
            next_fire_at=next_fires(cron, timezone, utcnow(), 1)[0],
        )
        return self._schedule_info(record)

    def schedules(self, count: int = 3) -> list[dict[str, Any]]:
        return [self._schedule_info(r, count) for r in self._schedule_repo().list()]

    def change_schedule(self, name: str, action: str) -> dict[str, Any]:
        """pause, resume (from the next tick after now: paused ticks never fire) or remove."""
        from .runs.scheduler import next_fires

        schedules = self._schedule_repo()
        record = schedules.get(name)
        if action == "remove":
            schedules.remove(name)
            return {**dataclasses.asdict(record), "removed": True}
        if action == "pause":
            record = schedules.set_paused(name, True, record.next_fire_at)
        else:
            record = schedules.set_paused(
                name, False, next_fires(record.cron, record.timezone, utcnow(), 1)[0]
            )
        return self._schedule_info(record)

    def scheduler(self) -> Scheduler:
        """The scheduler loop of this metadata DB: it queues one run per due tick."""
        from .runs.scheduler import Scheduler

        def submit(schedule: ScheduleRecord, tick: datetime, key: str) -> str:
            ws = self if schedule.org_id == self.repo.org_id else self.for_org(schedule.org_id)
            return ws.submit(
                schedule.pipeline, schedule.params, idempotency_key=key, trigger=f"schedule:{schedule.name}"
            ).run_id

        return Scheduler(self.store.engine, submit)

    def for_org(self, org: str) -> Workspace:
        """The same folder seen by another org (a worker or scheduler serving every org)."""
        return Workspace(self.root, self.settings.model_copy(update={"org": org}))

    # ------------------------------------------------------------ plain English and ad-hoc SQL
    def ask(
        self,
        request: str,
        *,
        consent: Callable[[AskOutcome], bool | None],
        reporter: Reporter | None = None,
        provider: str | None = None,
        approve_cost: bool = False,
    ) -> AskOutcome:
        """Draft a pipeline from a request, gate and rehearse it, repair up to 3 times, publish on consent."""
        with self._connections() as conns:
            docs = self.table_docs(conns.default_target)
            ctx = build_context(
                conns,
                self.root,
                catalog=self.catalog_cache(),
                descriptions={key: (d.description, d.columns) for key, d in docs.items()},
            )
        cost = CostPolicy(
            cap_rows=self.settings.cost_cap_rows,
            budget_rows_per_hour=self.settings.cost_budget_rows_per_hour,
            approved=approve_cost,
        )
        service = AskService(
            self,
            ctx,
            drafts_dir=self.state / "asks",
            provider=get_provider(provider, config=self.config.planner),
            reporter=reporter,
            cost=cost,
        )
        return service.ask(request, consent=consent)

    def query(
        self, sql: str, *, limit: int = DEFAULT_PREVIEW_LIMIT, connection: str | None = None
    ) -> QueryResult:
        """A read-only, policy-checked query over the warehouse or a database connection.

        Two walls: the AST policy first, then the engine: the warehouse runs in a sandboxed DuckDB
        with a memory ceiling and a time limit, PostgreSQL and MySQL run the query as one prepared
        statement in a READ ONLY transaction with a time limit (and the database role's privileges
        are the wall that really holds). At most `limit` rows come back, aggregated or not.
        """
        if connection is not None and connection != self.config.target:
            names, rows = self._query_connection(sql, limit, connection)
        else:
            tables: set[str] = set()
            if (self.root / self._warehouse_path()).exists():
                with self._connections() as conns:
                    for t in conns.sql(self.config.target).introspect():
                        tables |= {t.name.lower(), t.qualified.lower()}
            verdict = self._vet(sql, tables, limit)
            names, rows = run_readonly(
                self.root / self._warehouse_path(),
                verdict.sql,
                allowed_dirs=[],  # a query reads tables, never files: not even the workspace's
                max_rows=limit + 1,  # one more than shown, to know the result was cut
                timeout_s=self.settings.query_timeout_s,
                max_memory=self.settings.max_memory,
            )
        return QueryResult(names, rows[:limit], cut=len(rows) > limit)

    def _vet(self, sql: str, tables: set[str], limit: int, dialect: str = "duckdb") -> Verdict:
        """The SQL policy's verdict on an ad-hoc query, audited either way."""
        try:
            verdict = vet_preview(sql, allowed_tables=tables, limit=limit, dialect=dialect)
        except UnsafeSql as exc:
            self.repo.audit(
                action="sql_policy", decision="block", reason=str(exc), details={"sql": sql[:2000]}
            )
            hint = (
                "load the table first, or check its name"
                if "unknown table" in str(exc)
                else "QueryForge runs only single read-only SELECT queries over known tables"
            )
            raise QueryBlocked(f"Query blocked: {exc}", hint=hint) from None
        self.repo.audit(
            action="sql_policy",
            decision=verdict.decision,
            reason="; ".join(verdict.reasons) or "read-only query",
            details={"sql": sql[:2000]},
        )
        return verdict

    @staticmethod
    def _names_known(sql: str, entry: CatalogEntry) -> bool:
        try:
            wanted = {name.lower() for name in table_references(parse_select(sql))}
        except SqlProblem:
            return True  # the policy will say what is wrong with it
        return wanted <= entry.names()

    def _query_connection(
        self, sql: str, limit: int, connection: str
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        with self._connections() as conns:
            connector = conns.sql(connection)
            if not connector.guarded_reads:
                raise UserError(
                    f"Ad-hoc queries run on the warehouse, PostgreSQL and MySQL connections; "
                    f"'{connection}' is {connector.scheme}",
                    hint="load the table into the warehouse first",
                )
            entry = self.catalog(connection)[0]
            if entry.cache_hit and not self._names_known(sql, entry):
                entry = self.catalog(connection, refresh=True)[0]  # a table may be newer than the cache
            verdict = self._vet(sql, entry.names(), limit, connector.dialect)
            data = connector.fetch_arrow(verdict.text_for(connector.dialect))
        return data.schema.names, [tuple(r.values()) for r in data.to_pylist()]

    def _warehouse_path(self) -> str:
        spec = self.config.connections[self.config.target]
        if not spec.url.startswith("duckdb:"):
            raise UserError(
                f"'query' works on a DuckDB target; '{self.config.target}' is {spec.url.split(':')[0]}"
            )
        return spec.url.split(":", 1)[1]

    def repairs(self, run_id: str) -> list[dict[str, Any]]:
        """The repair log of the ask a run belongs to: every attempt, its error and the fix tried."""
        return self.repo.list_repair_logs(run_id=self.get_run(run_id).id)

    # ------------------------------------------------------------ connections and catalog
    def connection_list(self) -> list[dict[str, Any]]:
        """Each configured connection: name, kind, url (passwords masked), writable."""
        conns = self.connections()
        return [
            {
                "name": c.name,
                "scheme": c.url.split(":", 1)[0] if ":" in c.url else "file",
                "url": scrub(c.url),
                "writable": c.writable,
                "default_target": c.name == self.config.target,
            }
            for c in conns.configs.values()
            if c.name != FILES
        ]

    def connection_test(self, name: str) -> dict[str, Any]:
        """Connect to one connection and say what answered; raises the mapped error if nothing did.

        `privileges` lists what the connection's database role may do beyond the connection's
        purpose (superuser, server files, writes on a read-only connection, ...): the role is the
        wall, the SQL policy only a guard rail. `seconds` times the connection alone.
        """
        started = time.perf_counter()
        with self._connections() as conns:
            connector = conns.get(name)
            detail = connector.test()
            seconds = time.perf_counter() - started
            findings = connector.role_report()
        return {
            "connection": name,
            "ok": True,
            "detail": scrub(detail),
            "seconds": seconds,
            "privileges_checked": connector.checks_privileges,
            "privileges": [f.to_json() for f in findings],
        }

    def catalog_cache(self) -> CatalogCache:
        return CatalogCache(self.state / "catalog", ttl_s=self.settings.catalog_ttl_s)

    def catalog(self, connection: str | None = None, *, refresh: bool = False) -> list[CatalogEntry]:
        """Tables, columns, types, keys and row estimates of one connection (or all), cached with a TTL.

        `files` lists the data folder's files with their inferred schemas.
        """
        cache = self.catalog_cache()
        with self._connections() as conns:
            names = [connection] if connection else [n for n in conns.configs if n != FILES] + [FILES]
            docs = self.table_docs(conns.default_target)
            entries = []
            for name in names:
                try:
                    if name == FILES:
                        files = FilesConnector(ConnectionConfig(name=FILES, url="file:data"), self.root)
                        entries.append(cache.get(FILES, files.introspect, refresh=refresh))
                    else:
                        found = cache.get(name, conns.get(name).introspect, refresh=refresh)
                        entries.append(describe_catalog(found, docs))
                except QueryForgeError as exc:
                    if connection is not None:
                        raise
                    entries.append(CatalogEntry(name, (), time.time(), False, error=scrub(exc.render())))
        return entries

    def table_docs(self, default_target: str) -> dict[tuple[str, str], TableDoc]:
        """What the project's pipelines say their published tables and columns mean."""
        if not (self.root / "pipelines").is_dir():
            return {}
        try:
            return table_docs(self.project(), default_target)
        except QueryForgeError:  # a broken project still has a catalog, just no descriptions
            return {}

    def gc(self, *, dry_run: bool = False, stale_after_s: float = 6 * 3600) -> list[dict[str, Any]]:
        """Drop staging tables no run of this workspace needs any more (see `runs.gc`)."""
        with self._connections() as conns:
            return collect_staging(self.repo, conns, dry_run=dry_run, stale_after_s=stale_after_s)


def collect_after_crash(root: str, settings: dict[str, Any]) -> None:
    """After a slot process died: drop staged data of runs that ended with it (a hard cancel)."""
    with Workspace(Path(root), Settings(**settings)) as ws:
        ws.gc()


def worker_slot(root: str, settings: dict[str, Any], *, index: int, stop: Any = None) -> Slot:
    """A slot of `queryforge worker`, built inside its own process (picklable for `spawn`)."""
    return Workspace(Path(root), Settings(**settings)).worker_slot(index, stop)


def _age(when: datetime) -> str:
    """'3 minutes ago': how long ago a run was audited, for the line that names the run `commit` picks."""
    aware = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    seconds = max(0, int((datetime.now(UTC) - aware).total_seconds()))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return f"{seconds} second{'s' if seconds != 1 else ''} ago"
