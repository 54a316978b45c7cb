"""Terminal rendering: the live progress reporter, run tables and the one error renderer."""

from __future__ import annotations

import json
import re
import secrets
import time
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from ..catalog import CatalogEntry
from ..errors import QueryForgeError
from ..planner.draft import PlannerQuestion
from ..secrets import scrub, scrub_data

out = Console()
err = Console(stderr=True)

__all__ = ["Syntax", "Table"]

STATUS_STYLE = {
    "succeeded": "green",
    "audited": "cyan",
    "failed": "red",
    "running": "yellow",
    "warn": "yellow",
    "queued": "dim",
    "pending": "dim",
    "cancelled": "magenta",
    "dead_lettered": "bold red",
    "reused": "cyan",
    "skipped": "dim",
}


# A Decimal travels through json.dumps as a string carrying this per-process token, which is then
# replaced by the number's own digits: JSON numbers keep every digit a DECIMAL column has (a float
# would round 55909065222.827692 to 55909065222.82769). The random part keeps data from forging it.
_DECIMAL = f"\x00decimal-{secrets.token_hex(8)}:"
_DECIMAL_JSON = re.compile(re.escape(json.dumps(_DECIMAL)[:-1]) + r'(-?[0-9.]+(?:E[-+]?[0-9]+)?)"')


def to_jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return _DECIMAL + str(value) if value.is_finite() else str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


def staged_line(mode: str, rows: int, diff: dict[str, int]) -> str:
    """What a staged load will change: its rows and diff, or for a view, the rows it shows (a view
    inserts and updates nothing)."""
    if mode == "view":
        return f"{rows:,} rows shown by the view; no data copied"
    return (
        f"{rows:,} rows; diff +{diff.get('added', 0)} added, -{diff.get('removed', 0)} removed, "
        f"~{diff.get('changed', 0)} changed"
    )


def print_json(value: Any) -> None:
    """JSON on stdout, with every remembered secret masked."""
    text = json.dumps(scrub_data(to_jsonable(value)), indent=2, default=str)
    print(_DECIMAL_JSON.sub(r"\1", text))


def render_error(exc: QueryForgeError, *, as_json: bool) -> None:
    """One paragraph: what, where, hint -- or one JSON object on stdout with --json."""
    if as_json:
        print_json(
            {
                "error": {
                    "type": type(exc).__name__,
                    "class": exc.failure_class.value,
                    "message": exc.message,
                    "where": exc.where,
                    "hint": exc.hint,
                    "exit_code": exc.exit_code,
                    "run_id": getattr(exc, "run_id", None),
                }
            }
        )
        return
    text = Text("Error: ", style="bold red")
    text.append(scrub(exc.message))
    if exc.where:
        text.append(f" ({exc.where})", style="dim")
    if not exc.message.endswith("."):
        text.append(".")
    if exc.hint:
        text.append(" Hint: ", style="bold")
        text.append(scrub(exc.hint))
    err.print(text, soft_wrap=True)


def ask_question(question: PlannerQuestion) -> None:
    """A clarifying question (or a refusal) from the planner, with the readings it considered."""
    label = "Refused: " if question.refusal else "Question: "
    text = Text(label, style="bold yellow")
    text.append(scrub(question.message))
    err.print(text, soft_wrap=True)
    for candidate in question.candidates:
        err.print(Text("  - " + scrub(candidate)), soft_wrap=True)
    if question.hint:
        hint = Text("Hint: ", style="bold")
        hint.append(scrub(question.hint))
        err.print(hint, soft_wrap=True)
    err.print("Nothing was drafted or run. Rephrase the request and ask again.")


class LiveReporter:
    """A live table of steps with status, rows and time, updated as the run goes."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or err
        self.rows: dict[str, dict[str, Any]] = {}
        self.live: Live | None = None
        self.run_id = ""
        self.pipeline = ""

    def _table(self) -> Group:
        table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
        for name, justify in (
            ("step", "left"),
            ("kind", "left"),
            ("status", "left"),
            ("rows", "right"),
            ("time", "right"),
            ("", "left"),
        ):
            table.add_column(name, justify=justify)  # type: ignore[arg-type]
        for step_id, row in self.rows.items():
            status = row["status"]
            elapsed = row.get("seconds")
            if status == "running":
                elapsed = time.perf_counter() - row["started"]
            table.add_row(
                step_id,
                row["kind"],
                Text(status, style=STATUS_STYLE.get(status, "")),
                "" if row.get("rows") is None else f"{row['rows']:,}",
                "" if elapsed is None else f"{elapsed:.2f}s",
                row.get("detail") or "",
            )
        title = Text(f"run {self.run_id} · {self.pipeline}", style="bold")
        return Group(title, table)

    def run_started(self, run_id: str, pipeline: str, steps: list[tuple[str, str]]) -> None:
        self.run_id, self.pipeline = run_id, pipeline
        self.rows = {s: {"kind": k, "status": "pending"} for s, k in steps}
        self.live = Live(
            self._table(),
            console=self.console,
            refresh_per_second=8,
            get_renderable=self._table,
            transient=False,
        )
        self.live.start()

    def step_started(self, step_id: str, kind: str) -> None:
        self.rows.setdefault(step_id, {"kind": kind})
        self.rows[step_id].update(status="running", started=time.perf_counter())

    def step_finished(
        self, step_id: str, status: str, rows: int | None, seconds: float, detail: str | None = None
    ) -> None:
        self.rows.setdefault(step_id, {"kind": ""})
        self.rows[step_id].update(status=status, rows=rows, seconds=seconds, detail=detail)

    def run_finished(self, run_id: str, status: str) -> None:
        if self.live is not None:
            self.live.update(self._table())
            self.live.stop()
            self.live = None


def runs_table(runs: list[Any], positions: dict[str, int] | None = None) -> Table:
    """Runs as a table; queued runs show their place in the queue (1 = claimed next)."""
    table = Table(show_header=True, header_style="bold", box=None)
    for name in ("run", "pipeline", "mode", "status", "queue", "created", "duration"):
        table.add_column(name)
    positions = positions or {}
    for r in runs:
        duration = ""
        if r.started_at and r.ended_at:
            duration = f"{(r.ended_at - r.started_at).total_seconds():.2f}s"
        table.add_row(
            r.id,
            f"{r.pipeline_name} v{r.version}",
            r.mode,
            Text(r.status, style=STATUS_STYLE.get(r.status, "")),
            str(positions.get(r.id, "")),
            r.created_at.strftime("%Y-%m-%d %H:%M:%S") if r.created_at else "",
            duration,
        )
    return table


def run_detail(detail: dict[str, Any]) -> None:
    run = detail["run"]
    out.print(
        Text(f"Run {run['id']}", style="bold"),
        f"· {run['pipeline_name']} v{run['version']} · {run['mode']} ·",
        *([f"engine {run['result']['engine']} ·"] if (run.get("result") or {}).get("engine") else []),
        Text(run["status"], style=STATUS_STYLE.get(run["status"], "")),
    )
    if run.get("params"):
        out.print("params:", ", ".join(f"{k}={v}" for k, v in run["params"].items()))
    if run.get("error_message"):
        out.print(Text(f"{run['error_class']}: {run['error_message']}", style="red"), soft_wrap=True)
    stream = run.get("result") if run.get("trigger") == "stream" else None
    if stream:
        lag = stream.get("lag")
        out.print(
            f"stream {stream.get('stream')}: batch {stream.get('last_batch')} · "
            f"{stream.get('rows', 0):,} rows in {stream.get('batches', 0)} batches · "
            f"{stream.get('rows_per_s', 0):,} rows/s · "
            f"lag {'?' if lag is None else lag} · quarantined batches {stream.get('quarantined_batches', 0)}",
            highlight=False,
        )
        if stream.get("last_error"):
            out.print(Text(f"last error: {stream['last_error']}", style="yellow"), soft_wrap=True)
    steps = Table(title="Steps", title_justify="left", header_style="bold", box=None)
    for name in ("step", "kind", "status", "rows in", "rows out", "time", "note"):
        steps.add_column(name)
    for s in detail["steps"]:
        steps.add_row(
            s["step_id"],
            s["kind"],
            Text(s["status"], style=STATUS_STYLE.get(s["status"], "")),
            "" if s["rows_in"] is None else f"{s['rows_in']:,}",
            "" if s["rows_out"] is None else f"{s['rows_out']:,}",
            "" if s["duration_ms"] is None else f"{s['duration_ms'] / 1000:.2f}s",
            (s["message"] or "")[:80],
        )
    out.print(steps)
    if detail["checks"]:
        checks = Table(title="Checks", title_justify="left", header_style="bold", box=None)
        for name in ("check", "rule", "severity", "result", "violations", "sample"):
            checks.add_column(name)
        for c in detail["checks"]:
            result = (
                Text("pass", style="green")
                if c["passed"]
                else Text(
                    "FAIL" if c["severity"] == "error" else "warn",
                    style="red" if c["severity"] == "error" else "yellow",
                )
            )
            sample = json.dumps(to_jsonable(c["samples"][0]), default=str)[:60] if c["samples"] else ""
            checks.add_row(c["step_id"], c["rule_name"], c["severity"], result, str(c["violations"]), sample)
        out.print(checks)
    for staged in detail["staged"]:
        out.print(
            Text(
                f"Staged for {staged['target']['connection']}.{staged['target']['table']} "
                f"({staged['mode']}): {staged_line(staged['mode'], staged['rows'], staged['diff'])}",
                style="bold",
            )
        )
        if staged.get("preview_error"):
            out.print(f"  (no preview: {staged['preview_error']})")
            continue
        preview = Table(header_style="bold")
        for c in staged["columns"]:
            preview.add_column(c)
        for row in staged["preview"]:
            preview.add_row(*["" if v is None else str(v) for v in row.values()])
        out.print(preview)
    for snap in detail["snapshots"]:
        out.print(
            f"snapshot {snap['phase']:6} {snap['connection']}.{snap['table']}: "
            f"{snap['rows']:,} rows, {len(snap['columns'])} columns"
        )


def show_catalog(entry: CatalogEntry) -> None:
    """One connection's tables: a line per table, then its columns with type, nullability and keys."""
    if entry.error:
        err.print(f"[bold]{entry.connection}[/bold]: [red]{entry.error}[/red]", soft_wrap=True)
        return
    age = time.time() - entry.fetched_at
    source = f"cached {age:.0f} s ago" if entry.cache_hit else "introspected now"
    out.print(f"[bold]{entry.connection}[/bold] [dim]({len(entry.tables)} tables, {source})[/dim]")
    for t in entry.tables:
        rows = f"~{t.row_estimate:,} rows" if t.row_estimate is not None else "rows unknown"
        out.print(f"  [bold]{t.qualified}[/bold] [dim]{rows}[/dim]")
        if t.description:
            out.print(f"    [italic]{escape(t.description)}[/italic]")
        fks = dict(t.foreign_keys)
        for c in t.columns:
            notes = []
            if c.name in t.primary_key:
                notes.append("PK")
            if c.name in fks:
                notes.append(f"-> {fks[c.name]}")
            if not c.nullable:
                notes.append("NOT NULL")
            about = f"  {escape(c.description)}" if c.description else ""
            out.print(f"    {c.name:<28} {c.type:<24} [dim]{' '.join(notes)}[/dim]{about}")
