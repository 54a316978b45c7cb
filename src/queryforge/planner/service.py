"""`ask`: draft a pipeline from a request, gate it, rehearse it in the sandbox, repair, publish on consent.

Every attempt is written to the repair log; every gate decision to the audit log. At most three
attempts; a failed error-severity check, a permission problem or missing source data stop at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import yaml

from ..connectors.base import TargetRef
from ..connectors.paths import PathFence, PathRefused
from ..connectors.registry import ConnectionSet
from ..engine.ops import Op
from ..errors import ChecksFailed, PermissionDenied, QueryForgeError, QuotaExceeded, UserError
from ..quality.checks import Rule
from ..runs.executor import RunOutcome
from ..runs.plan import ExecutionPlan
from ..runs.reporter import Reporter
from ..spec.loader import BoundPipeline, PipelineSource
from ..sql.policy import DIALECT
from ..sql.safety import UnsafeSql, check_expression, check_order, check_query
from ..store import Repo
from .context import PlannerContext
from .draft import PlannerQuestion
from .guard import check_destinations
from .repair import Failure, RulesRepairer, classify
from .rules import RulesPlanner

MAX_ATTEMPTS = 3


class Rehearsal(Protocol):
    """What the ask loop needs from the workspace (the Workspace facade provides it)."""

    repo: Repo
    root: Path

    def compile(self, bound: BoundPipeline, *, estimate: bool = False) -> ExecutionPlan: ...

    def connections(self) -> ConnectionSet: ...

    def run_source(
        self,
        source: PipelineSource,
        params: dict[str, Any] | None = None,
        *,
        sandbox: bool = False,
        reporter: Reporter | None = None,
    ) -> RunOutcome: ...

    def commit(self, run_id: str | None = None, reporter: Reporter | None = None) -> RunOutcome: ...


@dataclass(frozen=True)
class CostPolicy:
    cap_rows: int = 100_000_000
    budget_rows_per_hour: int = 1_000_000_000
    approved: bool = False


@runtime_checkable
class Repairer(Protocol):
    def repair(
        self, pipeline: dict[str, Any], failure: Failure, ctx: PlannerContext
    ) -> tuple[dict[str, Any], str] | None:
        """A patched pipeline and the reason, or None when the failure cannot be repaired."""
        ...


class Provider(Protocol):
    """A planner provider: drafts a pipeline; may also repair one (else the rules repairer is used)."""

    name: str

    def draft(self, request: str, ctx: PlannerContext) -> Any:
        """A `Draft` (`.pipeline` dict, `.notes`); raises PlannerQuestion when the request is ambiguous."""
        ...


@dataclass
class Attempt:
    number: int
    pipeline: dict[str, Any]
    run_id: str | None = None
    status: str = "pending"
    error_class: str | None = None
    error: str | None = None
    fix_reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "attempt": self.number,
            "run_id": self.run_id,
            "status": self.status,
            "error_class": self.error_class,
            "error": self.error,
            "fix_reason": self.fix_reason,
        }


@dataclass
class AskOutcome:
    ask_id: str
    request: str
    status: str = "failed"  # succeeded | audited | failed | needs_input | declined
    run_id: str | None = None
    reading: str | None = None  # the planner's reading of the request, in plain words
    unused: list[str] = field(default_factory=list)  # words of the request the reading did not use
    question: PlannerQuestion | None = None  # set when status is needs_input
    attempts: list[Attempt] = field(default_factory=list)
    published: list[TargetRef] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    run: RunOutcome | None = None
    error: QueryForgeError | None = None

    @property
    def pipeline(self) -> dict[str, Any] | None:
        return self.attempts[-1].pipeline if self.attempts else None

    @property
    def pipeline_yaml(self) -> str:
        return yaml.safe_dump(self.pipeline, sort_keys=False, allow_unicode=True) if self.pipeline else ""


def empty_result(outcome: AskOutcome) -> PlannerQuestion | None:
    """A question when the rehearsed draft would publish a table with no rows."""
    run = outcome.run
    empty = [s for s in (run.staged if run else []) if s.rows == 0 and s.mode != "append"]
    if not empty:
        return None
    names = ", ".join(s.target.table for s in empty)
    reading = f" (my reading: {outcome.reading})" if outcome.reading else ""
    return PlannerQuestion(
        f"The draft selects no rows for {names}{reading}, so I published nothing: an empty table "
        "usually means a value, a period or a column was misread",
        hint="check the values and dates against the data (`queryforge catalog show <source>`) and "
        "rephrase; to create an empty table on purpose, write the pipeline YAML",
    )


def _texts(value: Any) -> list[str]:
    """The SQL strings of a declared field: a string, or the values of a list or mapping."""
    if isinstance(value, str):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [str(v) for v in items if isinstance(v, str)]


def user_sql_of(pipeline: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(step id, kind, text) of every piece of user-written SQL in a pipeline draft.

    Driven by what the plug-ins declare (`Op.sql_fields`, `Rule.sql_fields`), so a new op or rule
    that carries SQL is gated without touching this function. Kinds: query, extract_query,
    expression, order.
    """
    out: list[tuple[str, str, str]] = []
    for step in pipeline.get("steps") or []:
        if not isinstance(step, dict):
            continue
        sid = str(step.get("id"))
        if isinstance(step.get("sql"), str):
            out.append((sid, "query", step["sql"]))
        for kind, op in Op.registry.items():
            body = step.get(kind)
            if isinstance(body, dict):
                for name, what in op.sql_fields.items():
                    out += [(sid, what, t) for t in _texts(body.get(name))]
        extract = step.get("extract")
        if isinstance(extract, dict) and isinstance(extract.get("query"), str):
            out.append((sid, "extract_query", extract["query"]))
        check = step.get("check")
        rules = check.get("rules") if isinstance(check, dict) else None
        for item in rules if isinstance(rules, list) else []:
            if not isinstance(item, dict):
                continue
            for name, arg in item.items():
                rule = Rule.registry.get(str(name))
                for key, what in (rule.sql_fields if rule else {}).items():
                    value = arg if key == "" else (arg.get(key) if isinstance(arg, dict) else None)
                    if key == "" and not isinstance(value, str):
                        continue
                    out += [(sid, what, t) for t in _texts(value)]
    return out


def extract_connections(pipeline: dict[str, Any]) -> dict[str, str]:
    """Step id -> the connection its extract query runs on."""
    out: dict[str, str] = {}
    for step in pipeline.get("steps") or []:
        extract = step.get("extract") if isinstance(step, dict) else None
        if isinstance(extract, dict) and isinstance(extract.get("connection"), str):
            out[str(step.get("id"))] = extract["connection"]
    return out


class AskService:
    def __init__(
        self,
        ws: Rehearsal,
        ctx: PlannerContext,
        *,
        drafts_dir: Path,
        provider: Provider | None = None,
        reporter: Reporter | None = None,
        max_attempts: int = MAX_ATTEMPTS,
        cost: CostPolicy | None = None,
    ) -> None:
        self.ws = ws
        self.cost = cost or CostPolicy()
        self.repo = ws.repo
        self.ctx = ctx
        self.provider = provider or RulesPlanner()
        # A provider that can repair (an LLM) does; otherwise deterministic rules do.
        self.repairer: Repairer = self.provider if isinstance(self.provider, Repairer) else RulesRepairer()
        self.reporter = reporter
        self.drafts_dir = drafts_dir
        self.max_attempts = max_attempts

    # ------------------------------------------------------------ gates
    def safety_gate(self, pipeline: dict[str, Any]) -> None:
        self.path_gate(pipeline)
        self.source_gate(pipeline)
        self.sql_gate(pipeline)

    def source_gate(self, pipeline: dict[str, Any]) -> None:
        """A draft never loads over one of its own sources (it would replace what it reads).

        Places are compared where they lead, not as spelled: real file paths (`..`, `//`, symlinks
        resolved; a files connection's table is a file in its folder) and table names without
        their default catalog and schema.
        """
        steps = [s for s in pipeline.get("steps") or [] if isinstance(s, dict)]
        conns = self.ws.connections()
        try:
            sources = {
                place
                for s in steps
                if isinstance(s.get("extract"), dict) and (place := conns.place("extract", s["extract"]))
            }
            for step in steps:
                body = step.get("load")
                place = conns.place("load", body) if isinstance(body, dict) else None
                if place is None or place not in sources:
                    continue
                shown = ".".join(p for p in place if p)
                reason = f"step '{step.get('id')}' would load over its own source {shown}"
                self.repo.audit(
                    action="target_policy",
                    decision="block",
                    reason=reason,
                    details={"step": str(step.get("id")), "target": shown},
                )
                raise PermissionDenied(
                    f"Blocked: {reason}",
                    hint="name a new table for the result ('... into active_customers')",
                )
        finally:
            conns.close()

    def path_gate(self, pipeline: dict[str, Any]) -> None:
        """A drafted pipeline may read and write files only inside the workspace, never .queryforge/.

        The same fence the compiler applies (ConnectionSet.fence_step), run on the raw draft before
        anything is compiled, so that a refusal is on the audit log.
        """
        connections = self.ws.connections()
        connections.use_fence(PathFence.of(self.ws.root, drafted=True))
        try:
            for step in pipeline.get("steps") or []:
                for kind in ("extract", "load"):
                    body = step.get(kind) if isinstance(step, dict) else None
                    if not isinstance(body, dict):
                        continue
                    try:
                        connections.fence_step(str(step.get("id")), kind, body)
                    except PathRefused as exc:
                        self.repo.audit(
                            action="path_policy",
                            decision="block",
                            reason=exc.message,
                            details={"step": str(step.get("id")), **exc.details},
                        )
                        raise
        finally:
            connections.close()

    def sql_gate(self, pipeline: dict[str, Any]) -> None:
        """Every declared SQL field of the draft against the allow-list, each decision audited."""
        step_ids = {str(s.get("id")).lower() for s in pipeline.get("steps") or [] if isinstance(s, dict)}
        sources = extract_connections(pipeline)
        for sid, kind, text in user_sql_of(pipeline):
            try:
                if kind == "query":
                    # A sql step reads only other steps; an extract query reads its connection's tables.
                    check_query(text, allowed_tables=step_ids)
                elif kind == "extract_query":
                    check_query(text, dialect=self._dialect(sources.get(sid)))
                elif kind == "order":
                    check_order(text)
                else:
                    check_expression(text)
            except UnsafeSql as exc:
                self.repo.audit(
                    action="sql_policy",
                    decision="block",
                    reason=str(exc),
                    details={"step": sid, "kind": kind, "sql": text[:2000]},
                )
                raise UserError(
                    f"Blocked by the SQL safety policy in step '{sid}': {exc}",
                    hint="QueryForge runs only single read-only queries over pipeline steps",
                ) from None
            self.repo.audit(
                action="sql_policy",
                decision="allow",
                reason="read-only query over pipeline steps",
                details={"step": sid, "kind": kind, "sql": text[:2000]},
            )

    def _dialect(self, connection: str | None) -> str:
        """The SQL dialect of a connection (its functions are checked against that dialect's list)."""
        if not connection:
            return DIALECT
        conns = self.ws.connections()
        try:
            return str(getattr(conns.get(connection), "dialect", DIALECT))
        except QueryForgeError:
            return DIALECT  # compiling will say what is wrong with the connection
        finally:
            conns.close()

    def cost_gate(self, plan: ExecutionPlan) -> None:
        """Per-query cap (needs explicit approval above it) and a rolling hourly budget per org."""
        rows = plan.estimated_rows or 0
        since = datetime.now(UTC) - timedelta(hours=1)
        spent = sum(
            int((e.get("details") or {}).get("rows", 0))
            for e in self.repo.list_audit(limit=10_000, action="cost_gate")
            if e["decision"] == "allow" and e["ts"] >= since
        )
        remaining = max(0, self.cost.budget_rows_per_hour - spent)
        details = {"rows": rows, "cap": self.cost.cap_rows, "spent_last_hour": spent, "remaining": remaining}
        if rows > remaining:
            self.repo.audit(
                action="cost_gate", decision="block", reason="over the hourly budget", details=details
            )
            raise QuotaExceeded(
                f"This pipeline would scan about {rows:,} rows, more than the {remaining:,} rows left "
                f"in this hour's budget ({self.cost.budget_rows_per_hour:,} rows per hour)",
                hint="narrow the request (filter, fewer sources) or wait for the budget to refill",
            )
        if rows > self.cost.cap_rows and not self.cost.approved:
            self.repo.audit(
                action="cost_gate", decision="block", reason="over the per-query cap", details=details
            )
            raise QuotaExceeded(
                f"This pipeline would scan about {rows:,} rows, "
                f"over the per-query cap of {self.cost.cap_rows:,}",
                hint="approve it explicitly with --approve-cost, or narrow the request",
            )
        self.repo.audit(action="cost_gate", decision="allow", reason="within cap and budget", details=details)

    def validation_gate(self, source: PipelineSource) -> None:
        try:
            plan = self.ws.compile(source.bind(), estimate=True)
        except QueryForgeError as exc:
            self.repo.audit(
                action="plan_validation",
                decision="block",
                reason=exc.message,
                details={"where": exc.where, "hint": exc.hint},
            )
            raise
        self.repo.audit(
            action="plan_validation",
            decision="allow",
            reason="tables, columns and types check out",
            details={"pipeline": source.name},
        )
        self.cost_gate(plan)

    # ------------------------------------------------------------ the loop
    def ask(self, request: str, *, consent: Callable[[AskOutcome], bool | None]) -> AskOutcome:
        outcome = AskOutcome(ask_id=self.repo.new_ask_id(), request=request)
        try:
            draft = self.provider.draft(request, self.ctx)
        except PlannerQuestion as exc:
            outcome.status, outcome.error, outcome.question = "needs_input", exc, exc
            return outcome
        except QueryForgeError as exc:  # the provider failed (auth, 5xx, timeout, garbage): same contract
            outcome.status, outcome.error = "failed", exc
            return outcome
        try:
            check_destinations(request, draft.pipeline, self.ctx)
        except PlannerQuestion as exc:
            self.repo.audit(
                action="target_policy",
                decision="block",
                reason=exc.message,
                details={"request": request[:500]},
            )
            outcome.status, outcome.error, outcome.question = "needs_input", exc, exc
            return outcome
        outcome.notes = list(getattr(draft, "notes", []))
        outcome.reading = getattr(draft, "reading", None)
        outcome.unused = list(getattr(draft, "unused", []) or [])
        pipeline: dict[str, Any] = draft.pipeline
        for number in range(1, self.max_attempts + 1):
            attempt = Attempt(number=number, pipeline=pipeline)
            outcome.attempts.append(attempt)
            log_id = self.repo.add_repair_log(
                ask_id=outcome.ask_id,
                attempt=number,
                request=request,
                pipeline_json=json.dumps(pipeline, default=str),
            )
            failure = self.rehearse(attempt, outcome)
            if failure is None:
                self.repo.update_repair_log(log_id, run_id=attempt.run_id, repair_successful=True)
                break
            repaired = None
            if number < self.max_attempts:
                try:
                    repaired = self.repairer.repair(pipeline, failure, self.ctx)
                except QueryForgeError as exc:  # the repairer itself failed (an LLM down, garbage twice)
                    outcome.notes.append(f"repair failed: {exc.message}")
            self.repo.update_repair_log(
                log_id,
                run_id=attempt.run_id,
                error_class=failure.failure_class,
                original_error=failure.message,
                fix_reason=repaired[1] if repaired else None,
                repair_successful=False,
            )
            if repaired is None:
                return outcome
            pipeline, attempt.fix_reason = repaired
        else:
            return outcome
        outcome.error = None
        empty = empty_result(outcome)
        if empty is not None:  # a filter that matches nothing is a misreading far more often than a wish
            outcome.status, outcome.error, outcome.question = "needs_input", empty, empty
            return outcome
        decision = consent(outcome)
        if not decision:
            outcome.status = "declined" if decision is False else "audited"
            return outcome
        assert outcome.run_id is not None
        published = self.ws.commit(outcome.run_id, reporter=self.reporter)
        outcome.published = published.published
        outcome.status = published.status  # the executor audits every publish
        return outcome

    def rehearse(self, attempt: Attempt, outcome: AskOutcome) -> Failure | None:
        """Gates and a sandbox run for one attempt; None when it is audited and ready to publish."""
        path = self.drafts_dir / outcome.ask_id / f"attempt-{attempt.number}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(attempt.pipeline, sort_keys=False, allow_unicode=True))
        source = PipelineSource(raw=attempt.pipeline, origin=str(path))
        try:
            self.safety_gate(attempt.pipeline)
        except QueryForgeError as exc:
            return self._failed(attempt, outcome, exc, unsafe=True)
        try:
            self.validation_gate(source)
            run = self.ws.run_source(source, sandbox=True, reporter=self.reporter)
        except QueryForgeError as exc:
            return self._failed(attempt, outcome, exc)
        attempt.run_id = outcome.run_id = run.run_id
        outcome.run = run
        if run.error is not None:
            return self._failed(attempt, outcome, run.error)
        attempt.status = "audited"
        outcome.status = "audited"
        return None

    def _failed(
        self, attempt: Attempt, outcome: AskOutcome, exc: QueryForgeError, *, unsafe: bool = False
    ) -> Failure:
        attempt.status = "failed"
        attempt.error_class = exc.failure_class.value
        attempt.error = exc.render()
        outcome.status = "failed"
        outcome.error = exc
        failure = classify(exc, unsafe=unsafe)
        if isinstance(exc, ChecksFailed):
            outcome.notes.append(
                "a failed check is the data telling the truth: nothing was changed to make it "
                "pass. Fix the data, or load the failing rows into a quarantine table explicitly"
            )
        return failure
