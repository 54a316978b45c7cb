"""Execute a compiled plan with write-audit-publish, recording every step in the metadata store.

Visits the plan's stages in order (`visit_<kind>`). Checks run before anything is staged; if an
error-severity check fails, nothing is staged or published. A sandbox run stops after staging
(status `audited`) and keeps its staged data for `commit`, which publishes exactly that data
and refuses if production changed in between.

Resuming: given what an earlier attempt left (`Prior`), steps whose output hash is unchanged and whose
output still exists are reused instead of run again: tables in the run's work area, check results,
staged loads. A publish an earlier attempt started is recovered, never repeated blindly: the
publish ledger written in the publish transaction says whether it committed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
import traceback
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from sqlglot import exp

from .. import faults
from ..connectors.base import StagedLoad, TargetRef
from ..connectors.registry import ConnectionSet
from ..connectors.sql import SqlConnector, literal
from ..engine.base import INLINED_STEP, DirectTransfer, Engine, EngineSession, get_engine
from ..errors import (
    ChecksFailed,
    InternalError,
    ProductionChanged,
    QueryForgeError,
    RunCancelled,
    StepFailed,
    TransientError,
    UserError,
)
from ..quality.checks import evaluate_rules
from ..secrets import scrub
from ..sql.parse import ident, table, table_references
from ..store import Repo
from ..store.repo import StepRecord, decode_watermark, encode_watermark
from . import sources
from .control import RunControl, final_status
from .plan import CheckStage, ExecutionPlan, ExtractStage, PublishStage, Stage, StageLoadStage, TransformStage
from .reporter import NullReporter, Reporter
from .sources import Snapshot, SnapshotFile

log = logging.getLogger(__name__)
SAMPLE_ROWS = 5


@dataclass
class RunOutcome:
    run_id: str
    status: str
    checks: list[dict[str, Any]] = field(default_factory=list)
    staged: list[StagedLoad] = field(default_factory=list)
    published: list[TargetRef] = field(default_factory=list)
    error: QueryForgeError | None = None
    watermarks: dict[str, Any] = field(default_factory=dict)  # step id -> new high-water mark
    skipped: list[str] = field(default_factory=list)  # steps not run (skip_and_continue)
    note: str | None = None  # a line for the person, e.g. which run `commit` chose and how old it is

    @property
    def failed_checks(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if not c["passed"] and c["severity"] == "error"]


OK_STATUSES = frozenset({"succeeded", "warn"})


@dataclass(frozen=True)
class Prior:
    """What an earlier attempt left behind, to be reused where the plan did not change."""

    run_id: str  # this run (a resume) or the run an edited resume continues from
    steps: dict[str, StepRecord]
    staged: list[StagedLoad]
    same_run: bool


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copy2(source, target)


def now() -> datetime:
    return datetime.now(UTC)


def staged_to_json(loads: list[StagedLoad]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(s) for s in loads]


def staged_from_json(items: Any) -> list[StagedLoad]:
    """Staged loads as recorded on a run (a list of dicts, or nothing)."""
    if not isinstance(items, list):
        return []
    return [StagedLoad(**{**d, "target": TargetRef(**d["target"])}) for d in items]


class Executor:
    def __init__(
        self,
        *,
        repo: Repo,
        connections: ConnectionSet,
        engine: Engine,
        runs_dir: Path,
        reporter: Reporter | None = None,
        sleep: Callable[[float], None] = time.sleep,
        control: RunControl | None = None,
        failure_status: Callable[[QueryForgeError], tuple[str, datetime | None]] | None = None,
    ) -> None:
        self.repo = repo
        self.connections = connections
        self.engine = engine
        self.runs_dir = runs_dir
        self.reporter = reporter or NullReporter()
        self.sleep = sleep  # injectable, so retry tests need not wait
        self.control = control or RunControl()
        # Where a failed run ends up: a worker may give a transient failure back to the queue.
        self.failure_status = failure_status or (lambda exc: (final_status(exc.failure_class), None))
        self.prior: Prior | None = None
        self._start_sources(None, None)

    # ------------------------------------------------------------ run
    def execute(
        self,
        plan: ExecutionPlan,
        run_id: str,
        mode: str,
        *,
        prior: Prior | None = None,
        skip: Collection[str] = (),
    ) -> RunOutcome:
        """Run a claimed run (status `running`) to its end; with `prior`, reuse what is unchanged;
        `skip` steps (skip_and_continue) are not run, nor is anything that depends on them."""
        outcome = RunOutcome(run_id=run_id, status="running")
        if plan.engine != self.engine.name:  # the plan says where it runs (engine: auto routes per plan)
            self.engine = get_engine(plan.engine, max_memory=self.engine.max_memory)
        skipped = plan.skipped_with(skip)
        self.prior = prior
        self.control.timeouts = {k: v for k, v in plan.timeouts.items() if v}
        if prior is not None and not prior.same_run:
            self._copy_work_area(prior.run_id, run_id)
        steps = [
            (s.step_id, s.kind)
            for s in plan.stages
            if not (mode == "sandbox" and isinstance(s, PublishStage))
        ]
        self.reporter.run_started(run_id, plan.pipeline, steps)
        session: EngineSession | None = None
        self.inlined: dict[str, exp.Query] = {}
        # Extracts a view rests on: their tables' fingerprints are taken before they are read, and a
        # view publishes only while its tables still match (what the run audited is what it shows).
        self.guarded: set[str] = {step for s in plan.stages_of(StageLoadStage) for step, _ in s.sources}
        self.source_prints: dict[str, str | None] = {}
        self.reread = False  # a resume read a guarded extract again: nothing computed after it holds
        self._start_sources(run_id, prior)
        verified = False
        try:
            session = self._open_session(plan, run_id)
            for stage in plan.stages:
                if isinstance(stage, StageLoadStage) and outcome.failed_checks:
                    raise self._checks_failed(outcome)
                if isinstance(stage, PublishStage) and not verified:
                    self._settle_sources(run_id)
                    sources.verify(list(self.snapshots.values()))  # what was audited is what is published
                    verified = True
                if isinstance(stage, PublishStage) and mode == "sandbox":
                    continue
                if self.control.cancel.is_set() and not outcome.published:
                    raise RunCancelled(
                        f"Run {run_id} was cancelled before step '{stage.step_id}'; nothing was published",
                        hint=f"start it again with 'queryforge runs resume {run_id}'",
                    )
                if stage.step_id in skipped:
                    self._skip(stage, outcome, skipped[stage.step_id])
                    continue
                if prior is not None and self._reuse(stage, session, outcome, plan, prior):
                    continue
                self._visit_with_retries(stage, session, outcome, plan)
            if outcome.failed_checks:
                raise self._checks_failed(outcome)
            if not verified:
                self._settle_sources(run_id)
                sources.verify(list(self.snapshots.values()))
            if skipped:  # an extract feeding a skipped load keeps its mark: those rows are still owed
                for step_id in plan.upstream_of(
                    s.step_id for s in plan.stages_of(StageLoadStage) if s.step_id in skipped
                ):
                    outcome.watermarks.pop(step_id, None)
            if mode != "sandbox":
                self.advance_watermarks(run_id, plan.pipeline, outcome.watermarks)
            outcome.status = "audited" if mode == "sandbox" else "succeeded"
            self.repo.update_run(
                run_id,
                status=outcome.status,
                ended_at=now(),
                error_class=None,  # an earlier attempt's error (resumed): the run events keep it
                error_message=None,
                staged=staged_to_json(outcome.staged) if mode == "sandbox" else [],
                result=self._result(outcome),
            )
            sources.discard(self.sources_dir)  # only an unfinished run can be resumed from them
        except RunCancelled as exc:
            self._settle_sources_quietly(run_id)
            self._cancelled(outcome, exc)
        except QueryForgeError as exc:
            self._settle_sources_quietly(run_id)
            self.fail(outcome, exc)
        except Exception as exc:  # a bug of ours: keep the traceback in the log only
            self._settle_sources_quietly(run_id)
            trace = traceback.format_exc()
            (self.runs_dir / run_id).mkdir(parents=True, exist_ok=True)
            (self.runs_dir / run_id / "traceback.txt").write_text(scrub(trace))
            log.debug("run %s failed with an internal error:\n%s", run_id, trace)
            self.fail(
                outcome,
                InternalError(
                    f"Internal error while running: {type(exc).__name__}: {exc}",
                    hint="run again with --debug and report the traceback",
                ),
            )
        finally:
            self.hasher.close()
            if session is not None:
                session.close()
            self.connections.close()
        self.reporter.run_finished(run_id, outcome.status)
        return outcome

    def _skip(self, stage: Stage, outcome: RunOutcome, cause: str) -> None:
        note = (
            "skipped on request (skip_and_continue)"
            if cause == stage.step_id
            else f"skipped: it depends on '{cause}', which was skipped"
        )
        outcome.skipped.append(stage.step_id)
        self.repo.start_step(outcome.run_id, stage.step_id, stage.kind)
        self.repo.finish_step(outcome.run_id, stage.step_id, status="skipped", message=note)
        self.reporter.step_finished(stage.step_id, "skipped", None, 0.0, note)

    def _open_session(self, plan: ExecutionPlan, run_id: str) -> EngineSession:
        """The run's work area; failing to open it (a file still locked by a process that is being
        killed) is worth another try, not a person's attention."""
        try:
            return self.engine.session(
                self.runs_dir / run_id,
                preserve_order=plan.preserve_order,
                allowed_dirs=plan.allowed_dirs,
                schemas=plan.schemas,
            )
        except duckdb.Error as exc:
            raise TransientError(
                f"Could not open the work area of run {run_id}: {str(exc).splitlines()[0]}",
                hint="it is tried again",
            ) from exc

    def _checks_failed(self, outcome: RunOutcome) -> ChecksFailed:
        failed = outcome.failed_checks
        names = ", ".join(
            f"{c['step_id']}.{c['rule_name']} ({c['violations']} violation"
            f"{'s' if c['violations'] != 1 else ''})"
            for c in failed[:5]
        )
        return ChecksFailed(
            f"{len(failed)} error-severity check{'s' if len(failed) > 1 else ''} failed: {names}. "
            "Nothing was published",
            hint=f"see the failing rows with 'queryforge runs show {outcome.run_id}'",
        )

    def fail(self, outcome: RunOutcome, exc: QueryForgeError) -> None:
        status, not_before = self.failure_status(exc)
        outcome.status = status
        outcome.error = exc
        if outcome.published:
            done = ", ".join(f"{t.connection}.{t.table}" for t in outcome.published)
            exc.message += (
                f". Targets of other connections were already published ({done}); each connection "
                "publishes in its own transaction"
            )
        outcome.staged = [s for s in outcome.staged if s.target not in outcome.published]
        # A run going back to the queue keeps its staged data for the resume. Discarding otherwise is
        # safe even after a publish was under way: _recover_publish tells a committed publish (staging
        # gone, production moved) from a discarded one (staging gone, production unchanged).
        keep = outcome.staged if status == "queued" else []
        self.discard([s for s in outcome.staged if s not in keep])
        # The lease stays until the worker's watchdog has stopped (Slot.release): a heartbeat that
        # found it gone would take the run for lost. `not_before` keeps other workers off till then.
        requeue = {"not_before": not_before}
        self.repo.update_run(
            outcome.run_id,
            status=status,
            ended_at=None if status == "queued" else now(),
            error_class=exc.failure_class.value,
            error_message=exc.render(),
            staged=staged_to_json(keep),
            result=self._result(outcome),
            **(requeue if status == "queued" else {}),
        )

    def _cancelled(self, outcome: RunOutcome, exc: RunCancelled) -> None:
        outcome.status = "cancelled"
        outcome.error = exc
        self.discard(outcome.staged)
        self.repo.update_run(
            outcome.run_id,
            status="cancelled",
            ended_at=now(),
            error_message=exc.render(),
            staged=[],
            result=self._result(outcome),
        )

    # ------------------------------------------------------------ resume
    def _copy_work_area(self, source: str, target: str) -> None:
        """An edited resume starts from the earlier run's work tables (reused where unchanged)."""
        src, dst = self.runs_dir / source, self.runs_dir / target
        dst.mkdir(parents=True, exist_ok=True)
        for name in self.engine.work_files:
            if (src / name).is_dir():  # datasets are never changed once written: links suffice
                shutil.copytree(src / name, dst / name, dirs_exist_ok=True, copy_function=_link_or_copy)
            elif (src / name).exists():
                shutil.copyfile(src / name, dst / name)

    def _reuse(
        self, stage: Stage, session: EngineSession, outcome: RunOutcome, plan: ExecutionPlan, prior: Prior
    ) -> bool:
        """Take the stage's output from the earlier attempt when it is unchanged and still there."""
        done = prior.steps.get(stage.step_id)
        if (self.sources_changed or self.reread) and not isinstance(stage, PublishStage):
            return False  # a source snapshot had to be taken again: nothing computed from it holds
        if isinstance(stage, ExtractStage) and stage.step_id in self.guarded:
            self.reread = True  # read again, with its fingerprint: what follows is recomputed
            return False
        query = getattr(stage, "query", None)
        if isinstance(stage, ExtractStage) and stage.query is not None:
            query = self._read_snapshot(stage, outcome.run_id)
            if self.sources_changed:
                return False
        if isinstance(stage, PublishStage):
            if done is None or done.status != "succeeded" or not prior.same_run:
                return False  # visit_publish recovers a publish an earlier attempt started
            outcome.published.extend(s.target for s in outcome.staged if s.step_id in stage.loads)
        elif (
            done is None
            or done.status not in OK_STATUSES
            or done.output_hash != plan.step_hashes.get(stage.step_id)
        ):
            return False
        elif isinstance(stage, StageLoadStage):
            load = next((s for s in prior.staged if s.step_id == stage.step_id), None)
            if load is None or not prior.same_run:
                return False
            publish_started = f"publish:{stage.target.connection}" in prior.steps
            if not publish_started and not self.connections.get(stage.target.connection).staged_exists(load):
                return False
            outcome.staged = [s for s in outcome.staged if s.step_id != stage.step_id] + [load]
        elif isinstance(stage, CheckStage):
            results = [c for c in self.repo.list_check_results(prior.run_id) if c["step_id"] == stage.step_id]
            if not prior.same_run:
                self.repo.add_check_results(outcome.run_id, results)
            outcome.checks.extend(results)
        elif isinstance(stage, ExtractStage | TransformStage):
            materialized = stage.materialize or (isinstance(stage, ExtractStage) and stage.query is None)
            if materialized and not self._has_table(session, stage.step_id):
                return False
            if not materialized:
                assert query is not None
                self.inlined[stage.step_id] = query
            if isinstance(stage, ExtractStage) and stage.incremental is not None:
                self._mark(stage, session, outcome, plan)
        note = "reused from the earlier attempt" if prior.same_run else f"reused from run {prior.run_id}"
        if not prior.same_run:
            self.repo.start_step(outcome.run_id, stage.step_id, stage.kind)
            assert done is not None
            self.repo.finish_step(
                outcome.run_id,
                stage.step_id,
                status=done.status,
                rows_in=done.rows_in,
                rows_out=done.rows_out,
                output_hash=done.output_hash,
                message=note,
            )
        self.reporter.step_finished(stage.step_id, "reused", done.rows_out if done else None, 0.0, note)
        return True

    # ------------------------------------------------------------ source snapshots
    def _start_sources(self, run_id: str | None, prior: Prior | None) -> None:
        self.sources_dir = self.runs_dir / (run_id or ".none") / "sources"
        self.snapshots: dict[str, Snapshot] = {}  # step id -> the files it reads, as snapshotted
        self.snapshot_files: dict[str, SnapshotFile] = {}  # source path -> its snapshot in this run
        self.step_bytes: dict[str, int] = {}
        self.sources_changed = False  # set when a resume could not reuse an earlier snapshot
        self.resuming = prior is not None and prior.same_run
        self.hasher = sources.Hasher()  # hashes hard links while the run goes on (decision 0007)
        self.unnoted: set[str] = set()  # extract steps recorded before their snapshot's hash was known

    def _read_snapshot(self, stage: ExtractStage, run_id: str) -> exp.Query:
        """The file extract's query over this run's snapshot of its files, taken on first use.

        A resume of the same run reads the snapshot its earlier attempt took, if still intact; if
        not, a new one is taken and nothing computed from the old one is reused.
        """
        assert stage.query is not None
        snapshot = self.snapshots.get(stage.step_id)
        if snapshot is None:
            wanted = sources.files_read(stage.query)
            earlier = sources.load(stage.step_id, self.sources_dir) if self.resuming else None
            if (
                earlier is not None
                and [f.source for f in earlier.files] == wanted
                and not sources.changed(earlier)
            ):
                snapshot = earlier
                for f in earlier.files:
                    if f.pending and f.source not in self.snapshot_files:
                        self.hasher.submit(f)  # the earlier attempt ended before its hash did
                    self.snapshot_files.setdefault(f.source, f)
            else:
                self.sources_changed = self.sources_changed or self.resuming
                snapshot = sources.take(
                    stage.step_id, wanted, self.sources_dir, self.snapshot_files, self.hasher
                )
            self.snapshots[stage.step_id] = snapshot
        return sources.repoint(stage.query, snapshot)

    def _settle_sources(self, run_id: str) -> None:
        """Wait for the snapshots' background hashes: before a publish, or before a run ends.

        Each settled snapshot's manifest is written again with its hash (for a resume), and an extract
        step recorded while its hash was pending gets its full note. A hard link that moved while it
        was hashed raises SourceChanged: nothing is published.
        """
        for step_id, snapshot in list(self.snapshots.items()):
            if not snapshot.pending:
                continue
            settled = self.hasher.settle(snapshot)
            self.snapshots[step_id] = settled
            for f in settled.files:
                self.snapshot_files[f.source] = f
            sources.write_manifest(settled, self.sources_dir)
            if step_id in self.unnoted:
                self.repo.note_step(run_id, step_id, settled.describe())
                self.unnoted.discard(step_id)

    def _settle_sources_quietly(self, run_id: str) -> None:
        """On the way out of a failed run: record what hashes can be, so a resume can reuse them."""
        try:
            self._settle_sources(run_id)
        except Exception:  # the run is failing already; a moved file is found again by the resume
            log.debug("could not settle the snapshot hashes of run %s", run_id, exc_info=True)

    @staticmethod
    def _has_table(session: EngineSession, name: str) -> bool:
        try:
            session.describe(name)
        except (QueryForgeError, duckdb.Error):
            return False
        return True

    def _mark(
        self, stage: ExtractStage, session: EngineSession, outcome: RunOutcome, plan: ExecutionPlan
    ) -> None:
        """The new high-water mark of an incremental extract: the largest cursor value it read."""
        assert stage.incremental is not None
        cursor = exp.column(ident(stage.incremental.cursor))
        _, found = session.fetch(exp.select(exp.func("max", cursor)).from_(table(stage.step_id)))
        since = self.repo.get_watermark(plan.pipeline, stage.step_id)
        since = stage.incremental.initial if since is None else since
        mark = found[0][0] if found[0][0] is not None else since
        if mark is not None:
            outcome.watermarks[stage.step_id] = mark

    def _recover_publish(
        self,
        stage: PublishStage,
        loads: list[StagedLoad],
        session: EngineSession,
        outcome: RunOutcome,
        plan: ExecutionPlan,
    ) -> list[StagedLoad]:
        """The loads an interrupted publish still has to publish.

        Database connectors write a ledger row per load inside the publish transaction: it says for
        sure whether the publish committed. Without a ledger (files), staged data that is gone while
        production's fingerprint moved means published. A load neither published nor still staged
        (gc dropped it) is staged again.
        """
        connector = self.connections.get(stage.connection)
        pending: list[StagedLoad] = []
        for load in loads:
            committed = connector.was_published(load)
            if committed is None:  # no ledger (files): staging, then the fingerprint, tell
                committed = not connector.staged_exists(load) and (
                    connector.fingerprint(load.target) != load.fingerprint_before
                )
            if committed:
                log.info("publish of %s was committed by an earlier attempt", load.step_id)
                outcome.published.append(load.target)
            elif connector.staged_exists(load):
                pending.append(load)
            else:
                again = next(s for s in plan.stages_of(StageLoadStage) if s.step_id == load.step_id)
                self.visit_stageload(again, session, outcome, plan)
                pending.extend(s for s in outcome.staged if s.step_id == load.step_id)
        return pending

    def advance_watermarks(self, run_id: str, pipeline: str, marks: dict[str, Any]) -> None:
        """Incremental extracts move on only once their run has published."""
        for step_id, value in marks.items():
            current = self.repo.get_watermark(pipeline, step_id)
            try:
                if current is not None and not value > current:
                    continue  # an older sandbox run committed late must not move the mark back
            except TypeError:  # the cursor's type changed: the newest run decides
                pass
            self.repo.set_watermark(pipeline, step_id, value, run_id=run_id)

    def discard(self, staged: list[StagedLoad]) -> None:
        by_connection: dict[str, list[StagedLoad]] = {}
        for load in staged:
            by_connection.setdefault(load.target.connection, []).append(load)
        for name, loads in by_connection.items():
            try:
                self.connections.get(name).discard(loads)
            except Exception:  # cleanup must not hide the original error; gc removes leftovers
                log.debug("could not discard staged data of %s", name, exc_info=True)

    def _result(self, outcome: RunOutcome) -> dict[str, Any]:
        return {
            "engine": self.engine.name,
            "published": [dataclasses.asdict(t) for t in outcome.published],
            "loads": [
                {
                    "step_id": s.step_id,
                    "target": dataclasses.asdict(s.target),
                    "mode": s.mode,
                    "rows": s.rows,
                    "diff": s.diff,
                }
                for s in outcome.staged
            ],
            "checks": {
                "passed": sum(c["passed"] for c in outcome.checks),
                "failed": sum(not c["passed"] for c in outcome.checks),
            },
            "watermarks": {k: list(encode_watermark(v)) for k, v in outcome.watermarks.items()},
            **({"skipped": outcome.skipped} if outcome.skipped else {}),
        }

    def _visit_with_retries(
        self, stage: Stage, session: EngineSession, outcome: RunOutcome, plan: ExecutionPlan
    ) -> None:
        """Visit a stage; reads and staging, which touch other systems and can be redone, are retried
        as the step's retry policy says (publish never is: a lost COMMIT answer may have committed)."""
        policy = plan.retries.get(stage.step_id)
        attempt = 1
        while True:
            try:
                self._visit(stage, session, outcome, plan)
                return
            except QueryForgeError as exc:
                redo = isinstance(stage, ExtractStage | StageLoadStage) and policy is not None
                wait = policy.delay(exc.failure_class, attempt) if redo and policy else None
                if wait is None:
                    raise
                log.info("step %s failed (%s), try %d again in %.1f s", stage.step_id, exc, attempt + 1, wait)
                self.connections.close()  # the next try connects afresh (a server may have restarted)
                self.sleep(wait)
                attempt += 1

    def _visit(self, stage: Stage, session: EngineSession, outcome: RunOutcome, plan: ExecutionPlan) -> None:
        self.repo.start_step(outcome.run_id, stage.step_id, stage.kind)
        self.reporter.step_started(stage.step_id, stage.kind)
        started = time.perf_counter()
        self.control.entered(stage.step_id, stage.kind)
        try:
            faults.point(f"step.{stage.step_id}")
            rows_in, rows_out, detail = getattr(self, f"visit_{stage.kind}")(stage, session, outcome, plan)
        except (StepFailed, duckdb.Error, pa.ArrowException) as exc:
            # A data error surfaces where a view chain is finally computed; name the step that causes it.
            culprit = self._diagnose(session, plan, stage) or (
                exc if isinstance(exc, QueryForgeError) else InternalError(str(exc))
            )
            if culprit.where is None:
                culprit.where = plan.locations.get(stage.step_id)
            self._step_failed(outcome.run_id, stage, started, culprit)
            raise culprit from exc
        except QueryForgeError as exc:
            self._step_failed(outcome.run_id, stage, started, exc)
            raise
        except Exception as exc:
            self._step_failed(outcome.run_id, stage, started, InternalError(str(exc)))
            raise
        finally:
            self.control.left()
        status = detail.split(":")[0] if detail and detail.startswith(("warn:", "failed:")) else "succeeded"
        self.repo.finish_step(
            outcome.run_id,
            stage.step_id,
            status=status,
            rows_in=rows_in,
            rows_out=rows_out,
            bytes=self.step_bytes.pop(stage.step_id, None),
            output_hash=plan.step_hashes.get(stage.step_id),
            message=detail,
        )
        self.reporter.step_finished(stage.step_id, status, rows_out, time.perf_counter() - started, detail)

    def _diagnose(self, session: EngineSession, plan: ExecutionPlan, failed: Stage) -> StepFailed | None:
        """The first step (a view) whose own output cannot be computed, as a located error."""
        for stage in plan.stages:
            if stage is failed:
                break
            if not isinstance(stage, ExtractStage | TransformStage) or stage.materialize:
                continue
            try:
                # DISTINCT over every column computes every column, on any engine.
                every_value = exp.select(exp.Star()).distinct().from_(table(stage.step_id)).subquery("t")
                session.fetch(self._inline(exp.select(exp.func("count", exp.Star())).from_(every_value)))
            except QueryForgeError as exc:
                if not isinstance(exc, StepFailed):
                    return None  # a lock or an interrupt while diagnosing says nothing about the data
                detail = exc.message.split(": ", 1)[-1]
                return StepFailed(
                    f"Step '{stage.step_id}' failed: {detail}",
                    where=plan.locations.get(stage.step_id),
                    hint=exc.hint,
                )
        return None

    def _step_failed(self, run_id: str, stage: Stage, started: float, exc: QueryForgeError) -> None:
        self.repo.finish_step(
            run_id,
            stage.step_id,
            status="failed",
            failure_class=exc.failure_class.value,
            message=exc.render(),
        )
        self.reporter.step_finished(stage.step_id, "failed", None, time.perf_counter() - started, exc.message)

    # ------------------------------------------------------------ stages
    Result = tuple[int | None, int | None, str | None]

    def _inline(self, query: exp.Query) -> exp.Query:
        """`query` with every step it reads that is only a definition (no table) prepended as a CTE.

        Steps with one consumer are not materialized; inlining them into the query that consumes
        them lets the engine plan the whole chain at once and bind each file once, instead of
        re-binding a stack of views (DuckDB re-sniffs a CSV on every bind).
        """
        needed: set[str] = set()
        frontier = set(table_references(query))
        while frontier:
            name = frontier.pop()
            if name in self.inlined and name not in needed:
                needed.add(name)
                frontier |= set(table_references(self.inlined[name]))
        if not needed:
            return query
        ctes = [
            exp.CTE(this=self.inlined[s].copy(), alias=exp.TableAlias(this=ident(s)))
            for s in self.inlined
            if s in needed
        ]
        for cte in ctes:  # an engine that keeps steps apart tells these from the SQL's own CTEs
            cte.meta[INLINED_STEP] = True
        query = query.copy()
        existing = query.args.get("with_")
        query.set("with_", exp.With(expressions=ctes + (list(existing.expressions) if existing else [])))
        return query

    def _produce(
        self, session: EngineSession, step_id: str, query: exp.Query, materialize: bool
    ) -> int | None:
        if not materialize:
            self.inlined[step_id] = query
            return None
        return session.create(step_id, self._inline(query), table=True)

    def visit_extract(
        self, stage: ExtractStage, session: EngineSession, outcome: RunOutcome, plan: ExecutionPlan
    ) -> Result:
        if stage.query is not None:  # files: read from the run's snapshot, never from the source
            query = self._read_snapshot(stage, outcome.run_id)
            snapshot = self.snapshots[stage.step_id]
            self.step_bytes[stage.step_id] = snapshot.bytes
            if snapshot.pending:  # the note gets the hash when it is settled (_settle_sources)
                self.unnoted.add(stage.step_id)
            return None, self._produce(session, stage.step_id, query, stage.materialize), snapshot.describe()
        assert stage.connection is not None and stage.request is not None
        connector = self.connections.get(stage.connection)
        request = stage.request
        if stage.step_id in self.guarded and request.table is not None:  # before the read: see `guarded`
            source = TargetRef(stage.connection, request.table)
            self.source_prints[stage.step_id] = connector.fingerprint(source)
        since = None
        if stage.incremental is not None:
            since = self.repo.get_watermark(plan.pipeline, stage.step_id)
            since = stage.incremental.initial if since is None else since
            request = dataclasses.replace(request, since=since)
        how = None  # set when the engine read the source itself
        if since is None or isinstance(connector, SqlConnector):  # databases filter at the source
            moved = (
                session.extract_direct(stage.step_id, connector, request)
                if isinstance(session, DirectTransfer)
                else None
            )
            if moved is not None:
                rows, how = moved
            else:
                rows = session.create_from_arrow(stage.step_id, connector.read(request))
        else:
            assert stage.incremental is not None
            session.create_from_arrow(f"{stage.step_id}__raw", connector.read(request))
            newer = exp.GT(this=exp.column(ident(stage.incremental.cursor)), expression=literal(since))
            query = exp.select(exp.Star()).from_(table(f"{stage.step_id}__raw")).where(newer)
            rows = session.create(stage.step_id, query, table=True) or 0
        detail = how
        if stage.incremental is not None:
            self._mark(stage, session, outcome, plan)
            detail = f"incremental: {rows} rows with {stage.incremental.cursor} > {since}"
            detail += f"; {how}" if how else ""
        return None, rows, detail

    def visit_transform(
        self, stage: TransformStage, session: EngineSession, outcome: RunOutcome, plan: ExecutionPlan
    ) -> Result:
        return None, self._produce(session, stage.step_id, stage.query, stage.materialize), None

    def visit_check(
        self, stage: CheckStage, session: EngineSession, outcome: RunOutcome, plan: ExecutionPlan
    ) -> Result:
        results = evaluate_rules(
            stage.step_id, list(stage.rules), lambda q: session.fetch(self._inline(q)), SAMPLE_ROWS
        )
        failed_error = sum(not r["passed"] and r["severity"] == "error" for r in results)
        failed_warn = sum(not r["passed"] and r["severity"] == "warn" for r in results)
        self.repo.add_check_results(outcome.run_id, results)
        outcome.checks.extend(results)
        _, counted_rows = session.fetch(
            self._inline(exp.select(exp.func("count", exp.Star())).from_(table(stage.input)))
        )
        detail = None
        if failed_error:
            detail = f"failed: {failed_error} of {len(stage.rules)} rules failed"
        elif failed_warn:
            detail = f"warn: {failed_warn} of {len(stage.rules)} rules failed (severity warn)"
        return int(counted_rows[0][0]), None, detail

    def visit_stageload(
        self, stage: StageLoadStage, session: EngineSession, outcome: RunOutcome, plan: ExecutionPlan
    ) -> Result:
        if stage.mode == "view":
            return self._stage_view(stage, session, outcome, plan)
        connector = self.connections.get(stage.target.connection)
        query = self._inline(exp.select(exp.Star()).from_(table(stage.input)))
        load = StagedLoad(
            step_id=stage.step_id,
            target=stage.target,
            mode=stage.mode,
            keys=list(stage.keys),
            on_schema_change=stage.on_schema_change,
            check_columns=list(stage.check_columns),
            staging_name="",
            rows=0,
            columns=[],
        )
        # Registered first, so a failure half-way still discards it (once, when the step is retried).
        outcome.staged = [s for s in outcome.staged if s.step_id != stage.step_id] + [load]
        how = (
            session.stage_direct(connector, outcome.run_id, load, query)
            if isinstance(session, DirectTransfer)
            else None
        )
        if how is None:  # Arrow from the engine; a reader left open is closed by the session
            connector.stage(outcome.run_id, load, session.read(query))
        self.repo.update_run(outcome.run_id, staged=staged_to_json(outcome.staged))  # for a resume
        d = load.diff
        detail = f"+{d.get('added', 0)} -{d.get('removed', 0)} ~{d.get('changed', 0)}"
        return load.rows, load.rows, f"{detail}; {how}" if how else detail

    def _stage_view(
        self, stage: StageLoadStage, session: EngineSession, outcome: RunOutcome, plan: ExecutionPlan
    ) -> Result:
        """A view copies nothing: the rows the run computed (and the checks audited) are counted, and the
        target database must show as many from the view's SQL, over the tables as the run read them."""
        connector = self.connections.get(stage.target.connection)
        _, counted = session.fetch(
            self._inline(exp.select(exp.func("count", exp.Star())).from_(table(stage.input)))
        )
        load = StagedLoad(
            step_id=stage.step_id,
            target=stage.target,
            mode="view",
            keys=[],
            staging_name="",
            rows=int(counted[0][0]),
            columns=[],
            view=stage.view,
            sources={name: self.source_prints.get(step) for step, name in stage.sources},
        )
        kind = connector.relation_kind(stage.target)
        if kind == "table" and self._published_by(plan.pipeline, stage.target):
            load.replaces = "table"  # this pipeline's own table becomes its view (in the publish)
        outcome.staged = [s for s in outcome.staged if s.step_id != stage.step_id] + [load]
        connector.stage_view(outcome.run_id, load)
        self.repo.update_run(outcome.run_id, staged=staged_to_json(outcome.staged))  # for a resume
        return load.rows, load.rows, f"view: {load.rows} rows, nothing copied"

    def _published_by(self, pipeline: str, target: TargetRef) -> bool:
        """Whether the newest successful run of `pipeline` published `target` (so it is its own)."""
        for run in self.repo.list_runs(pipeline=pipeline, limit=50):
            published = (run.result or {}).get("published") if run.status in OK_STATUSES else None
            if published:
                return dataclasses.asdict(target) in published
        return False

    def visit_publish(
        self,
        stage: PublishStage,
        session: EngineSession | None,
        outcome: RunOutcome,
        plan: ExecutionPlan | None,
    ) -> Result:
        loads = [s for s in outcome.staged if s.step_id in stage.loads]
        rows = sum(s.rows for s in loads)
        if self.prior is not None and self.prior.same_run and stage.step_id in self.prior.steps:
            assert session is not None and plan is not None
            loads = self._recover_publish(stage, loads, session, outcome, plan)
        self.control.publishing = True
        try:
            if loads:
                self.publish(outcome.run_id, stage.connection, loads, verify=False)
        finally:
            self.control.publishing = False
        outcome.published.extend(s.target for s in loads)
        return rows, None, None

    # ------------------------------------------------------------ publish and commit
    def publish(self, run_id: str, connection: str, loads: list[StagedLoad], *, verify: bool) -> None:
        self.publish_loads(connection, [(run_id, load) for load in loads], verify=verify)

    def publish_loads(self, connection: str, pairs: list[tuple[str, StagedLoad]], *, verify: bool) -> None:
        """One publish transaction on `connection` for loads of one or more runs (run id, load)."""
        connector = self.connections.get(connection)
        if verify:  # again, right before the publish: the first check may be a while ago
            self.verify_fingerprints(connection, pairs)
        for run_id, load in pairs:
            self._snapshot(run_id, connector, load.target, "before")
        connector.publish([load for _, load in pairs])
        for run_id, load in pairs:
            self._snapshot(run_id, connector, load.target, "after")
            self.repo.audit(
                action="publish",
                decision="info",
                reason=f"published {connection}.{load.target.table} ({load.mode}, {load.rows} rows)",
                details={"run_id": run_id, "step": load.step_id, "diff": load.diff},
            )

    def verify_fingerprints(self, connection: str, pairs: list[tuple[str, StagedLoad]]) -> None:
        """ProductionChanged when a target changed since its run staged over it."""
        connector = self.connections.get(connection)
        for run_id, load in pairs:
            if load.mode == "view":  # holds no data: its sources are verified in the publish itself
                continue
            if connector.fingerprint(load.target) != load.fingerprint_before:
                raise ProductionChanged(
                    f"Production table {connection}.{load.target.table} changed after run {run_id} "
                    "staged its data, so committing would overwrite changes nobody audited",
                    hint="run the pipeline again with --sandbox, or use 'queryforge commit --rerun'",
                )

    def _snapshot(self, run_id: str, connector: Any, target: TargetRef, phase: str) -> None:
        snap = connector.snapshot(target)
        self.repo.add_schema_snapshot(
            run_id,
            connection=target.connection,
            table=target.table,
            phase=phase,
            exists=snap.exists,
            columns=list(snap.columns),
            rows=snap.rows,
        )

    def commit(self, run_id: str) -> RunOutcome:
        return self.commit_many([run_id])[0]

    def commit_many(self, run_ids: list[str]) -> list[RunOutcome]:
        """Publish audited sandbox runs together: on each connection, every load of every run in
        one `connector.publish` (one transaction), each checked first against the fingerprint its
        run staged over. One run is the ordinary `commit`; several are a rehearsed selection."""
        runs = [self.repo.get_run(r) for r in run_ids]
        for run in runs:
            if run.status != "audited":
                raise UserError(
                    f"Run {run.id} is {run.status}; only an audited sandbox run can be committed",
                    hint="start one with 'queryforge run PIPELINE --sandbox'",
                )
        staged = {run.id: staged_from_json(run.staged) for run in runs}
        pairs = [(run, load) for run in runs for load in staged[run.id]]
        targets = [load.target for _, load in pairs]
        twice = next((t for i, t in enumerate(targets) if t in targets[:i]), None)
        if twice is not None:
            raise UserError(
                f"Two runs of this commit load {twice.connection}.{twice.table}; one publish cannot "
                "write a table twice",
                hint="commit the runs one by one: queryforge commit RUN_ID",
            )
        outcomes = {
            run.id: RunOutcome(run_id=run.id, status="running", staged=staged[run.id]) for run in runs
        }
        connections = list(dict.fromkeys(load.target.connection for _, load in pairs))
        label = runs[0].pipeline_name if len(runs) == 1 else f"{len(runs)} pipelines"
        self.reporter.run_started(runs[0].id, label, [(f"publish:{c}", "publish") for c in connections])
        try:
            for name in connections if len(connections) > 1 else ():
                # several databases: every target checked before the first publish (each is
                # checked again right before its own); one database checks in its publish alone
                self.verify_fingerprints(
                    name, [(run.id, load) for run, load in pairs if load.target.connection == name]
                )
            for name in connections:
                step_id = f"publish:{name}"
                here = [(run, load) for run, load in pairs if load.target.connection == name]
                owners = list(dict.fromkeys(run.id for run, _ in here))
                for owner in owners:
                    self.repo.start_step(owner, step_id, "publish")
                self.reporter.step_started(step_id, "publish")
                started = time.perf_counter()
                try:
                    self.publish_loads(name, [(run.id, load) for run, load in here], verify=True)
                except QueryForgeError as exc:
                    for owner in owners:
                        self._step_failed(
                            owner, PublishStage(step_id=step_id, connection=name, loads=()), started, exc
                        )
                    raise
                for run, load in here:
                    outcomes[run.id].published.append(load.target)
                for owner in owners:
                    rows = sum(load.rows for run, load in here if run.id == owner)
                    self.repo.finish_step(owner, step_id, status="succeeded", rows_in=rows)
                rows = sum(load.rows for _, load in here)
                self.reporter.step_finished(step_id, "succeeded", rows, time.perf_counter() - started)
            for run in runs:
                marks = (run.result or {}).get("watermarks") or {}
                outcomes[run.id].watermarks = {k: decode_watermark(*v) for k, v in marks.items()}
                self.advance_watermarks(run.id, run.pipeline_name, outcomes[run.id].watermarks)
        finally:
            self.connections.close()
        for run in runs:
            outcome = outcomes[run.id]
            outcome.status = "succeeded"
            self.repo.update_run(
                run.id, status="succeeded", ended_at=now(), staged=[], result=self._result(outcome)
            )
        self.reporter.run_finished(runs[0].id, "succeeded")
        return [outcomes[run.id] for run in runs]
