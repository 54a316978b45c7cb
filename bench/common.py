"""Helpers shared by the benchmarks: the data cache, timing statistics, fresh workspaces, profiling."""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from queryforge.config import Settings
from queryforge.workspace import Workspace

BENCH_DIR = Path(__file__).resolve().parent
DATA_DIR = BENCH_DIR / ".data"  # gitignored: cached inputs, scratch workspaces, profiles
WORK_DIR = DATA_DIR / "work"
PROFILE_DIR = DATA_DIR / "profiles"

T = TypeVar("T")


def log(message: str) -> None:
    """Progress goes to stderr so that `--json` keeps stdout machine-readable."""
    print(message, file=sys.stderr, flush=True)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], pct: float) -> float:
    """Linear-interpolated percentile (the 'inclusive' method numpy uses by default)."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(pct) - 1]


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


@dataclass(frozen=True)
class Clock:
    """Wall time and this process's CPU time (all threads, so DuckDB's workers count too).

    CPU seconds are a cross-check for a shared machine: other processes' load inflates wall time
    much more than it inflates the CPU time our own work needs.
    """

    wall: float
    cpu: float

    @classmethod
    def now(cls) -> Clock:
        return cls(time.perf_counter(), time.process_time())

    def since(self, start: Clock) -> Clock:
        return Clock(self.wall - start.wall, self.cpu - start.cpu)


def fmt_load(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def sql_str(value: str) -> str:
    """A SQL string literal (the values are our own file paths; this only doubles quotes)."""
    return "'" + value.replace("'", "''") + "'"


def human_rows(rows: int) -> str:
    if rows >= 1_000_000 and rows % 1_000_000 == 0:
        return f"{rows // 1_000_000}M"
    if rows >= 1_000 and rows % 1_000 == 0:
        return f"{rows // 1_000}k"
    return str(rows)


def cached(path: Path, build: Callable[[Path], None]) -> Path:
    """`path`, built by `build(tmp)` and renamed into place only when missing (no half-written caches)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.building")
    if tmp.is_dir():
        shutil.rmtree(tmp)
    else:
        tmp.unlink(missing_ok=True)
    build(tmp)
    os.replace(tmp, path)
    return path


def fresh_workspace(name: str) -> Workspace:
    """A new bare workspace under bench/.data/work/<name> with SQLite metadata (env overrides ignored)."""
    root = WORK_DIR / name
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    return Workspace.init(root, bare=True, settings=Settings(database_url=None, workspace=None))


def clear_run_dirs(ws: Workspace) -> None:
    """Remove the per-run work areas (work.duckdb files) so repetitions start from the same disk state."""
    runs = ws.state / "runs"
    if runs.is_dir():
        shutil.rmtree(runs)


def remove_duckdb_file(path: Path) -> None:
    for candidate in (path, path.with_name(path.name + ".wal")):
        candidate.unlink(missing_ok=True)


def warm_file_cache(path: Path) -> None:
    """Read a file once so the first timed repetition does not pay for a cold page cache alone."""
    with path.open("rb") as handle:
        while handle.read(16 * 1024 * 1024):
            pass


def profile_call(name: str, fn: Callable[[], Any], top: int = 30) -> str:
    """Run `fn` under cProfile, save bench/.data/profiles/<name>.prof and return the top functions."""
    PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        fn()
    finally:
        profiler.disable()
    target = PROFILE_DIR / f"{name}.prof"
    profiler.dump_stats(str(target))
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return f"profile saved to {target}\n{out.getvalue()}"


@dataclass
class Outcome:
    """What one benchmark reports: one summary line for the final table, plus every figure measured."""

    name: str
    line: str
    figures: dict[str, Any] = field(default_factory=dict)
    details: list[str] = field(default_factory=list)
    meets_goal: bool | None = None
