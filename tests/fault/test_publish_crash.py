"""A crash at any instant of a run leaves production with the old rows or the new rows, never a mix.

`queryforge run` runs in a subprocess with a fault point that sleeps inside the publish
transaction (after the table statements, before COMMIT). The test kills it with SIGKILL, then
reopens the warehouse (DuckDB replays its WAL) and compares the whole table with the OLD and
NEW versions computed in Python.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import duckdb
import pytest

from queryforge.workspace import Workspace

pytestmark = pytest.mark.slow

QF = str(Path(sys.executable).with_name("queryforge"))
FAULT = "QUERYFORGE_FAULTS"

Row = tuple[int, str, float]
OLD: list[Row] = [(i, f"old-{i}", i * 1.5) for i in range(40)]
NEW: list[Row] = [(i, f"new-{i}", i * 2.5) for i in range(25, 70)]  # ids 25..39 overlap OLD


def expected_new(mode: str) -> list[Row]:
    if mode == "replace":
        return sorted(NEW)
    keys = {r[0] for r in NEW}
    return sorted([r for r in OLD if r[0] not in keys] + NEW)


def make_ws(root: Path) -> Path:
    """A workspace with the NEW rows in a CSV, one pipeline per mode, and OLD in production."""
    Workspace.init(root, bare=True).close()
    lines = ["id,name,value", *(f"{i},{n},{v}" for i, n, v in NEW)]
    (root / "data" / "sales.csv").write_text("\n".join(lines) + "\n")
    for mode in ("replace", "merge"):
        keys = ", keys: [id]" if mode == "merge" else ""
        (root / "pipelines" / f"sales_{mode}.yaml").write_text(
            f"name: sales_{mode}\nsteps:\n"
            "  - id: src\n    extract: {path: data/sales.csv}\n"
            "  - id: ok\n    check: {input: src, rules: [{not_null: [id]}, {unique: [id]}]}\n"
            f"  - id: publish\n    load: {{input: src, table: sales, mode: {mode}{keys}}}\n"
        )
    reset_to_old(root)
    return root


def warehouse(root: Path) -> str:
    return str(root / ".queryforge" / "warehouse.duckdb")


def reset_to_old(root: Path) -> None:
    with duckdb.connect(warehouse(root)) as con:
        con.execute("CREATE OR REPLACE TABLE sales (id BIGINT, name VARCHAR, value DOUBLE)")
        con.executemany("INSERT INTO sales VALUES (?, ?, ?)", OLD)


def production(root: Path) -> list[Row]:
    """The whole production table; opening read-write lets DuckDB replay a WAL left by a killed writer."""
    with duckdb.connect(warehouse(root)) as con:
        assert con.execute("DESCRIBE sales").fetchall()[:3] == [
            ("id", "BIGINT", "YES", None, None, None),
            ("name", "VARCHAR", "YES", None, None, None),
            ("value", "DOUBLE", "YES", None, None, None),
        ]
        return sorted(con.execute("SELECT * FROM sales").fetchall())


def env(fault: str | None) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k != FAULT}
    if fault:
        out[FAULT] = fault
    return out


def start(root: Path, mode: str, fault: str | None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [QF, "run", f"pipelines/sales_{mode}.yaml"],
        cwd=root,
        env=env(fault),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def run_ids(root: Path) -> set[str]:
    db = root / ".queryforge" / "metadata.db"
    if not db.exists():
        return set()
    with closing(sqlite3.connect(db, timeout=10)) as con:
        return {r[0] for r in con.execute("SELECT id FROM runs")}


def main_thread_sleeps(pid: int) -> bool | None:
    """Whether the process's main thread is in nanosleep (the fault point); None when /proc cannot tell."""
    try:
        wchan = Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return None
    if "nanosleep" in wchan:
        return True
    try:
        number = Path(f"/proc/{pid}/syscall").read_text().split()[0]
    except (OSError, IndexError):
        return None if not wchan or wchan == "0" else False
    nanosleep = {"x86_64": {"230", "35"}, "aarch64": {"115", "101"}}.get(os.uname().machine)
    return None if nanosleep is None else number in nanosleep


def wait_inside_publish_transaction(proc: subprocess.Popen[bytes], root: Path, known: set[str]) -> None:
    """Block until the new run is inside the publish transaction.

    Signal: the run's `publish:warehouse` step is running and its 'before' schema snapshot (taken
    right before the transaction opens) is recorded; then the main thread is seen sleeping in the
    fault point. Nothing sleeps between that snapshot and the fault point.
    """
    db = root / ".queryforge" / "metadata.db"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before its publish: {proc.stderr.read()!r}")
        run = None
        if db.exists():
            with closing(sqlite3.connect(db, timeout=10)) as con:
                rows = con.execute(
                    "SELECT r.id FROM runs r JOIN run_steps s ON s.run_id = r.id "
                    "JOIN schema_snapshots n ON n.run_id = r.id "
                    "WHERE s.step_id = 'publish:warehouse' AND s.status = 'running' AND n.phase = 'before'"
                ).fetchall()
            run = next((r[0] for r in rows if r[0] not in known), None)
        if run is not None:
            sleeping = main_thread_sleeps(proc.pid)
            if sleeping is None:  # no /proc: the fault sleeps 30 s, the transaction needs milliseconds
                time.sleep(2)
                return
            if sleeping:
                return
        time.sleep(0.02)
    pytest.fail("the run never reached the publish transaction")


def kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.stderr is not None
    proc.stderr.close()


def rerun_publishes_new(root: Path, mode: str) -> None:
    done = subprocess.run(
        [QF, "run", f"pipelines/sales_{mode}.yaml"],
        cwd=root,
        env=env(None),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert production(root) == expected_new(mode)


# ---------------------------------------------------------------- a kill inside the publish transaction


@pytest.mark.parametrize("mode", ["replace", "merge"])
def test_kill_inside_the_publish_transaction_keeps_the_old_rows(tmp_path: Path, mode: str) -> None:
    root = make_ws(tmp_path / "ws")
    assert production(root) == sorted(OLD)
    known = run_ids(root)
    proc = start(root, mode, "publish.in_transaction=sleep:30")
    try:
        wait_inside_publish_transaction(proc, root, known)
    finally:
        kill(proc)
    assert proc.returncode == -signal.SIGKILL

    assert production(root) == sorted(OLD)  # exactly the old version, never a mix
    assert production(root) == sorted(OLD)  # and it stays so on a second open

    rerun_publishes_new(root, mode)


# ---------------------------------------------------------------- kills at random instants


def test_kill_at_random_instants_leaves_old_or_new(tmp_path: Path) -> None:
    rng = random.Random(1729)
    root = make_ws(tmp_path / "ws")
    fault = "publish.in_transaction=sleep:0.5"

    # One whole run with the fault, to spread the kills over a run's real length on this machine.
    began = time.monotonic()
    proc = start(root, "merge", fault)
    assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""
    kill(proc)
    length = time.monotonic() - began
    assert production(root) == expected_new("merge")

    seen: list[str] = []
    for mode in ("replace", "merge") * 3:
        reset_to_old(root)
        proc = start(root, mode, fault)
        try:
            time.sleep(rng.uniform(0.0, length))
        finally:
            kill(proc)
        contents = production(root)
        assert contents in (sorted(OLD), expected_new(mode)), f"a mix after {mode} (earlier kills: {seen})"
        seen.append(f"{mode}:{'old' if contents == sorted(OLD) else 'new'}")

    print(f"kills left production at: {seen}")  # shown with -s; which one is timing-dependent
    reset_to_old(root)
    rerun_publishes_new(root, "merge")
