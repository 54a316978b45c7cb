"""A source file rewritten while runs read it: what a run audited is what it publishes, or nothing.

Issue 10, defect 4: file extracts were inlined, so a check and the load each read the source file
again; a writer replacing the file between them (8 of 25 runs) got rows with NULL and negative
amounts published while every check passed. Runs now read a snapshot of each source taken once
(see docs/decisions/0005-sources-read-once.md). These tests run real writers -- no fault injection --
against 50 runs each and compare what was published with the good file, read independently.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.csv as pa_csv
import pytest

from queryforge.runs.reporter import NullReporter
from queryforge.workspace import Workspace

pytestmark = pytest.mark.slow

RUNS = 50
ROWS = 2000

PIPELINE = """
name: race
steps:
  - id: src
    extract: {path: data/src.csv}
  - id: ok
    check: {input: src, rules: [{not_null: [amount]}, {range: {column: amount, min: 0}}]}
  - id: out
    load: {input: src, table: race_out, mode: replace}
"""


def csv_text(good: bool, *, nulls: bool = False) -> bytes:
    """Rows of equal width in both versions, so they have the same size (for in-place writers):
    good amounts are 1000.25 .. 1500.00, bad ones -100.25 .. -999.25."""
    lines = ["id,amount"]
    for i in range(1, ROWS + 1):
        amount = f"{1000 + i * 0.25:.2f}" if good else f"-{100 + i % 900}.25"
        lines.append(f"{i},{'' if nulls and i % 3 == 0 else amount}")
    return ("\n".join(lines) + "\n").encode()


GOOD = csv_text(True)
BAD_RENAME = csv_text(False, nulls=True)  # NULL and negative amounts: both rules fail
BAD_IN_PLACE = csv_text(False)  # as long as GOOD: every amount negative
assert len(BAD_IN_PLACE) == len(GOOD)


@pytest.fixture
def ws(make_workspace: Callable[..., Workspace]) -> Iterator[Workspace]:
    ws = make_workspace(bare=True)
    (ws.root / "data").mkdir(exist_ok=True)
    (ws.root / "data" / "src.csv").write_bytes(GOOD)
    (ws.root / "pipelines" / "race.yaml").write_text(PIPELINE)
    yield ws


def good_rows(tmp: Path) -> list[tuple[Any, ...]]:
    """The good file's rows, read with pyarrow: no QueryForge code involved."""
    path = tmp / "good.csv"
    path.write_bytes(GOOD)
    table = pa_csv.read_csv(path)
    return sorted(zip(table["id"].to_pylist(), table["amount"].to_pylist(), strict=True))


def published(ws: Workspace) -> list[tuple[Any, ...]] | None:
    try:
        return sorted(ws.read_table("race_out")[1])
    except Exception:  # not published yet
        return None


class Writer(threading.Thread):
    """Swaps the good and the bad version of the source as fast as it can until stopped."""

    def __init__(self, path: Path, bad: bytes, *, in_place: bool) -> None:
        super().__init__(daemon=True)
        self.path, self.bad, self.in_place = path, bad, in_place
        self.stop = threading.Event()
        self.writes = 0

    def run(self) -> None:
        tmp = self.path.with_name(".src.csv.tmp")
        while not self.stop.is_set():
            content = self.bad if self.writes % 2 == 0 else GOOD
            if self.in_place:
                with self.path.open("r+b") as fh:
                    fh.write(content)
                time.sleep(0.001)  # leave the runs some quiet moments to copy a whole version
            else:
                tmp.write_bytes(content)
                os.replace(tmp, self.path)
            self.writes += 1


def race(ws: Workspace, tmp_path: Path, bad: bytes, *, in_place: bool) -> dict[str, int]:
    good = good_rows(tmp_path)
    writer = Writer(ws.root / "data" / "src.csv", bad, in_place=in_place)
    statuses: dict[str, int] = {}
    writer.start()
    try:
        for i in range(RUNS):
            before = published(ws)
            outcome = ws.run("race")
            after = published(ws)
            statuses[outcome.status] = statuses.get(outcome.status, 0) + 1
            assert after is None or after == good, (
                f"run {i + 1} ({outcome.status}) published rows it did not audit"
            )
            if outcome.status == "succeeded":
                assert after == good
            else:
                assert outcome.status in ("failed", "dead_lettered"), outcome.status
                assert not outcome.published and after == before, f"run {i + 1} failed but published"
    finally:
        writer.stop.set()
        writer.join()
    assert writer.writes > RUNS, "the writer hardly ran: the race was not exercised"
    return statuses


def test_atomic_rename_writer_never_gets_unchecked_rows_published(ws: Workspace, tmp_path: Path) -> None:
    statuses = race(ws, tmp_path, BAD_RENAME, in_place=False)
    assert statuses.get("succeeded", 0) >= 1, statuses
    assert statuses.get("failed", 0) >= 1, statuses  # the bad version was seen, and stopped by the checks


def test_in_place_writer_never_gets_unchecked_rows_published(ws: Workspace, tmp_path: Path) -> None:
    statuses = race(ws, tmp_path, BAD_IN_PLACE, in_place=True)
    assert statuses.get("succeeded", 0) >= 1, statuses


class WriteInPlaceAfter(NullReporter):
    """Overwrites the source in place (same size) right after a given step: between check and load."""

    def __init__(self, path: Path, step: str) -> None:
        self.path, self.step = path, step

    def step_finished(
        self, step_id: str, status: str, rows: int | None, seconds: float, detail: str | None = None
    ) -> None:
        if step_id == self.step:
            with self.path.open("r+b") as fh:
                fh.write(BAD_IN_PLACE)


def test_an_in_place_write_to_a_hard_linked_snapshot_is_detected_before_publish(ws: Workspace) -> None:
    source = ws.root / "data" / "src.csv"
    old = time.time() - 3600
    os.utime(source, (old, old))  # an old file: snapshotted by hard link, which shares the inode

    outcome = ws.run_source(ws.load("race"), reporter=WriteInPlaceAfter(source, "ok"))

    assert outcome.error is not None and outcome.error.failure_class.value == "TRANSIENT"
    assert "Source file changed while the run read it" in outcome.error.message
    assert outcome.status in ("failed", "dead_lettered") and not outcome.published
    assert published(ws) is None
    steps = {s.step_id: s for s in ws.repo.list_steps(outcome.run_id)}
    assert (steps["src"].message or "").endswith(", linked")
    assert steps["ok"].status == "succeeded"  # the check saw the good version
