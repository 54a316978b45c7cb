"""The one facade the CLI and the API use. It wires services together and holds no SQL of its own."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlglot import exp

from . import connectors as _connectors  # noqa: F401 -- registers built-in connectors
from . import engine as _engines  # noqa: F401 -- registers built-in engines
from .catalog import CatalogCache, CatalogEntry
from .config import CONFIG_FILE, STATE_DIR, Settings, WorkspaceConfig, load_config
from .connectors.base import ConnectionConfig, ReadRequest
from .connectors.files import FilesConnector
from .connectors.registry import FILES, ConnectionSet
from .connectors.sql import transpile
from .engine.base import get_engine
from .engine.duckdb import run_readonly
from .errors import NotFoundError, ProductionChanged, QueryBlocked, QueryForgeError, UserError, did_you_mean
from .planner.catalog import build_context
from .planner.providers import get_provider
from .planner.service import AskOutcome, AskService, CostPolicy
from .runs.executor import Executor, RunOutcome, staged_from_json
from .runs.explain import explain
from .runs.gc import collect_staging
from .runs.plan import CheckStage, Compiler, ExecutionPlan, ExtractStage, StageLoadStage, readable_dirs
from .runs.reporter import Reporter
from .scaffold import create_workspace
from .secrets import scrub
from .spec.loader import BoundPipeline, PipelineSource, load_file
from .sql.parse import SqlProblem, parse_select, table, table_references
from .sql.safety import DEFAULT_PREVIEW_LIMIT, UnsafeSql, Verdict, vet_preview
from .store import Repo, RunRecord, Store


class Workspace:
    """A folder with queryforge.yaml, pipelines/, data/ and .queryforge/ (metadata, warehouse, runs)."""

    def __init__(self, root: Path, settings: Settings | None = None) -> None:
        self.root = root.resolve()
        self.settings = settings or Settings()
        self.config: WorkspaceConfig = load_config(self.root)
        self.state = self.root / STATE_DIR
        self.state.mkdir(exist_ok=True)
        url = self.settings.database_url or f"sqlite:///{self.state / 'metadata.db'}"
        self.store = Store(url)
        self.store.ensure_schema()
        self.repo: Repo = self.store.repo(self.settings.org, self.settings.user)

    # ------------------------------------------------------------ opening
    @classmethod
    def init(cls, folder: Path, *, bare: bool = False, settings: Settings | None = None) -> Workspace:
        create_workspace(folder, bare=bare)
        return cls(folder, settings)

    @classmethod
    def find(cls, start: Path | None = None, settings: Settings | None = None) -> Workspace:
        """The workspace containing `start` (default: the current folder or QUERYFORGE_WORKSPACE)."""
        settings = settings or Settings()
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
        known = [p.stem for p in (self.root / "pipelines").glob("*.y*ml")]
        raise NotFoundError(
            f"Pipeline '{ref}' not found",
            hint=did_you_mean(Path(ref).stem, known)
            or "give a path to a .yaml file or a name under pipelines/",
        )

    def load(self, ref: str) -> PipelineSource:
        path = self.pipeline_path(ref)
        shown = os.path.relpath(path, Path.cwd()) if path.is_relative_to(Path.cwd()) else str(path)
        return load_file(path, display=shown)

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

    def compile(self, bound: BoundPipeline, *, estimate: bool = False) -> ExecutionPlan:
        """The execution plan; with `estimate`, also the engine's estimate of the rows it will scan."""
        engine = get_engine(self.config.engine)
        connections = self.connections()
        scratch = engine.session(None, allowed_dirs=readable_dirs(bound.pipeline, connections))
        try:
            plan = Compiler(bound, scratch, connections).compile()
            if estimate:
                inputs = {s.input for s in plan.stages if isinstance(s, StageLoadStage | CheckStage)}
                explained = sum(
                    scratch.estimate_rows(exp.select(exp.Star()).from_(table(i))) for i in sorted(inputs)
                )
                # DuckDB guesses CSV sizes low before reading them; the files themselves tell better.
                files = sum(
                    connections.files.estimate_rows(s.path)
                    for s in plan.stages
                    if isinstance(s, ExtractStage) and s.path
                )
                tables = sum(self._table_estimate(connections, s) for s in plan.stages_of(ExtractStage))
                plan = dataclasses.replace(plan, estimated_rows=max(explained, files + tables))
            return plan
        finally:
            scratch.close()
            connections.close()

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
        return explain(self.validate(ref, params), get_engine(self.config.engine).dialect)

    # ------------------------------------------------------------ runs
    def executor(self, connections: ConnectionSet, reporter: Reporter | None) -> Executor:
        return Executor(
            repo=self.repo,
            connections=connections,
            engine=get_engine(self.config.engine),
            runs_dir=self.state / "runs",
            reporter=reporter,
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

    def run_source(
        self,
        source: PipelineSource,
        params: dict[str, Any] | None = None,
        *,
        sandbox: bool = False,
        reporter: Reporter | None = None,
    ) -> RunOutcome:
        bound = source.bind(params)
        plan = self.compile(bound)
        pipeline_id, version_id, _ = self.repo.save_pipeline_version(
            bound.pipeline.name,
            bound.source.content_hash(),
            bound.source.canonical_text(),
            bound.source.origin,
        )
        run_id = self.repo.create_run(
            pipeline_id=pipeline_id,
            version_id=version_id,
            pipeline_name=bound.pipeline.name,
            mode="sandbox" if sandbox else "publish",
            params=bound.params,
        )
        outcome = self.executor(self.connections(), reporter).execute(
            plan, run_id, "sandbox" if sandbox else "publish"
        )
        self._published(outcome)
        return outcome

    def _published(self, outcome: RunOutcome) -> RunOutcome:
        """A publish changes what a connection holds: its cached catalog is stale from now on."""
        for name in {t.connection for t in outcome.published}:
            self.catalog_cache().invalidate(name)
        return outcome

    def commit(
        self, run_id: str | None = None, reporter: Reporter | None = None, *, rerun: bool = False
    ) -> RunOutcome:
        """Publish an audited sandbox run (the newest one when no id is given).

        If production changed since the run staged its data, commit refuses; with `rerun` it runs
        the same pipeline version with the same parameters again (write, audit, publish) instead.
        """
        if run_id is None:
            audited = self.repo.list_runs(limit=1, status="audited")
            if not audited:
                raise NotFoundError(
                    "There is no audited sandbox run to commit", hint="run a pipeline with --sandbox first"
                )
            run_id = audited[0].id
        run = self.get_run(run_id)
        try:
            return self._published(self.executor(self.connections(), reporter).commit(run.id))
        except ProductionChanged:
            if not rerun:
                raise
        version = self.repo.get_pipeline_version(run.pipeline_version_id)
        source = PipelineSource(
            raw=json.loads(version["spec_json"]), origin=version["source_path"] or run.pipeline_name
        )
        self.executor(self.connections(), None).discard(staged_from_json(run.staged))
        self.repo.update_run(run.id, status="cancelled", staged=[], error_message="superseded by a re-run")
        return self.run_source(source, run.params, reporter=reporter)

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
                    table = conns.get(load.target.connection).preview(load, preview_rows)
                    previews.append(
                        {
                            "step_id": load.step_id,
                            "target": dataclasses.asdict(load.target),
                            "mode": load.mode,
                            "rows": load.rows,
                            "diff": load.diff,
                            "columns": table.schema.names,
                            "preview": table.to_pylist(),
                        }
                    )
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
            ctx = build_context(conns, self.root, catalog=self.catalog_cache())
        cost = CostPolicy(
            cap_rows=self.settings.cost_cap_rows,
            budget_rows_per_hour=self.settings.cost_budget_rows_per_hour,
            approved=approve_cost,
        )
        service = AskService(
            self,
            ctx,
            drafts_dir=self.state / "asks",
            provider=get_provider(provider),
            reporter=reporter,
            cost=cost,
        )
        return service.ask(request, consent=consent)

    def query(
        self, sql: str, *, limit: int = DEFAULT_PREVIEW_LIMIT, connection: str | None = None
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """A read-only, policy-checked query over the warehouse or a database connection.

        Two walls: the AST policy first, then the engine: the warehouse runs in a sandboxed DuckDB,
        PostgreSQL and MySQL run the query as one prepared statement in a READ ONLY transaction with
        a time limit (and the database role's privileges are the wall that really holds).
        """
        if connection is not None and connection != self.config.target:
            return self._query_connection(sql, limit, connection)
        tables: set[str] = set()
        if (self.root / self._warehouse_path()).exists():
            with self._connections() as conns:
                for t in conns.sql(self.config.target).introspect():
                    tables |= {t.name.lower(), t.qualified.lower()}
        verdict = self._vet(sql, tables, limit)
        return run_readonly(self.root / self._warehouse_path(), verdict.sql, allowed_dirs=[self.root])

    def _vet(self, sql: str, tables: set[str], limit: int) -> Verdict:
        """The SQL policy's verdict on an ad-hoc query, audited either way."""
        try:
            verdict = vet_preview(sql, allowed_tables=tables, limit=limit)
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
            verdict = self._vet(sql, entry.names(), limit)
            data = connector.fetch_arrow(transpile(verdict.sql, connector.dialect))
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
        """Connect to one connection and say what answered; raises the mapped error if nothing did."""
        started = time.perf_counter()
        with self._connections() as conns:
            detail = conns.get(name).test()
        return {
            "connection": name,
            "ok": True,
            "detail": scrub(detail),
            "seconds": time.perf_counter() - started,
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
            entries = []
            for name in names:
                try:
                    if name == FILES:
                        files = FilesConnector(ConnectionConfig(name=FILES, url="file:data"), self.root)
                        entries.append(cache.get(FILES, files.introspect, refresh=refresh))
                    else:
                        entries.append(cache.get(name, conns.get(name).introspect, refresh=refresh))
                except QueryForgeError as exc:
                    if connection is not None:
                        raise
                    entries.append(CatalogEntry(name, (), time.time(), False, error=scrub(exc.render())))
        return entries

    def gc(self, *, dry_run: bool = False, stale_after_s: float = 6 * 3600) -> list[dict[str, Any]]:
        """Drop staging tables no run of this workspace needs any more (see `runs.gc`)."""
        with self._connections() as conns:
            return collect_staging(self.repo, conns, dry_run=dry_run, stale_after_s=stale_after_s)
