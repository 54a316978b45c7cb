"""The `queryforge` / `qf` command line. Each command parses, calls one Workspace method, renders."""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import ChecksFailed, InternalError, QueryForgeError, UserError
from ..planner.service import AskOutcome
from ..runs.executor import RunOutcome
from ..runs.stream import StreamStatus
from ..secrets import scrub
from ..spec.models import json_schema
from ..sql.safety import DEFAULT_PREVIEW_LIMIT
from ..workspace import Workspace
from . import render

JSON_LIMIT = 1_000_000  # scripts want whole results; the cap only guards memory

app = typer.Typer(
    help="QueryForge: data pipelines that are checked, rehearsed in a sandbox and published atomically.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
runs_app = typer.Typer(help="Inspect runs.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
connections_app = typer.Typer(help="List and test the connections of queryforge.yaml.", no_args_is_help=True)
app.add_typer(connections_app, name="connections")

WorkspaceOpt = Annotated[
    Path | None,
    typer.Option(
        "--workspace",
        "-w",
        help="workspace folder (default: the current folder or a parent)",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object for scripts")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="show tracebacks of errors")]
SelectOpt = Annotated[
    str | None,
    typer.Option(
        "--select",
        "-s",
        help="pipelines of the project: NAME, NAME+ (and downstream), +NAME (and upstream), tag:T, "
        "path:pipelines/marts; several separated by spaces",
    ),
]
ParamOpt = Annotated[
    list[str] | None, typer.Option("--param", "-p", help="pipeline parameter NAME=VALUE (repeatable)")
]


def parse_params(items: list[str] | None) -> dict[str, str]:
    params = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"Cannot read --param {item!r}", hint="write --param name=value")
        key, value = item.split("=", 1)
        params[key.strip()] = value
    return params


class ScrubSecrets(logging.Filter):
    """Log records leave the process with remembered secrets masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub(record.getMessage())
        record.args = None
        return True


@contextmanager
def handled(as_json: bool, debug: bool) -> Iterator[None]:
    """The one error boundary: user errors exit 2, failed checks 1, our bugs 3."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.addFilter(ScrubSecrets())
    try:
        yield
    except QueryForgeError as exc:
        if debug:
            render.err.print_exception()
        render.render_error(exc, as_json=as_json)
        raise typer.Exit(exc.exit_code) from None
    except typer.Exit:
        raise
    except Exception as exc:
        if debug:
            render.err.print_exception()
        wrapped = InternalError(
            f"Internal error: {type(exc).__name__}: {exc}",
            hint="run again with --debug and report the traceback",
        )
        render.render_error(wrapped, as_json=as_json)
        raise typer.Exit(3) from None


def open_workspace(path: Path | None) -> Workspace:
    return Workspace.find(path)


def outcome_json(ws: Workspace, outcome: RunOutcome) -> dict[str, Any]:
    run = ws.get_run(outcome.run_id)
    data: dict[str, Any] = {
        "run_id": outcome.run_id,
        "pipeline": run.pipeline_name,
        "version": run.version,
        "mode": run.mode,
        "status": outcome.status,
        "note": outcome.note,
        "published": [dataclasses.asdict(t) for t in outcome.published],
        "staged": [
            {
                "step_id": s.step_id,
                "connection": s.target.connection,
                "table": s.target.table,
                "mode": s.mode,
                "rows": s.rows,
                "diff": s.diff,
            }
            for s in outcome.staged
        ],
        "checks": outcome.checks,
        "steps": [dataclasses.asdict(s) for s in ws.repo.list_steps(outcome.run_id)],
    }
    if outcome.error is not None:
        data["error"] = {
            "class": outcome.error.failure_class.value,
            "message": outcome.error.message,
            "where": outcome.error.where,
            "hint": outcome.error.hint,
        }
    return data


def finish(ws: Workspace, outcome: RunOutcome, as_json: bool) -> None:
    """Render a run's outcome and exit with its code (0 ok, 1 checks failed, 2 user error, 3 internal)."""
    if as_json:
        render.print_json(outcome_json(ws, outcome))
    if outcome.error is not None:
        if not as_json:
            for c in outcome.failed_checks:
                render.err.print(
                    f"  check {c['step_id']}.{c['rule_name']}: {c['violations']} violation(s); "
                    f"e.g. {render.to_jsonable(c['samples'][:2])}",
                    soft_wrap=True,
                )
            render.render_error(outcome.error, as_json=False)
            unchanged = "production is unchanged" if not outcome.published else "some targets were published"
            render.err.print(
                f"Run {outcome.run_id} {outcome.status}; {unchanged}. "
                f"Details: queryforge runs show {outcome.run_id}"
            )
        raise typer.Exit(outcome.error.exit_code if not isinstance(outcome.error, ChecksFailed) else 1)
    if not as_json:
        if outcome.note:
            render.out.print(outcome.note)
        if outcome.status == "audited":
            for s in outcome.staged:
                render.out.print(
                    f"staged {s.target.connection}.{s.target.table} ({s.mode}): "
                    + render.staged_line(s.mode, s.rows, s.diff)
                )
            render.out.print(
                f"Run {outcome.run_id} audited; production untouched. Publish it with: "
                f"queryforge commit {outcome.run_id}"
            )
        else:
            views = {s.target for s in outcome.staged if s.mode == "view"}
            shown = [f"{t.connection}.{t.table}{' (view)' if t in views else ''}" for t in outcome.published]
            targets = ", ".join(shown) or "nothing"
            render.out.print(f"Run {outcome.run_id} succeeded; published {targets}.")


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="folder to create (default: current folder)")] = Path("."),
    bare: Annotated[bool, typer.Option("--bare", help="no sample data and no example pipelines")] = False,
    example: Annotated[
        str | None,
        typer.Option(
            "--example",
            help="an example project instead of the default examples: jaffle (dbt's jaffle_shop as "
            "staging and mart pipelines that reference each other)",
        ),
    ] = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Create a workspace: queryforge.yaml, pipelines/, data/ and .queryforge/."""
    with handled(as_json, debug):
        ws = Workspace.init(directory, bare=bare, example=example)
        pipelines = sorted(
            str(p.relative_to(ws.root / "pipelines")) for p in (ws.root / "pipelines").rglob("*.yaml")
        )
        data = sorted(p.name for p in (ws.root / "data").iterdir())
        ws.close()
        if as_json:
            render.print_json({"workspace": str(ws.root), "pipelines": pipelines, "data": data})
            return
        render.out.print(f"Created workspace {ws.root}")
        if pipelines:
            render.out.print(f"  pipelines: {', '.join(pipelines)}\n  data: {', '.join(data)}")
            if example:
                render.out.print(
                    f"Next: cd {directory} && queryforge validate && queryforge run --select +customers "
                    "&& queryforge lineage customers"
                )
            else:
                render.out.print(f"Next: cd {directory} && queryforge run pipelines/{pipelines[0]} --sandbox")


@app.command()
def validate(
    pipeline: Annotated[
        str | None,
        typer.Argument(help="pipeline file or name under pipelines/; default: the whole project"),
    ] = None,
    select: SelectOpt = None,
    param: ParamOpt = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Check pipelines without running them: YAML, fields, DAG, SQL, files, columns, and every
    `ref:` against what the referenced pipeline will publish. With no pipeline: the whole project
    (or --select), upstream first."""
    with handled(as_json, debug), open_workspace(workspace) as ws:
        if pipeline is None:
            if param:
                raise UserError("--param needs a pipeline", hint="queryforge validate NAME --param k=v")
            checked = ws.validate_project(select)
            plans = checked.plans
            if as_json:
                render.print_json(
                    {
                        "valid": True,
                        "pipelines": [
                            {
                                "pipeline": name,
                                "version_hash": p.content_hash,
                                "steps": len(p.step_hashes),
                                "ephemeral": p.ephemeral,
                            }
                            for name, p in plans
                        ],
                        "skipped": [{"pipeline": name, "reason": why} for name, why in checked.skipped],
                    }
                )
                return
            for name, p in plans:
                targets = ", ".join(f"{t.connection}.{t.table}" for t in p.targets) or "nothing"
                into = f"loads into {targets}"
                if p.ephemeral:
                    into = "ephemeral: inlined into the pipelines that ref it"
                render.out.print(f"[green]✓[/green] {name}: {len(p.step_hashes)} steps, {into}")
            for name, why in checked.skipped:
                render.out.print(
                    f"[yellow]-[/yellow] {name}: not validated: {why} (validate it with --param)"
                )
            count = f"{len(plans)} pipeline{'s' if len(plans) != 1 else ''}"
            render.out.print(f"{count} valid, in dependency order; nothing was run.")
            return
        if select:
            raise UserError(
                "Give a pipeline or --select, not both", hint="queryforge validate --select NAME+"
            )
        plan = ws.validate(pipeline, parse_params(param))
        if as_json:
            render.print_json(
                {
                    "valid": True,
                    "pipeline": plan.pipeline,
                    "version_hash": plan.content_hash,
                    "steps": len(plan.step_hashes),
                    "schemas": plan.schemas,
                }
            )
            return
        into = (
            "ephemeral: inlined into the pipelines that ref it"
            if plan.ephemeral
            else f"loads into {', '.join(f'{t.connection}.{t.table}' for t in plan.targets) or 'nothing'}"
        )
        render.out.print(f"[green]✓[/green] {pipeline} is valid: {len(plan.step_hashes)} steps, {into}")


@app.command()
def lineage(
    pipeline: Annotated[str | None, typer.Argument(help="pipeline name; default: the whole project")] = None,
    fmt: Annotated[str, typer.Option("--format", help="text, mermaid, dot or json")] = "text",
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Which pipelines feed a pipeline and which read its output (from `ref:` extracts)."""
    with handled(as_json, debug), open_workspace(workspace) as ws:
        if fmt not in ("text", "mermaid", "dot", "json"):
            raise UserError(f"Unknown format '{fmt}'", hint="use text, mermaid, dot or json")
        graph = ws.lineage(pipeline)
        if as_json or fmt == "json":
            render.print_json(graph.to_json())
        else:
            render.out.print(
                {"text": graph.text, "mermaid": graph.mermaid, "dot": graph.dot}[fmt](),
                highlight=False,
                markup=False,
            )


@app.command()
def explain(
    pipeline: Annotated[str, typer.Argument(help="pipeline file or name")],
    param: ParamOpt = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Show the stages a run would execute and their SQL (a dry run)."""
    with handled(as_json, debug), open_workspace(workspace) as ws:
        stages = ws.explain(pipeline, parse_params(param))
        if as_json:
            render.print_json(stages)
            return
        for s in stages:
            render.out.print(
                f"[bold]{s['step']}[/bold] [dim]{s['stage']}[/dim]\n  {s['detail']}", soft_wrap=True
            )


@app.command()
def run(
    pipeline: Annotated[str | None, typer.Argument(help="pipeline file or name (or use --select)")] = None,
    select: SelectOpt = None,
    sandbox: Annotated[
        bool, typer.Option("--sandbox", help="write and audit only; production untouched")
    ] = False,
    atomic: Annotated[
        bool,
        typer.Option(
            "--atomic",
            help="with --select: rehearse every pipeline, then publish them all at once (one transaction "
            "per connection); a failure anywhere publishes nothing",
        ),
    ] = False,
    param: ParamOpt = None,
    engine: Annotated[
        str | None,
        typer.Option(
            "--engine",
            help="engine that executes the run: duckdb, spark (local[*], or QUERYFORGE_SPARK_MASTER) or "
            "auto (spark when the input exceeds QUERYFORGE_SPARK_ABOVE_BYTES, 10 GiB); "
            "default: QUERYFORGE_ENGINE, then queryforge.yaml's engine",
        ),
    ] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Run a pipeline: write to staging, run the checks, publish atomically (unless --sandbox).
    With --select: the selected pipelines upstream first, one write-audit-publish each, stopping at
    the first that fails; with --sandbox, each reads what its upstream staged and `queryforge
    commit` publishes the slice; with --atomic, all are published at once after all are audited."""
    with handled(as_json, debug), open_workspace(workspace) as ws:
        if engine:
            ws.use_engine(engine)
        reporter = None if as_json or not render.err.is_terminal else render.LiveReporter()
        if (pipeline is None) == (select is None):
            raise UserError(
                "Give a pipeline or --select (one of the two)", hint="queryforge run --select +customers"
            )
        if atomic and select is None:
            raise UserError("--atomic goes with --select", hint="queryforge run --select +customers --atomic")
        if select is not None:
            if param:
                raise UserError(
                    "--select runs each pipeline with its parameters' defaults; --param is not supported "
                    "with it",
                    hint="run one pipeline with: queryforge run NAME --param k=v",
                )
            if sandbox and atomic:
                raise UserError("--sandbox and --atomic exclude each other", hint="--atomic publishes")
            done, not_run = ws.run_selection(select, sandbox=sandbox, atomic=atomic, reporter=reporter)
            how = "rehearsed" if sandbox else "atomic" if atomic else "published"
            render_selection(ws, done, not_run, as_json, how)
            return
        assert pipeline is not None
        outcome = ws.run(pipeline, parse_params(param), sandbox=sandbox, reporter=reporter)
        finish(ws, outcome, as_json)


def render_selection(
    ws: Workspace, done: list[tuple[str, RunOutcome]], not_run: list[str], as_json: bool, how: str
) -> None:
    """The runs of a selection; the first failure is rendered as `run` renders it, with what was
    not run. `how`: published (one publish each), atomic, rehearsed (sandbox) or committed."""
    failed = done[-1][1] if done and done[-1][1].error is not None else None
    if as_json:
        render.print_json(
            {"runs": [{"pipeline": name, **outcome_json(ws, o)} for name, o in done], "not_run": not_run}
        )
        if failed is not None and failed.error is not None:
            raise typer.Exit(1 if isinstance(failed.error, ChecksFailed) else failed.error.exit_code)
        return
    for name, o in done if failed is None else done[:-1]:
        if o.published:
            targets = ", ".join(f"{t.connection}.{t.table}" for t in o.published)
            render.out.print(f"[green]✓[/green] {name}: run {o.run_id} published {targets}")
        else:
            staged = ", ".join(f"{s.target.connection}.{s.target.table} ({s.rows:,} rows)" for s in o.staged)
            render.out.print(
                f"[green]✓[/green] {name}: run {o.run_id} {o.status}; staged {staged or 'nothing'}"
            )
    if failed is not None:
        render.err.print(f"[red]✗[/red] {done[-1][0]} failed; not run: {', '.join(not_run) or 'nothing'}")
        if how in ("rehearsed", "atomic"):
            render.err.print("Nothing of this selection was published.")
        finish(ws, failed, as_json=False)
    n = f"{len(done)} pipeline{'s' if len(done) != 1 else ''}"
    render.out.print(
        {
            "published": f"{n} published, upstream first.",
            "atomic": f"{n} published together: one publish per connection.",
            "committed": f"{n} committed together: one publish per connection.",
            "rehearsed": f"{n} written and audited, nothing published; each read what its upstream "
            "staged. Publish them all with: queryforge commit",
        }[how]
    )


@app.command()
def stream(
    pipeline: Annotated[str, typer.Argument(help="streaming pipeline file or name (mode: streaming)")],
    param: ParamOpt = None,
    max_batches: Annotated[
        int | None, typer.Option("--max-batches", help="stop after this many committed batches")
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(
            "--engine",
            help="duckdb, or spark (Structured Streaming with a checkpoint; a file-drop folder or rate://); "
            "default: QUERYFORGE_ENGINE, then queryforge.yaml's engine (auto streams on duckdb)",
        ),
    ] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Run a streaming pipeline until stopped: each micro-batch is checked and published with its
    stream position in one transaction (exactly once). Ctrl-C or SIGTERM finish the batch in hand,
    commit it and stop; a killed stream resumes from the position the sink committed."""
    stop = threading.Event()

    def graceful(signum: int, _frame: object) -> None:
        if stop.is_set():  # a second Ctrl-C: stop now (the batch in hand is read again next start)
            raise KeyboardInterrupt
        stop.set()
        render.err.print("stopping after the batch in hand (Ctrl-C again to stop at once)")

    def progress(status: StreamStatus, notable: bool) -> None:
        if as_json:
            return
        if notable and status.last_error:
            render.err.print(f"[yellow]{status.last_error}[/yellow]")
        render.err.print(status.summary(), highlight=False)

    with handled(as_json, debug), open_workspace(workspace) as ws:
        if engine:
            ws.use_engine(engine)
        previous = signal.signal(signal.SIGINT, graceful), signal.signal(signal.SIGTERM, graceful)
        try:
            run_id, status = ws.stream(
                pipeline, parse_params(param), stop=stop, max_batches=max_batches, on_progress=progress
            )
        finally:
            signal.signal(signal.SIGINT, previous[0])
            signal.signal(signal.SIGTERM, previous[1])
        if as_json:
            render.print_json({"run_id": run_id, "status": "succeeded", **status.to_json()})
        else:
            render.out.print(
                f"Stream stopped cleanly: run {run_id}, {status.rows:,} rows in {status.batches} batches "
                f"(stream batch {status.last_batch})",
                highlight=False,
            )


@app.command()
def commit(
    run_id: Annotated[
        str | None,
        typer.Argument(help="id (or unique prefix) of an audited sandbox run; default: the newest"),
    ] = None,
    rerun: Annotated[
        bool,
        typer.Option("--rerun", help="if production changed since staging, run the pipeline again instead"),
    ] = False,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Publish exactly what a sandbox run staged and audited, in one transaction per target."""
    with handled(as_json, debug), open_workspace(workspace) as ws:
        reporter = None if as_json or not render.err.is_terminal else render.LiveReporter()
        target = ws.commit_target(run_id).id  # resolved once: another run may start meanwhile
        sliced = ws.commit_slice(target, reporter=reporter) if not rerun else None
        if sliced is not None:
            render_selection(ws, sliced, [], as_json, "committed")
            return
        finish(ws, ws.commit(target, reporter=reporter, rerun=rerun), as_json)


@runs_app.command("list")
def runs_list(
    status: Annotated[str | None, typer.Option(help="only runs with this status")] = None,
    pipeline: Annotated[str | None, typer.Option(help="only runs of this pipeline")] = None,
    limit: Annotated[int, typer.Option(help="how many runs")] = 20,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """List recent runs, newest first."""
    with handled(as_json, debug), open_workspace(workspace) as ws:
        runs = ws.list_runs(limit=limit, status=status, pipeline=pipeline)
        positions = ws.positions()
        if as_json:
            render.print_json([{**dataclasses.asdict(r), "position": positions.get(r.id)} for r in runs])
            return
        render.out.print(render.runs_table(runs, positions))


@runs_app.command("show")
def runs_show(
    run_id: Annotated[
        str | None, typer.Argument(help="run id or unique prefix; default: the newest run")
    ] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Show a run: steps, rows, timings, check results with failing rows, staged preview and diff."""
    with handled(as_json, debug), open_workspace(workspace) as ws:
        detail = ws.run_detail(run_id)
        if as_json:
            render.print_json(detail)
            return
        render.run_detail(detail)


def ask_json(ws: Workspace, outcome: AskOutcome) -> dict[str, Any]:
    data: dict[str, Any] = {
        "ask_id": outcome.ask_id,
        "request": outcome.request,
        "status": outcome.status,
        "run_id": outcome.run_id,
        "reading": outcome.reading,
        "unused": outcome.unused,
        "attempts": len(outcome.attempts),
        "published": [dataclasses.asdict(t) for t in outcome.published],
        "pipeline": outcome.pipeline,
        "repairs": [a.as_dict() for a in outcome.attempts],
        "notes": outcome.notes,
        "checks": outcome.run.checks if outcome.run else [],
        "staged": [
            {
                "connection": s.target.connection,
                "table": s.target.table,
                "mode": s.mode,
                "rows": s.rows,
                "diff": s.diff,
            }
            for s in (outcome.run.staged if outcome.run else [])
        ],
    }
    if outcome.question is not None:
        data["question"] = outcome.question.message
        data["candidates"] = outcome.question.candidates
        data["refusal"] = outcome.question.refusal
    if outcome.error is not None:
        data["error"] = {
            "class": outcome.error.failure_class.value,
            "message": outcome.error.message,
            "where": outcome.error.where,
            "hint": outcome.error.hint,
        }
    return data


def show_ask(outcome: AskOutcome) -> None:
    """The reading, the drafted pipeline, each attempt and its gates, checks and the staged preview."""
    if outcome.reading:
        reading = render.Text("Understood: ", style="bold")
        reading.append(outcome.reading)
        render.out.print(reading, soft_wrap=True)
    if outcome.unused:
        render.out.print(render.Text("not used: " + ", ".join(outcome.unused), style="dim"), soft_wrap=True)
    if outcome.pipeline:
        render.out.print("[bold]Drafted pipeline[/bold]")
        render.out.print(
            render.Syntax(
                outcome.pipeline_yaml, "yaml", theme="ansi_dark", background_color="default", word_wrap=True
            )
        )
    for note in outcome.notes:
        render.out.print(f"[dim]note:[/dim] {note}")
    for attempt in outcome.attempts:
        style = "green" if attempt.status == "audited" else "red"
        line = f"attempt {attempt.number}: [{style}]{attempt.status}[/{style}]"
        if attempt.run_id:
            line += f" (run {attempt.run_id})"
        render.out.print(line)
        if attempt.error:
            render.out.print(f"  {attempt.error}", soft_wrap=True)
        if attempt.fix_reason:
            render.out.print(f"  [yellow]repair:[/yellow] {attempt.fix_reason}")
    if outcome.run is not None:
        passed = sum(c["passed"] for c in outcome.run.checks)
        if outcome.run.checks:
            render.out.print(f"checks: {passed}/{len(outcome.run.checks)} passed")
        for c in outcome.run.checks:
            if not c["passed"]:
                render.out.print(
                    f"  [red]{c['step_id']}.{c['rule_name']}[/red]: {c['violations']} violation(s); "
                    f"e.g. {render.to_jsonable(c['samples'][:3])}",
                    soft_wrap=True,
                )
        for s in outcome.run.staged:
            d = s.diff
            render.out.print(
                f"staged {s.target.connection}.{s.target.table} ({s.mode}): {s.rows:,} rows "
                f"(+{d.get('added', 0)} -{d.get('removed', 0)} ~{d.get('changed', 0)})"
            )


ASK_HELP = (
    "Turn a plain-English request into a pipeline: draft, check, rehearse, repair, publish on your "
    "word.\n\n"
    "The planner may answer with a question (status needs_input, with the readings it considered) or "
    "a refusal instead of a pipeline; then nothing is drafted or run.\n\n"
    "Providers: rules (offline, deterministic, the default), openai (any OpenAI-compatible API: "
    "OpenAI, vLLM, Ollama, llama.cpp server), anthropic, gemini. Configure one in queryforge.yaml "
    "under planner: with provider, model, base_url, timeout (seconds) and api_key, a reference to "
    "the variable holding the key, e.g. api_key: ${env:OPENAI_API_KEY} (never the key itself). Or "
    "set QUERYFORGE_LLM, QUERYFORGE_LLM_MODEL, QUERYFORGE_LLM_BASE_URL, QUERYFORGE_LLM_TIMEOUT and "
    "OPENAI_API_KEY, ANTHROPIC_API_KEY or GEMINI_API_KEY. Environment variables win over the file, "
    "--provider over both. See docs/configuration.md."
)


@app.command(help=ASK_HELP)
def ask(
    request: Annotated[str, typer.Argument(help='what you want, e.g. "Load data/orders.csv into orders"')],
    commit_: Annotated[bool, typer.Option("--commit", help="publish when the rehearsal passes")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
    provider: Annotated[
        str | None,
        typer.Option(
            help="planner provider: rules (offline), openai (any OpenAI-compatible API), anthropic or "
            "gemini (default: QUERYFORGE_LLM, else planner.provider in queryforge.yaml, else rules)",
            show_default=False,
        ),
    ] = None,
    approve_cost: Annotated[
        bool, typer.Option("--approve-cost", help="allow a pipeline estimated above the per-query cost cap")
    ] = False,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Turn a plain-English request into a pipeline: draft, check, rehearse, repair, publish on your word."""
    with handled(as_json, debug), open_workspace(workspace) as ws:

        def consent(outcome: AskOutcome) -> bool | None:
            if commit_ or yes:
                return True
            if as_json or not sys.stdin.isatty():
                return None  # nobody to ask: the run stays audited for a later queryforge commit
            show_ask(outcome)
            return typer.confirm("Publish?", default=False)

        interactive = not as_json and render.err.is_terminal
        outcome = ws.ask(
            request,
            approve_cost=approve_cost,
            consent=consent,
            provider=provider,
            reporter=render.LiveReporter() if interactive else None,
        )
        if as_json:
            render.print_json(ask_json(ws, outcome))
        else:
            if outcome.status != "declined" or not interactive:
                show_ask(outcome)
            if outcome.status == "succeeded":
                render.out.print(
                    f"Published {', '.join(f'{t.connection}.{t.table}' for t in outcome.published)} "
                    f"(run {outcome.run_id})."
                )
            elif outcome.status in ("audited", "declined"):
                render.out.print(
                    f"Not published. Run {outcome.run_id} stays audited; publish it later with: "
                    f"queryforge commit {outcome.run_id}"
                )
            elif outcome.question is not None:
                render.ask_question(outcome.question)
            elif outcome.error is not None:
                render.render_error(outcome.error, as_json=False)
        if outcome.error is not None and outcome.status not in ("succeeded", "audited", "declined"):
            raise typer.Exit(outcome.error.exit_code)


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="one read-only SELECT over warehouse tables")],
    limit: Annotated[
        int | None,
        typer.Option(
            help=f"row cap added to plain listings (default {DEFAULT_PREVIEW_LIMIT:,}; "
            f"{JSON_LIMIT:,} with --json)"
        ),
    ] = None,
    connection: Annotated[
        str | None,
        typer.Option("--connection", "-c", help="a PostgreSQL or MySQL connection (default: the warehouse)"),
    ] = None,
    workspace: WorkspaceOpt = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="print the rows as one JSON array of objects (DECIMAL values keep every digit)"
        ),
    ] = False,
    debug: DebugOpt = False,
) -> None:
    """Run a read-only, safety-checked query on the warehouse (or a database) and print the rows."""
    with handled(as_json, debug), open_workspace(workspace) as ws:
        cap = limit or (JSON_LIMIT if as_json else DEFAULT_PREVIEW_LIMIT)
        result = ws.query(sql, limit=cap, connection=connection)
        names, rows = result.names, result.rows
        cut_note = (
            f"Result cut to the first {cap:,} rows: the query returned more. "
            "Narrow it (a filter, an aggregate) or raise --limit"
        )
        if as_json:
            render.print_json([dict(zip(names, r, strict=True)) for r in rows])
            if result.cut:
                render.err.print(cut_note, markup=False)
            return
        table = render.Table(header_style="bold")
        for n in names:
            table.add_column(n)
        for r in rows:
            table.add_row(*["" if v is None else str(v) for v in r])
        render.out.print(table)
        render.out.print(f"[dim]{len(rows):,} row{'s' if len(rows) != 1 else ''}[/dim]")
        if result.cut:
            render.out.print(cut_note, markup=False)


@app.command()
def repairs(
    run_id: Annotated[str, typer.Argument(help="a run started by 'ask' (any attempt's run id)")],
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Show the repair log of an ask: every attempt, its error and the fix that was tried."""
    with handled(as_json, debug), open_workspace(workspace) as ws:
        logs = ws.repairs(run_id)
        if as_json:
            render.print_json(logs)
            return
        table = render.Table(header_style="bold")
        for name in ("attempt", "run", "error", "fix", "successful"):
            table.add_column(name)
        for log in logs:
            table.add_row(
                str(log["attempt_number"]),
                log.get("run_id") or "",
                (log.get("original_error") or "")[:80],
                log.get("fix_reason") or "",
                str(log.get("repair_successful")),
            )
        render.out.print(table)


@connections_app.command("list")
def connections_list(
    workspace: WorkspaceOpt = None, as_json: JsonOpt = False, debug: DebugOpt = False
) -> None:
    """List the connections: name, kind, url (passwords masked), writable."""
    with handled(as_json, debug), open_workspace(workspace) as ws:
        items = ws.connection_list()
        if as_json:
            render.print_json(items)
            return
        table = render.Table(header_style="bold")
        for name in ("name", "kind", "url", "writable"):
            table.add_column(name)
        for c in items:
            mark = " (default target)" if c["default_target"] else ""
            table.add_row(c["name"] + mark, c["scheme"], c["url"], "yes" if c["writable"] else "no")
        render.out.print(table)


@connections_app.command("test")
def connections_test(
    name: Annotated[str, typer.Argument(help="connection name from queryforge.yaml")],
    workspace: WorkspaceOpt = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="exit 1 when the role is more powerful than the connection needs")
    ] = False,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Connect once and report what answered, and what the database role may do beyond the
    connection's purpose (PostgreSQL, MySQL/MariaDB). Exit 0 (1 with --strict and any such
    power), or the failure and its class (exit 2 or 3)."""
    with handled(as_json, debug), open_workspace(workspace) as ws:
        result = ws.connection_test(name)
        if as_json:
            render.print_json(result)
        else:
            render.out.print(f"{name}: ok, {result['detail']} ({result['seconds'] * 1000:.0f} ms)")
            for f in result["privileges"]:
                style = "bold red" if f["severity"] == "danger" else "yellow"
                line = f"  {f['severity']}: {f['message']}. Fix: {f['fix']}"
                render.out.print(line, style=style, markup=False, highlight=False, soft_wrap=True)
            if result["privileges_checked"] and not result["privileges"]:
                render.out.print("  privileges: no more than the connection needs")
        if strict and result["privileges"]:
            raise typer.Exit(1)


@app.command()
def catalog(
    connection: Annotated[
        str | None, typer.Argument(help="one connection (default: all; 'files' is the data folder)")
    ] = None,
    refresh: Annotated[bool, typer.Option("--refresh", help="ignore the cache and introspect again")] = False,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Schemas, tables, columns, types, keys and row estimates of the connections (cached; see --refresh)."""
    with handled(as_json, debug), open_workspace(workspace) as ws:
        entries = ws.catalog(connection, refresh=refresh)
        if as_json:
            render.print_json([e.to_json() for e in entries] if connection is None else entries[0].to_json())
            return
        for entry in entries:
            render.show_catalog(entry)


@app.command()
def gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would be dropped")] = False,
    stale_after: Annotated[
        float, typer.Option(help="seconds after which a run still marked running is taken for dead")
    ] = 6 * 3600,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Drop staging tables left by runs that ended (a crash, a kill); audited runs keep theirs."""
    with handled(as_json, debug), open_workspace(workspace) as ws:
        removed = ws.gc(dry_run=dry_run, stale_after_s=stale_after)
        if as_json:
            render.print_json({"dry_run": dry_run, "removed": removed})
            return
        verb = "would be dropped" if dry_run else "dropped"
        tables = [r for r in removed if "error" not in r]
        for r in removed:
            if "error" in r:
                render.err.print(f"{r['connection']}: skipped, {r['error']}", soft_wrap=True)
            else:
                render.out.print(f"{r['connection']}: {r['table']} (run {r['run_id']}, {r['run_status']})")
        render.out.print(f"{len(tables)} staging table{'s' if len(tables) != 1 else ''} {verb}.")


@app.command()
def schema(debug: DebugOpt = False) -> None:
    """Print the JSON Schema of pipeline files (for editors and LLM structured output)."""
    with handled(True, debug):
        render.print_json(json_schema())


from . import docs as _docs  # noqa: E402,F401 -- registers the docs commands
from . import queue as _queue  # noqa: E402,F401 -- registers the queue commands


def main() -> None:
    app()


if __name__ == "__main__":
    main()
