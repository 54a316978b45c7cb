"""SIGKILL a Spark run during its Spark job and inside its publish: production keeps the old rows
(never a mix), and the run resumes or re-runs to the new ones.

The publish is the target connection's one transaction on both engines; these tests show that a
run on Spark keeps that contract: Spark itself never writes to the production table.
"""

from __future__ import annotations

import json
import subprocess
import time
from contextlib import closing
from pathlib import Path

import pytest

from tests.fault.test_publish_crash import (
    NEW,
    OLD,
    QF,
    env,
    kill,
    main_thread_sleeps,
    make_ws,
    production,
    run_ids,
    wait_inside_publish_transaction,
)

pytestmark = pytest.mark.slow
# A short lease, so that the killed run's lease runs out within seconds and it can be resumed.
SPARK_ENV = {"QUERYFORGE_ENGINE": "spark", "QUERYFORGE_LEASE_S": "4", "QUERYFORGE_HEARTBEAT_S": "1"}


def start_on_spark(root: Path, fault: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [QF, "run", "pipelines/sales_replace.yaml"],
        cwd=root,
        env={**env(fault), **SPARK_ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def qf_spark(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [QF, *args],
        cwd=root,
        env={**env(None), **SPARK_ENV},
        capture_output=True,
        text=True,
        timeout=300,
    )


def wait_for_step(proc: subprocess.Popen[bytes], root: Path, step: str) -> str:
    """The run's id once `step` is running and the process sleeps in its fault point."""
    import sqlite3

    db = root / ".queryforge" / "metadata.db"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}): {proc.stderr.read()!r}")  # type: ignore[union-attr]
        if db.exists():
            with closing(sqlite3.connect(db, timeout=10)) as con:
                found = con.execute(
                    "SELECT run_id FROM run_steps WHERE step_id = ? AND status = 'running'", [step]
                ).fetchall()
            if found and main_thread_sleeps(proc.pid) is not False:
                return str(found[0][0])
        time.sleep(0.05)
    pytest.fail(f"the run never reached step {step}")


def test_a_kill_during_the_spark_job_leaves_production_alone_and_the_run_resumes(tmp_path: Path) -> None:
    root = make_ws(tmp_path / "ws")
    proc = start_on_spark(root, "step.publish=sleep:120")  # the stage-load, after Spark ran the checks
    try:
        run_id = wait_for_step(proc, root, "publish")
        work = root / ".queryforge" / "runs" / run_id / "spark"
        assert [p.name for p in work.iterdir() if p.name.startswith("_qf_src_")]  # the extract, as Parquet
    finally:
        kill(proc)
    assert production(root) == sorted(OLD)

    time.sleep(5)  # the lease of the killed process runs out
    resumed = qf_spark(root, "runs", "resume", run_id, "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "succeeded"
    assert production(root) == sorted(NEW)


def test_a_kill_inside_the_publish_of_a_spark_run_keeps_the_old_rows(tmp_path: Path) -> None:
    root = make_ws(tmp_path / "ws")
    known = run_ids(root)
    proc = start_on_spark(root, "publish.in_transaction=sleep:60")
    try:
        wait_inside_publish_transaction(proc, root, known)
    finally:
        kill(proc)
    assert production(root) == sorted(OLD)
    rerun = qf_spark(root, "run", "pipelines/sales_replace.yaml")
    assert rerun.returncode == 0, rerun.stderr
    assert production(root) == sorted(NEW)
