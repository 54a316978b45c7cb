"""Projects (issue 15): validating a 200-pipeline project, and `run --select` over a 50-pipeline chain.

* `project/validate` - a generated project of 200 pipelines of 5 steps each (a `ref` extract, a
  filter, a derive, a check, a load; the first reads a 10-row CSV), every pipeline reading one
  earlier pipeline, validated as a whole (`Workspace.validate_project`: the graph, every pipeline
  compiled once against what its refs will publish). Baseline: the same 1,000 steps created as
  views and described in one raw DuckDB connection. Goal: < 2 s.
* `project/select` - `Workspace.run_selection("+p049")` over a 50-pipeline chain: each a full
  write-audit-publish run (SQLite metadata, the local DuckDB warehouse). Baseline: the same 50
  pipelines run one by one with `Workspace.run` in order (the work without the selection).
  Selection overhead per pipeline = (selection wall - one-by-one wall) / 50. Goal: < 20 ms.
  Also printed: what a whole run costs over the same statements in one raw DuckDB file.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import duckdb

from .common import WORK_DIR, Outcome, fmt_load, fresh_workspace, load_average, log, median

NAME = "project"
GOAL_VALIDATE_S = 2.0
GOAL_SELECT_MS = 20.0
SEED = 15


def pipeline(i: int, upstream: int | None) -> str:
    source = "extract: {path: data/seed.csv}" if upstream is None else f"extract: {{ref: p{upstream:03d}}}"
    return f"""name: p{i:03d}
tags: [{"root" if upstream is None else "derived"}]
steps:
  - id: src
    {source}
  - id: kept
    filter: {{input: src, where: "v >= 0"}}
  - id: more
    derive: {{input: kept, columns: {{w{i}: "v * 2"}}}}
  - id: ok
    check: {{input: more, rules: [{{not_null: [k]}}]}}
  - id: out
    load: {{input: more, table: t{i:03d}}}
"""


def build(root: Path, count: int, chain: bool) -> list[int | None]:
    """Pipelines p000.. under pipelines/; each reads the one before (chain) or a random earlier one."""
    rng = random.Random(SEED)
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "seed.csv").write_text("k,v\n" + "".join(f"{k},{k * 3}\n" for k in range(10)))
    ups: list[int | None] = [None] + [(i - 1 if chain else rng.randrange(i)) for i in range(1, count)]
    for i, up in enumerate(ups):
        (root / "pipelines" / f"p{i:03d}.yaml").write_text(pipeline(i, up))
    return ups


def raw_validate(root: Path, ups: list[int | None]) -> float:
    """Create and describe the same 1,000 steps as views in one DuckDB connection."""
    started = time.perf_counter()
    con = duckdb.connect()
    columns: dict[int, list[str]] = {}
    for i, up in enumerate(ups):
        if up is None:
            con.execute(f"CREATE VIEW src{i} AS SELECT * FROM read_csv('{root / 'data' / 'seed.csv'}')")
        else:
            cols = ", ".join(f"CAST(NULL AS BIGINT) AS {c}" for c in columns[up])
            con.execute(f"CREATE VIEW src{i} AS SELECT {cols} LIMIT 0")
        con.execute(f"CREATE VIEW kept{i} AS SELECT * FROM src{i} WHERE v >= 0")
        con.execute(f"CREATE VIEW more{i} AS SELECT *, v * 2 AS w{i} FROM kept{i}")
        con.execute(f"SELECT count(*) FROM more{i} WHERE k IS NULL").fetchall()
        columns[i] = [r[0] for r in con.execute(f"DESCRIBE more{i}").fetchall()]
    con.close()
    return time.perf_counter() - started


def raw_chain(root: Path, count: int) -> float:
    path = WORK_DIR / "project_raw.duckdb"
    path.unlink(missing_ok=True)
    started = time.perf_counter()
    con = duckdb.connect(str(path))
    con.execute(f"CREATE TABLE t000 AS SELECT *, v * 2 AS w0 FROM read_csv('{root / 'data' / 'seed.csv'}')")
    for i in range(1, count):
        con.execute(f"CREATE TABLE t{i:03d} AS SELECT *, v * 2 AS w{i} FROM t{i - 1:03d} WHERE v >= 0")
        con.execute(f"SELECT count(*) FROM t{i:03d} WHERE k IS NULL").fetchall()
    con.close()
    spent = time.perf_counter() - started
    path.unlink(missing_ok=True)
    return spent


def run_validate(count: int, repeat: int) -> Outcome:
    label = f"{NAME}/validate"
    ws = fresh_workspace("project_validate")
    try:
        ups = build(ws.root, count, chain=False)
        ws.validate_project()  # warm-up: imports, first DuckDB sessions
        load_before = load_average()
        ours = [0.0] * repeat
        for r in range(repeat):
            started = time.perf_counter()
            plans = ws.validate_project().plans
            ours[r] = time.perf_counter() - started
        raw = median([raw_validate(ws.root, ups) for _ in range(repeat)])
        load_after = load_average()
    finally:
        ws.close()
    assert len(plans) == count
    mine = median(ours)
    meets = mine < GOAL_VALIDATE_S
    line = (
        f"{label:28s} {count} pipelines x 5 steps: {mine:.2f} s (goal < {GOAL_VALIDATE_S:.0f} s: "
        f"{'met' if meets else 'MISSED'}); raw DuckDB views {raw:.2f} s; ratio {mine / raw:.1f}x; "
        f"{mine / count * 1000:.1f} ms per pipeline; load {fmt_load(load_before)} -> {fmt_load(load_after)}"
    )
    log(line)
    return Outcome(label, line, {"seconds": mine, "raw_seconds": raw, "pipelines": count}, [], meets)


def one_by_one(count: int) -> float:
    """The same chain as 50 separate `Workspace.run` calls in order: the runs without the selection."""
    ws = fresh_workspace("project_single")
    try:
        build(ws.root, count, chain=True)
        started = time.perf_counter()
        for i in range(count):
            assert ws.run(f"p{i:03d}").error is None, f"run of p{i:03d} failed"
        return time.perf_counter() - started
    finally:
        ws.close()


def run_select(count: int, repeat: int) -> Outcome:
    label = f"{NAME}/select"
    walls: list[float] = []
    singles: list[float] = []
    raws: list[float] = []
    load_before = load_average()
    for _ in range(repeat):
        ws = fresh_workspace("project_select")
        try:
            build(ws.root, count, chain=True)
            started = time.perf_counter()
            done, not_run = ws.run_selection(f"+p{count - 1:03d}")
            walls.append(time.perf_counter() - started)
            assert not not_run and all(o.error is None for _, o in done), "a run of the chain failed"
            raws.append(raw_chain(ws.root, count))
        finally:
            ws.close()
        singles.append(one_by_one(count))
    load_after = load_average()
    mine, single, raw = median(walls), median(singles), median(raws)
    per = (mine - single) / count * 1000
    meets = per < GOAL_SELECT_MS
    line = (
        f"{label:28s} run --select over a {count}-pipeline chain: {mine:.2f} s; the same {count} runs one by "
        f"one {single:.2f} s; selection overhead {per:.1f} ms per pipeline (goal < {GOAL_SELECT_MS:.0f} ms: "
        f"{'met' if meets else 'MISSED'}); a whole write-audit-publish run costs "
        f"{(single - raw) / count * 1000:.0f} ms more than raw DuckDB's {raw / count * 1000:.1f} ms a table; "
        f"load {fmt_load(load_before)} -> {fmt_load(load_after)}"
    )
    log(line)
    return Outcome(
        label,
        line,
        {"seconds": mine, "one_by_one_seconds": single, "raw_seconds": raw, "overhead_ms": per},
        [],
        meets,
    )


def run(repeat: int, quick: bool = False) -> list[Outcome]:
    return [run_validate(50 if quick else 200, repeat), run_select(20 if quick else 50, repeat)]
