"""`python -m bench`: run every benchmark and print a table of figures and ratios.

    .venv/bin/python -m bench                 # 10M-row pipeline + 200-step overhead, 3 repetitions
    .venv/bin/python -m bench --quick         # 1M rows, 50 steps
    .venv/bin/python -m bench --json          # machine-readable figures on stdout
    .venv/bin/python -m bench --only step_overhead --profile

Nothing here asserts: a missed goal is reported, not failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

import duckdb

from . import (
    pipeline_10m,
    planner,
    postgres_io,
    project,
    queue_throughput,
    spark_engine,
    step_overhead,
    stream_throughput,
)
from .common import Outcome, fmt_load, load_average, log

BENCHMARKS = (
    "pipeline_10m",
    "step_overhead",
    "planner",
    "postgres_io",
    "queue_throughput",
    "spark_engine",
    "stream_throughput",
    "project",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=None, help="orders rows (default 10_000_000; quick 1M)")
    parser.add_argument(
        "--pg-rows",
        type=int,
        default=None,
        help="rows into PostgreSQL (5_000_000; quick 500k)",
    )
    parser.add_argument(
        "--queue-runs",
        type=int,
        default=None,
        help="trivial runs per queue_throughput cell (200 end to end, 500 queue-only; quick 50/125)",
    )
    parser.add_argument(
        "--events", type=int, default=None, help="events drained by stream_throughput (500k; quick 100k)"
    )
    parser.add_argument(
        "--event-rate", type=int, default=50_000, help="events/s offered in the latency run (50,000)"
    )
    parser.add_argument("--steps", type=int, default=None, help="steps per overhead pipeline (200; quick 50)")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions per side (default 3)")
    parser.add_argument("--quick", action="store_true", help="1M rows and 50 steps")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    parser.add_argument("--only", choices=BENCHMARKS, action="append", help="run only this benchmark")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also run QueryForge once more under cProfile (bench/.data/profiles/*.prof)",
    )
    args = parser.parse_args(argv)
    if args.rows is None:
        args.rows = 1_000_000 if args.quick else 10_000_000
    if args.pg_rows is None:
        args.pg_rows = 500_000 if args.quick else 5_000_000
    if args.queue_runs is None:
        args.queue_runs = 50 if args.quick else 200
    if args.steps is None:
        args.steps = 50 if args.quick else 200
    if args.events is None:
        args.events = 100_000 if args.quick else 500_000
    if args.rows < 1 or args.steps < 3 or args.repeat < 1:
        parser.error("--rows must be >= 1, --steps >= 3 and --repeat >= 1")
    return args


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    selected = args.only or list(BENCHMARKS)
    load_before = load_average()
    started = time.perf_counter()
    outcomes: list[Outcome] = []
    if "pipeline_10m" in selected:
        outcomes.append(pipeline_10m.run(args.rows, args.repeat, args.profile))
    if "step_overhead" in selected:
        outcomes.extend(step_overhead.run(args.steps, args.repeat, args.profile))
    if "postgres_io" in selected:
        outcomes.extend(postgres_io.run(args.pg_rows, args.repeat, args.profile))
    if "queue_throughput" in selected:
        outcomes.extend(queue_throughput.run(args.queue_runs, args.queue_runs * 5 // 2, args.profile))
    if "spark_engine" in selected:
        outcomes.append(spark_engine.run(args.rows, args.repeat))
    if "stream_throughput" in selected:
        outcomes.append(stream_throughput.run(args.events, args.event_rate, 20.0))
    if "project" in selected:
        outcomes.extend(project.run(args.repeat, args.quick))
    if "planner" in selected:
        outcomes.extend(planner.run(1 if args.quick else args.repeat, args.profile))
    elapsed = time.perf_counter() - started
    load_after = load_average()

    log("")
    for outcome in outcomes:
        for detail in outcome.details:
            log(detail)
    if args.json:
        json.dump(
            {
                "environment": {**environment(), "load_average": [load_before, load_after]},
                "settings": {"rows": args.rows, "steps": args.steps, "repeat": args.repeat},
                "seconds": elapsed,
                "benchmarks": {o.name: {**o.figures, "meets_goal": o.meets_goal} for o in outcomes},
            },
            sys.stdout,
            indent=2,
        )
        print()
        return 0

    env = environment()
    print()
    print(
        f"QueryForge benchmarks (python {env['python']}, duckdb {env['duckdb']}, {env['cpus']} CPUs, "
        f"{args.repeat} repetitions, medians; {elapsed:.0f}s in all; load average "
        f"{fmt_load(load_before)} -> {fmt_load(load_after)})"
    )
    if max(load_before or 0, load_after or 0) > (env["cpus"] or 1) * 0.75:
        print("note: the machine was busy with other work; wall times are noisy, compare the cpu ratios too")
    for outcome in outcomes:
        print(outcome.line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
