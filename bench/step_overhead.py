"""(b) Per-step orchestration overhead of a long pipeline of trivial steps (SQLite metadata).

Two shapes over one 10-row CSV:

* `chain`  - extract, then alternating `filter` / `derive` steps each reading the previous one, then
  a `load` (replace) into the warehouse: a deep chain of views.
* `fanout` - extract, then `sql` steps that each read the extract: many small tables.

QueryForge side: `Workspace.run`, with a Reporter that timestamps every step. A step's wall time
is the time from the previous step's end to its own end, so it includes the metadata writes
(`start_step` / `finish_step`) around the step, not only the engine call.

Raw side: the very statements QueryForge's engine executes for those steps (taken from
`Workspace.explain`, i.e. the compiled plan), run one by one on a fresh DuckDB file, each timed;
the load is one `CREATE TABLE ... AS SELECT * FROM <input>` in that file.

Overhead per step = QueryForge step wall time - raw time of the same statement. The amortised
figure spreads everything else too (parse, validate, compile, run records, publish) over the steps:
(Workspace.run wall time - raw wall time) / steps.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import yaml

from queryforge.workspace import Workspace

from .common import (
    DATA_DIR,
    WORK_DIR,
    Clock,
    Outcome,
    cached,
    clear_run_dirs,
    fmt_load,
    fresh_workspace,
    load_average,
    log,
    median,
    percentile,
    profile_call,
    remove_duckdb_file,
)

NAME = "step_overhead"
GOAL_MEDIAN_MS = 5.0
GOAL_P95_MS = 10.0
LOAD_TABLE = "chain_result"


def tiny_csv() -> Path:
    def build(tmp: Path) -> None:
        with tmp.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "v", "label"])
            for i in range(1, 11):
                writer.writerow([i, i * 10, f"item{i}"])

    return cached(DATA_DIR / "tiny.csv", build)


# ---------------------------------------------------------------- pipeline shapes


def chain_spec(source: Path, steps: int) -> dict[str, Any]:
    """extract + (steps - 2) alternating filter/derive + load = `steps` steps."""
    spec: list[dict[str, Any]] = [{"id": "s000", "extract": {"path": str(source)}}]
    previous = "s000"
    for i in range(1, steps - 1):
        step_id = f"s{i:03d}"
        if i % 2:
            spec.append({"id": step_id, "filter": {"input": previous, "where": f"v >= {i % 7}"}})
        else:
            spec.append({"id": step_id, "derive": {"input": previous, "columns": {"v": "v + 1"}}})
        previous = step_id
    spec.append({"id": "load", "load": {"input": previous, "table": LOAD_TABLE, "mode": "replace"}})
    return {"name": "bench_chain", "steps": spec}


def fanout_spec(source: Path, steps: int) -> dict[str, Any]:
    """extract + (steps - 1) sql steps, each a small SELECT over the extract."""
    spec: list[dict[str, Any]] = [{"id": "src", "extract": {"path": str(source)}}]
    for i in range(1, steps):
        spec.append(
            {
                "id": f"q{i:03d}",
                "sql": f"SELECT id, label, v * {i} AS v FROM src WHERE id % {1 + i % 5} = 0",
            }
        )
    return {"name": "bench_fanout", "steps": spec}


SHAPES = {"chain": chain_spec, "fanout": fanout_spec}


# ---------------------------------------------------------------- measuring QueryForge


@dataclass
class StepClock:
    """A Reporter that timestamps the run and every step with perf_counter."""

    run_start: float = 0.0
    run_end: float = 0.0
    finished: list[tuple[str, float, float]] = field(default_factory=list)  # (step, at, visit seconds)

    def run_started(self, run_id: str, pipeline: str, steps: list[tuple[str, str]]) -> None:
        self.run_start = time.perf_counter()

    def step_started(self, step_id: str, kind: str) -> None:
        pass

    def step_finished(
        self, step_id: str, status: str, rows: int | None, seconds: float, detail: str | None = None
    ) -> None:
        self.finished.append((step_id, time.perf_counter(), seconds))

    def run_finished(self, run_id: str, status: str) -> None:
        self.run_end = time.perf_counter()

    def walls(self) -> dict[str, float]:
        """Step id -> seconds since the previous step ended (the first: since the run started)."""
        out: dict[str, float] = {}
        previous = self.run_start
        for step_id, at, _ in self.finished:
            out[step_id] = at - previous
            previous = at
        return out

    def visits(self) -> dict[str, float]:
        return {step_id: seconds for step_id, _, seconds in self.finished}


@dataclass
class QfRun:
    total: float
    cpu: float
    setup: float  # Workspace.run start -> run_started: bind, validate/compile, run records
    teardown: float  # run_finished -> Workspace.run returns
    walls: dict[str, float]
    visits: dict[str, float]
    recorded: dict[str, float]  # run_steps.duration_ms


def run_queryforge(ws: Workspace, pipeline: Path) -> QfRun:
    clear_run_dirs(ws)
    clock = StepClock()
    start = Clock.now()
    outcome = ws.run(str(pipeline), reporter=clock)
    spent = Clock.now().since(start)
    started, ended = start.wall, start.wall + spent.wall
    if outcome.status != "succeeded":
        raise RuntimeError(f"QueryForge run {outcome.run_id} ended {outcome.status}: {outcome.error}")
    recorded = {s.step_id: (s.duration_ms or 0.0) / 1000 for s in ws.repo.list_steps(outcome.run_id)}
    return QfRun(
        total=spent.wall,
        cpu=spent.cpu,
        setup=clock.run_start - started,
        teardown=ended - clock.run_end,
        walls=clock.walls(),
        visits=clock.visits(),
        recorded=recorded,
    )


# ---------------------------------------------------------------- the raw baseline


def raw_statements(ws: Workspace, pipeline: Path) -> list[tuple[str, str]]:
    """(step id, SQL) for every stage, from the compiled plan QueryForge itself would execute."""
    out: list[tuple[str, str]] = []
    for stage in ws.explain(str(pipeline)):
        step, kind, detail = stage["step"], stage["stage"], stage["detail"]
        if kind in ("extract", "transform"):
            what, _, query = detail.partition(" ")
            if what not in ("TABLE", "VIEW"):
                raise RuntimeError(f"unexpected explain output for step {step!r}: {detail[:80]}")
            out.append((step, f'CREATE OR REPLACE {what} "{step}" AS {query}'))
        elif kind == "stageload":
            # The hand-written equivalent of load (replace): a table in the same DuckDB file.
            source = step_input(pipeline, step)
            out.append((step, f'CREATE OR REPLACE TABLE "{LOAD_TABLE}" AS SELECT * FROM "{source}"'))
        elif kind == "publish":
            out.append((step, ""))  # nothing to do: the raw load already wrote the final table
        else:
            raise RuntimeError(f"no raw equivalent for a {kind} stage ({step})")
    return out


def step_input(pipeline: Path, step_id: str) -> str:
    spec = yaml.safe_load(pipeline.read_text())
    for step in spec["steps"]:
        if step["id"] == step_id:
            return str(step["load"]["input"])
    raise KeyError(step_id)


def run_raw(path: Path, statements: list[tuple[str, str]]) -> tuple[Clock, dict[str, float]]:
    """Total wall and CPU time (connect .. close) and wall seconds per statement."""
    remove_duckdb_file(path)
    per_step: dict[str, float] = {}
    start = Clock.now()
    con = duckdb.connect(str(path))
    try:
        con.execute("SET preserve_insertion_order = false")
        for step, sql in statements:
            t0 = time.perf_counter()
            if sql:
                con.execute(sql)
            per_step[step] = time.perf_counter() - t0
    finally:
        con.close()
    return Clock.now().since(start), per_step


# ---------------------------------------------------------------- one shape


def run_shape(shape: str, steps: int, repeat: int, profile: bool) -> Outcome:
    label = f"{NAME}/{shape}"
    ws = fresh_workspace(f"{NAME}_{shape}")
    try:
        pipeline = ws.root / "pipelines" / f"bench_{shape}.yaml"
        pipeline.write_text(yaml.safe_dump(SHAPES[shape](tiny_csv(), steps), sort_keys=False))
        statements = raw_statements(ws, pipeline)
        raw_db = WORK_DIR / f"{NAME}_{shape}_raw.duckdb"

        # One untimed run of each side: imports, first SQLite connection, DuckDB extension loading.
        run_queryforge(ws, pipeline)
        run_raw(raw_db, statements)

        load_before = load_average()
        qf_runs: list[QfRun] = []
        raw_runs: list[tuple[Clock, dict[str, float]]] = []
        for i in range(repeat):
            order = ("queryforge", "raw") if i % 2 == 0 else ("raw", "queryforge")
            for side in order:
                if side == "raw":
                    raw_runs.append(run_raw(raw_db, statements))
                else:
                    qf_runs.append(run_queryforge(ws, pipeline))
            log(
                f"[{label}] rep {i + 1}/{repeat} queryforge {qf_runs[-1].total:.2f}s  "
                f"raw duckdb {raw_runs[-1][0].wall:.2f}s"
            )
        load_after = load_average()
        profile_text = profile_call(f"{NAME}_{shape}", lambda: ws.run(str(pipeline))) if profile else None
    finally:
        ws.close()

    stage_ids = list(qf_runs[0].walls)

    def per_step(values: list[dict[str, float]]) -> dict[str, float]:
        return {s: median([v.get(s, 0.0) for v in values]) for s in stage_ids}

    wall = per_step([r.walls for r in qf_runs])
    visit = per_step([r.visits for r in qf_runs])
    recorded = per_step([r.recorded for r in qf_runs])
    raw_step = per_step([r[1] for r in raw_runs])
    overhead_ms = [(wall[s] - raw_step[s]) * 1000 for s in stage_ids]
    bookkeeping_ms = [(wall[s] - visit[s]) * 1000 for s in stage_ids]
    in_visit_ms = [(visit[s] - raw_step[s]) * 1000 for s in stage_ids]
    qf_total = median([r.total for r in qf_runs])
    raw_total = median([r[0].wall for r in raw_runs])
    qf_cpu = median([r.cpu for r in qf_runs])
    raw_cpu = median([r[0].cpu for r in raw_runs])
    amortised_ms = (qf_total - raw_total) / steps * 1000
    amortised_cpu_ms = (qf_cpu - raw_cpu) / steps * 1000
    med, p95 = median(overhead_ms), percentile(overhead_ms, 95)
    meets = med < GOAL_MEDIAN_MS and p95 < GOAL_P95_MS
    worst = sorted(zip(overhead_ms, stage_ids, strict=True), reverse=True)[:3]

    line = (
        f"{label:<26} {steps} steps  queryforge {qf_total:.2f}s  raw duckdb {raw_total:.2f}s  "
        f"overhead/step median {med:.1f} ms  p95 {p95:.1f} ms  "
        f"amortised {amortised_ms:.1f} ms (cpu {amortised_cpu_ms:.1f} ms) "
        f"(goal median < {GOAL_MEDIAN_MS:.0f} ms, p95 < {GOAL_P95_MS:.0f} ms: "
        f"{'met' if meets else 'NOT met'})"
    )
    setup = median([r.setup for r in qf_runs])
    teardown = median([r.teardown for r in qf_runs])
    details = [
        f"{label}: Workspace.run {qf_total * 1000:.0f} ms = setup before the first step (bind, compile, "
        f"run records) {setup * 1000:.0f} ms + {len(stage_ids)} stages {sum(wall.values()) * 1000:.0f} ms "
        f"+ teardown {teardown * 1000:.0f} ms; raw statements (sum of per-statement medians) "
        f"{sum(raw_step.values()) * 1000:.0f} ms "
        f"(raw total incl. connect/close {raw_total * 1000:.0f} ms); CPU seconds median queryforge "
        f"{qf_cpu:.2f}s, raw {raw_cpu:.2f}s -> amortised CPU overhead {amortised_cpu_ms:.1f} ms/step; "
        f"load average {fmt_load(load_before)} -> {fmt_load(load_after)}",
        f"{label}: per stage (median over stages) wall {median(list(wall.values())) * 1000:.2f} ms = "
        f"engine call {median(list(visit.values())) * 1000:.2f} ms + metadata writes "
        f"{median(bookkeeping_ms):.2f} ms; raw SQL {median(list(raw_step.values())) * 1000:.2f} ms; "
        f"extra inside the engine call {median(in_visit_ms):.2f} ms; "
        f"recorded run_steps.duration_ms {median(list(recorded.values())) * 1000:.2f} ms",
        f"{label}: setup per step {setup / steps * 1000:.2f} ms; largest per-step overheads: "
        + ", ".join(f"{s} {o:.1f} ms" for o, s in worst),
    ]
    if profile_text:
        details.append(profile_text)
    return Outcome(
        name=label,
        line=line,
        meets_goal=meets,
        details=details,
        figures={
            "steps": steps,
            "stages_visited": len(stage_ids),
            "repeat": repeat,
            "queryforge_total_s": [r.total for r in qf_runs],
            "raw_total_s": [r[0].wall for r in raw_runs],
            "queryforge_cpu_s": [r.cpu for r in qf_runs],
            "raw_cpu_s": [r[0].cpu for r in raw_runs],
            "overhead_amortised_cpu_ms": amortised_cpu_ms,
            "load_average": [load_before, load_after],
            "queryforge_median_s": qf_total,
            "raw_median_s": raw_total,
            "setup_median_s": setup,
            "teardown_median_s": teardown,
            "overhead_per_step_median_ms": med,
            "overhead_per_step_p95_ms": p95,
            "overhead_amortised_ms": amortised_ms,
            "metadata_writes_per_step_median_ms": median(bookkeeping_ms),
            "recorded_duration_median_ms": median(list(recorded.values())) * 1000,
            "raw_sql_per_step_median_ms": median(list(raw_step.values())) * 1000,
            "overhead_per_stage_ms": dict(zip(stage_ids, overhead_ms, strict=True)),
            "goal_median_ms": GOAL_MEDIAN_MS,
            "goal_p95_ms": GOAL_P95_MS,
        },
    )


def run(steps: int, repeat: int, profile: bool) -> list[Outcome]:
    return [run_shape(shape, steps, repeat, profile) for shape in SHAPES]
