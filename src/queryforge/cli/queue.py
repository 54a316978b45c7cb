"""Commands of the durable queue: submit, worker, resume/retry/cancel, dlq, schedules, backfills."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import threading
from datetime import timedelta
from typing import Annotated, Any

import typer

from ..errors import UserError
from ..runs.executor import RunOutcome
from ..runs.triggers import split_range
from ..workspace import Submitted, Workspace, collect_after_crash, worker_slot
from . import render
from .app import (
    DebugOpt,
    JsonOpt,
    ParamOpt,
    WorkspaceOpt,
    app,
    finish,
    handled,
    open_workspace,
    parse_params,
    runs_app,
)

dlq_app = typer.Typer(
    help="Runs that need a person: list and re-queue dead-lettered runs.", no_args_is_help=True
)
app.add_typer(dlq_app, name="dlq")
schedules_app = typer.Typer(
    help="Cron schedules of pipelines (time zones, DST, catch-up).", no_args_is_help=True
)
app.add_typer(schedules_app, name="schedules")
backfills_app = typer.Typer(help="Follow and cancel backfills.", no_args_is_help=True)
app.add_typer(backfills_app, name="backfills")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if match is None:
        raise UserError(
            f"Cannot read the duration '{text}'", hint="write a number and a unit: 30m, 12h, 7d, 2w"
        )
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def say_submitted(s: Submitted, as_json: bool) -> None:
    if as_json:
        render.print_json(dataclasses.asdict(s))
        return
    where = f", position {s.position} in the queue" if s.position else ""
    if s.created:
        render.out.print(
            f"Run {s.run_id} {s.status}{where}. Follow it with: queryforge runs events {s.run_id} -f"
        )
    else:
        render.out.print(
            f"Run {s.run_id} was already submitted with this key ({s.status}{where}); "
            "nothing new was queued. "
            "Use --force for a new run."
        )


@app.command()
def submit(
    pipeline: Annotated[str, typer.Argument(help="pipeline file or name")],
    param: ParamOpt = None,
    sandbox: Annotated[
        bool, typer.Option("--sandbox", help="write and audit only; production untouched")
    ] = False,
    key: Annotated[
        str | None,
        typer.Option("--key", help="idempotency key (default: derived from the pipeline version and params)"),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="queue a new run even if the same one exists")
    ] = False,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Validate a pipeline and queue a run; prints its id at once (a worker runs it)."""
    with handled(as_json, debug), open_workspace(workspace) as ws:
        say_submitted(
            ws.submit(pipeline, parse_params(param), sandbox=sandbox, idempotency_key=key, force=force),
            as_json,
        )


@app.command()
def worker(
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, help="runs at once (processes)")
    ] = 1,
    drain: Annotated[
        bool,
        typer.Option(
            "--drain",
            help="exit once no run is left to take: queued runs, runs in a retry backoff and runs "
            "under another worker's lease (resumed here if it runs out) are waited for",
        ),
    ] = False,
    max_runs: Annotated[int | None, typer.Option(help="exit after this many runs (per slot)")] = None,
    in_process: Annotated[
        bool,
        typer.Option(
            "--in-process",
            help="run the slots as threads of this process (embedded pool: no start-up cost; a lost "
            "lease or a hard stop then stops the whole worker)",
        ),
    ] = False,
    workspace: WorkspaceOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Claim queued runs and execute them in N slot processes (or threads); resumes runs whose worker
    died. Stop with Ctrl-C (the current runs finish first; a second Ctrl-C stops at once)."""
    with handled(False, debug), open_workspace(workspace) as ws:
        logging.getLogger("queryforge").setLevel(logging.DEBUG if debug else logging.INFO)
        root = str(ws.root)
        settings = ws.settings.model_dump()
        render.err.print(
            f"worker: {concurrency} slot{'s' if concurrency > 1 else ''} "
            f"({'threads' if in_process else 'processes'}) on {ws.store.url} "
            f"(org limit {ws.settings.org_concurrency}, lease {ws.settings.lease_s:g} s)"
        )
        if in_process:
            from ..runs.worker import ThreadPool

            for handler in logging.getLogger().handlers:  # as the slot processes log (slot_main)
                handler.setFormatter(logging.Formatter("%(asctime)s %(threadName)s %(message)s"))

            threads = ThreadPool(
                [ws.worker_slot(i) for i in range(concurrency)], drain=drain, max_runs=max_runs
            )
            try:
                threads.run()
            except KeyboardInterrupt:
                render.err.print("stopping after the current runs")
                threads.stop.set()
            return
    from ..runs.worker import Pool

    pool = Pool(
        worker_slot,
        (root, settings),
        concurrency,
        drain=drain,
        max_runs=max_runs,
        on_slot_died=lambda code: collect_after_crash(root, settings),
    )
    try:
        pool.run()
    except KeyboardInterrupt:
        render.err.print("stopping after the current runs (Ctrl-C again to stop at once)")
        pool.stop.set()


def _resumed(ws: Workspace, result: RunOutcome | Submitted, as_json: bool) -> None:
    if isinstance(result, Submitted):
        say_submitted(result, as_json)
    else:
        finish(ws, result, as_json)


@runs_app.command("resume")
def runs_resume(
    run_id: Annotated[str, typer.Argument(help="run id or unique prefix")],
    param: ParamOpt = None,
    pipeline: Annotated[
        str | None,
        typer.Option("--pipeline", help="an edited pipeline file: reuse the steps it left unchanged"),
    ] = None,
    queue: Annotated[
        bool, typer.Option("--queue", help="hand it to a worker instead of running it here")
    ] = False,
    skip: Annotated[
        list[str] | None,
        typer.Option(
            "--skip",
            help="skip_and_continue: leave out this unfinished step and everything that depends on "
            "it; the other branches run and publish (repeatable; not checks)",
        ),
    ] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Continue a failed, cancelled, dead-lettered or abandoned run from its first unfinished step,
    reusing the outputs of finished steps. With --param or --pipeline: a new run of the edited
    version that reuses every step whose spec and inputs are unchanged. With --skip: the run goes on
    without that step and what depends on it."""
    with handled(as_json, debug), open_workspace(workspace) as ws:
        reporter = None if as_json or not render.err.is_terminal else render.LiveReporter()
        result = ws.resume(
            run_id,
            params=parse_params(param),
            pipeline=pipeline,
            queue=queue,
            skip=skip,
            reporter=reporter,
        )
        _resumed(ws, result, as_json)


@runs_app.command("retry")
def runs_retry(
    run_id: Annotated[str, typer.Argument(help="run id or unique prefix")],
    queue: Annotated[
        bool, typer.Option("--queue", help="hand it to a worker instead of running it here")
    ] = False,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Run a failed run's failed step again (and what follows it); finished steps are reused."""
    with handled(as_json, debug), open_workspace(workspace) as ws:
        reporter = None if as_json or not render.err.is_terminal else render.LiveReporter()
        _resumed(ws, ws.resume(run_id, retry=True, queue=queue, reporter=reporter), as_json)


@runs_app.command("cancel")
def runs_cancel(
    run_id: Annotated[str, typer.Argument(help="run id or unique prefix")],
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Cancel a queued run, or stop a running one between steps (killed after QUERYFORGE_CANCEL_GRACE_S)."""
    with handled(as_json, debug), open_workspace(workspace) as ws:
        state = ws.cancel(run_id)
        run = ws.get_run(run_id)
        if as_json:
            render.print_json({"run_id": run.id, "status": state})
        elif state == "cancelled":
            render.out.print(f"Run {run.id} cancelled; nothing was published.")
        else:
            render.out.print(
                f"Run {run.id} is stopping: its worker stops it before the next step "
                f"(or within {ws.settings.cancel_grace_s:g} s). "
                "Staged data is dropped; production is untouched."
            )


@runs_app.command("events")
def runs_events(
    run_id: Annotated[str, typer.Argument(help="run id or unique prefix")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing until the run ends")] = False,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Every state change of a run and its steps, in order (with -f: live, until the run ends);
    --json prints one JSON object per line."""
    with handled(as_json, debug), open_workspace(workspace) as ws:
        for event in ws.events(run_id, follow=follow):
            if as_json:  # JSON Lines: one event per line, flushed, so a script can follow live
                print(json.dumps(render.to_jsonable(event)), flush=True)
                continue
            what = f"step {event['step_id']}" if event["step_id"] else "run"
            detail = f"  {event['detail']}" if event["detail"] else ""
            render.out.print(f"{event['ts']:%H:%M:%S.%f}"[:-3] + f"  {what:<24} {event['status']}{detail}")


# ---------------------------------------------------------------- dead-letter queue


@dlq_app.command("list")
def dlq_list(
    since: Annotated[
        str | None, typer.Option(help="only runs dead-lettered within this long: 12h, 7d")
    ] = None,
    pipeline: Annotated[str | None, typer.Option(help="only runs of this pipeline")] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Dead-lettered runs of this org: their error, attempts and lost leases (their full step
    history stays: queryforge runs show ID)."""
    with handled(as_json, debug), open_workspace(workspace) as ws:
        entries = ws.dead_letters(since=parse_duration(since) if since else None, pipeline=pipeline)
        if as_json:
            render.print_json(entries)
            return
        if not entries:
            render.out.print("The dead-letter queue is empty.")
            return
        for r in entries:
            render.out.print(
                f"{r['id']}  {r['pipeline_name']} v{r['version']}  {r['error_class'] or ''}  "
                f"failed step {', '.join(r['failed_steps']) or '-'}  attempts {r['attempt']}, "
                f"lost leases {r['lost_leases']}  params {r['params']}  input {r['input_hash'][:12]}\n"
                f"  {r['error_message'] or ''}",
                soft_wrap=True,
            )


@dlq_app.command("requeue")
def dlq_requeue(
    run_id: Annotated[str, typer.Argument(help="run id or unique prefix")],
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Put a dead-lettered run back in the queue (audited); a worker resumes it where it stopped."""
    with handled(as_json, debug), open_workspace(workspace) as ws:
        say_submitted(ws.requeue_dead_letter(run_id), as_json)


# ---------------------------------------------------------------- schedules


@schedules_app.command("add")
def schedules_add(
    pipeline: Annotated[str, typer.Argument(help="pipeline name or file")],
    cron: Annotated[str, typer.Option(help="five-field cron expression, e.g. '0 6 * * *'")],
    tz: Annotated[
        str, typer.Option("--tz", help="time zone the cron is read in, e.g. Europe/Berlin")
    ] = "UTC",
    name: Annotated[str | None, typer.Option(help="schedule name (default: the pipeline's name)")] = None,
    param: ParamOpt = None,
    catch_up: Annotated[
        str, typer.Option(help="after downtime: none (skip missed ticks), latest (run the newest), all")
    ] = "latest",
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Run a pipeline on a cron schedule (run `queryforge scheduler` and a worker)."""
    with handled(as_json, debug), open_workspace(workspace) as ws:
        info = ws.add_schedule(pipeline, cron, tz, name=name, params=parse_params(param), catch_up=catch_up)
        if as_json:
            render.print_json(info)
            return
        render.out.print(f"Schedule {info['name']}: {cron} ({tz}); next runs: " + ", ".join(info["next"][:3]))


@schedules_app.command("list")
def schedules_list(
    count: Annotated[int, typer.Option("--next", help="how many next fire times to show")] = 3,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Schedules with their next fire times (in their own time zone)."""
    with handled(as_json, debug), open_workspace(workspace) as ws:
        items = ws.schedules(count)
        if as_json:
            render.print_json(items)
            return
        if not items:
            render.out.print(
                "No schedules. Add one with: queryforge schedules add PIPELINE --cron '0 6 * * *'"
            )
        for s in items:
            state = "paused" if s["paused"] else "next " + ", ".join(s["next"])
            render.out.print(
                f"{s['name']}  {s['pipeline']}  {s['cron']} "
                f"({s['timezone']}, catch-up {s['catch_up']})  {state}"
            )


def _schedule_command(action: str) -> Any:
    def command(
        name: Annotated[str, typer.Argument(help="schedule name")],
        workspace: WorkspaceOpt = None,
        as_json: JsonOpt = False,
        debug: DebugOpt = False,
    ) -> None:
        with handled(as_json, debug), open_workspace(workspace) as ws:
            info = ws.change_schedule(name, action)
            if as_json:
                render.print_json(info)
            else:
                render.out.print(f"Schedule {name} {action}d.")

    command.__doc__ = {
        "pause": "Stop firing a schedule (ticks missed while paused never fire).",
        "resume": "Fire a paused schedule again from its next tick.",
        "remove": "Delete a schedule (its runs stay).",
    }[action]
    return command


for _action in ("pause", "resume", "remove"):
    schedules_app.command(_action)(_schedule_command(_action))


@app.command()
def scheduler(
    interval: Annotated[float, typer.Option(help="seconds between passes")] = 1.0,
    once: Annotated[bool, typer.Option("--once", help="one pass, then exit")] = False,
    workspace: WorkspaceOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Fire due schedules (queue their runs). Safe to run twice: each tick fires exactly once."""
    with handled(False, debug), open_workspace(workspace) as ws:
        logging.getLogger("queryforge").setLevel(logging.DEBUG if debug else logging.INFO)
        if once:
            for firing in ws.scheduler().tick():
                render.out.print(
                    f"{firing.schedule}: tick {firing.tick:%Y-%m-%d %H:%M} UTC -> run {firing.run_id}"
                )
            return
        stop = threading.Event()
        try:
            ws.scheduler().run_forever(stop, interval)
        except KeyboardInterrupt:
            stop.set()


# ---------------------------------------------------------------- backfills


def run_counts(info: dict[str, Any]) -> str:
    return ", ".join(f"{n} {status}" for status, n in sorted(info["counts"].items()))


def show_backfill(info: dict[str, Any], as_json: bool) -> None:
    if as_json:
        render.print_json(info)
        return
    render.out.print(
        f"Backfill {info['id']} of {info['pipeline']} over {info['param']} ({len(info['values'])} values, "
        f"{info['status']}): {run_counts(info)}"
    )
    for item in info["runs"]:
        where = f" (position {item['position']})" if item["position"] else ""
        render.out.print(f"  {item['value']:<12} {item['status']}{where}  {item['run_id'] or ''}")


@app.command()
def backfill(
    pipeline: Annotated[str, typer.Argument(help="pipeline file or name")],
    param: ParamOpt = None,
    only: Annotated[
        str | None, typer.Option(help="failed,missing: only values whose newest run failed or that never ran")
    ] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Queue one run per value of a parameter (--param day=2026-01-01..2026-01-31), all pinned to
    the pipeline's current version and run under the concurrency limits."""
    with handled(as_json, debug), open_workspace(workspace) as ws:
        name, values, fixed = split_range(parse_params(param))
        wanted = {w.strip() for w in only.split(",")} if only else None
        if wanted and not wanted <= {"failed", "missing"}:
            raise UserError(f"Cannot read --only {only}", hint="write --only failed, --only missing or both")
        show_backfill(ws.backfill(pipeline, name, values, fixed, only=wanted), as_json)


@backfills_app.command("list")
def backfills_list(workspace: WorkspaceOpt = None, as_json: JsonOpt = False, debug: DebugOpt = False) -> None:
    """Backfills, newest first, with the state of their runs."""
    with handled(as_json, debug), open_workspace(workspace) as ws:
        items = ws.backfills()
        if as_json:
            render.print_json(items)
            return
        for info in items:
            render.out.print(
                f"{info['id']}  {info['pipeline']}  {info['param']}  {info['status']}  {run_counts(info)}"
            )


@backfills_app.command("show")
def backfills_show(
    backfill_id: Annotated[str, typer.Argument(help="backfill id")],
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Progress per value: queued (with position), running, succeeded, failed."""
    with handled(as_json, debug), open_workspace(workspace) as ws:
        show_backfill(ws.backfill_status(backfill_id), as_json)


@backfills_app.command("cancel")
def backfills_cancel(
    backfill_id: Annotated[str, typer.Argument(help="backfill id")],
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Cancel every queued or running run of a backfill."""
    with handled(as_json, debug), open_workspace(workspace) as ws:
        show_backfill(ws.cancel_backfill(backfill_id), as_json)
