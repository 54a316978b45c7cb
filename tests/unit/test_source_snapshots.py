"""Source snapshots: every file extract is read from the run's own snapshot, whose hash is recorded.

See docs/decisions/0005-sources-read-once.md. The race against live writers is in
tests/fault/test_file_source_race.py; these tests pin down the pieces: how a file is snapshotted
(hard link or copy), what the step record keeps, resume, and every file format.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xxhash
from sqlglot import exp

from queryforge.runs import sources
from queryforge.workspace import Workspace

GOOD = b"id,amount\n1,10.5\n2,20.25\n3,30.0\n"
BAD = b"id,amount\n1,-1.5\n2,\n3,-30.0\n"  # a NULL and negative amounts: both rules fail
BAD_SAME_SIZE = b"id,amount\n1,-0.5\n2,-0.25\n3,-3.0\n"  # for in-place writers
assert len(BAD_SAME_SIZE) == len(GOOD)

PIPELINE = """
name: snap
steps:
  - id: src
    extract: {path: data/src.csv}
  - id: ok
    check: {input: src, rules: [{not_null: [amount]}, {range: {column: amount, min: 0}}]}
  - id: out
    load: {input: src, table: snap_out, mode: replace}
"""


@pytest.fixture
def ws(make_workspace: Callable[..., Workspace]) -> Iterator[Workspace]:
    ws = make_workspace(bare=True)
    (ws.root / "data").mkdir(exist_ok=True)
    write_old(ws.root / "data" / "src.csv", GOOD)
    (ws.root / "pipelines" / "snap.yaml").write_text(PIPELINE)
    yield ws


def write_old(path: Path, content: bytes) -> None:
    """A file last written an hour ago: old enough to be snapshotted by hard link."""
    path.write_bytes(content)
    old = time.time() - 3600
    os.utime(path, (old, old))


def replace(path: Path, content: bytes) -> None:
    tmp = path.with_name(".tmp-" + path.name)
    tmp.write_bytes(content)
    os.replace(tmp, path)


def out_rows(ws: Workspace) -> list[tuple[object, ...]]:
    return sorted(ws.read_table("snap_out")[1])


GOOD_ROWS = [(1, 10.5), (2, 20.25), (3, 30.0)]


# ---------------------------------------------------------------- the record


def test_the_snapshot_hash_and_size_are_recorded_on_the_extract_step(ws: Workspace) -> None:
    outcome = ws.run("snap")

    assert outcome.status == "succeeded", outcome.error
    step = {s.step_id: s for s in ws.repo.list_steps(outcome.run_id)}["src"]
    expected = xxhash.xxh3_128_hexdigest(GOOD)
    assert step.message == f"snapshot xxh3_128:{expected}, 1 file, {len(GOOD)} B, linked"
    assert step.bytes == len(GOOD)
    assert out_rows(ws) == GOOD_ROWS
    # A finished run keeps no snapshot: a hard link would keep replaced versions of sources on disk.
    assert not (ws.state / "runs" / outcome.run_id / "sources").exists()


def test_a_failed_run_keeps_its_snapshot_and_manifest_for_a_resume(ws: Workspace) -> None:
    replace(ws.root / "data" / "src.csv", BAD)

    outcome = ws.run("snap")

    assert outcome.status == "failed" and outcome.failed_checks
    manifest = json.loads(
        (ws.state / "runs" / outcome.run_id / "sources" / "src" / "manifest.json").read_text()
    )
    assert manifest["hash"] == xxhash.xxh3_128_hexdigest(BAD)
    [entry] = manifest["files"]
    assert entry["source"] == str(ws.root / "data" / "src.csv")
    assert Path(entry["path"]).read_bytes() == BAD
    assert entry["size"] == len(BAD) and not entry["linked"]  # just written: copied, not linked


# ---------------------------------------------------------------- link or copy


def test_an_old_file_is_hard_linked_and_a_fresh_one_copied(tmp_path: Path) -> None:
    old, fresh = tmp_path / "old.csv", tmp_path / "fresh.csv"
    write_old(old, GOOD)
    fresh.write_bytes(GOOD)

    snap = sources.take("s", [str(old), str(fresh)], tmp_path / "sources", {})

    linked, copied = snap.files
    assert linked.linked and os.stat(linked.path).st_ino == old.stat().st_ino
    assert not copied.linked and os.stat(copied.path).st_ino != fresh.stat().st_ino
    assert linked.xxh3_128 == copied.xxh3_128 == xxhash.xxh3_128_hexdigest(GOOD)
    assert snap.hash == xxhash.xxh3_128_hexdigest(f"{linked.xxh3_128}\n{copied.xxh3_128}".encode())
    assert sources.changed(snap) == []
    replace(old, BAD)  # an atomic-rename writer replaces the name, not our inode
    with old.open("r+b") as fh:  # so writing the new file in place leaves our inode alone too
        fh.write(b"x")
    assert sources.changed(snap) == [] and Path(linked.path).read_bytes() == GOOD


def test_an_in_place_write_to_a_linked_file_is_seen_by_verify(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    write_old(path, GOOD)
    snap = sources.take("s", [str(path)], tmp_path / "sources", {})
    with path.open("r+b") as fh:
        fh.write(BAD_SAME_SIZE)

    assert sources.changed(snap) == [str(path)]
    with pytest.raises(sources.SourceChanged, match="changed while the run read it") as info:
        sources.verify([snap])
    assert info.value.failure_class.value == "TRANSIENT"


def test_a_file_that_vanishes_before_its_snapshot_is_a_transient_failure(tmp_path: Path) -> None:
    with pytest.raises(sources.SourceChanged, match="disappeared"):
        sources.take("s", [str(tmp_path / "gone.csv")], tmp_path / "sources", {})


# ---------------------------------------------------------------- resume


def test_resume_reads_the_snapshot_of_its_own_run_not_the_source(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUERYFORGE_FAULTS", "publish.in_transaction=raise")
    failed = ws.run("snap")
    assert failed.error is not None and failed.error.failure_class.value == "TRANSIENT"
    monkeypatch.delenv("QUERYFORGE_FAULTS")
    replace(ws.root / "data" / "src.csv", BAD)  # would fail the check, and must not be read

    resumed = ws.resume(failed.run_id)

    assert resumed.status == "succeeded", resumed.error  # type: ignore[union-attr]
    assert out_rows(ws) == GOOD_ROWS


def test_resume_takes_a_new_snapshot_when_an_in_place_writer_changed_the_old_one(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUERYFORGE_FAULTS", "publish.in_transaction=raise")
    failed = ws.run("snap")
    monkeypatch.delenv("QUERYFORGE_FAULTS")
    with (ws.root / "data" / "src.csv").open("r+b") as fh:  # changes the hard-linked snapshot too
        fh.write(BAD_SAME_SIZE)

    resumed = ws.resume(failed.run_id)

    # The earlier attempt's check results describe bytes that are gone: the check runs again.
    assert resumed.status == "failed" and resumed.failed_checks  # type: ignore[union-attr]
    steps = {s.step_id: s for s in ws.repo.list_steps(failed.run_id)}
    assert steps["ok"].status == "failed"
    with pytest.raises(Exception):  # noqa: B017 -- nothing was ever published
        out_rows(ws)


# ---------------------------------------------------------------- formats


def test_gzip_glob_parquet_and_ndjson_extracts_read_their_snapshots(ws: Workspace) -> None:
    data = ws.root / "data"
    with gzip.open(data / "z.csv.gz", "wb") as fh:
        fh.write(GOOD)
    (data / "parts").mkdir()
    for part in ("a", "b"):
        shutil.copy(data / "src.csv", data / "parts" / f"{part}.csv")
    pq.write_table(pa.table({"id": [1, 2], "name": ["x", "y"]}), data / "p.parquet")
    (data / "n.ndjson").write_text('{"id": 1, "tag": "a"}\n{"id": 2, "tag": "b"}\n')
    (ws.root / "pipelines" / "formats.yaml").write_text(
        """
name: formats
steps:
  - {id: zipped, extract: {path: data/z.csv.gz}}
  - {id: parts, extract: {path: "data/parts/*.csv"}}
  - {id: pq, extract: {path: data/p.parquet}, materialize: table}
  - {id: nd, extract: {path: data/n.ndjson}}
  - id: all
    sql: |
      SELECT (SELECT sum(amount) FROM zipped) AS z, (SELECT sum(amount) FROM parts) AS p,
             (SELECT count(*) FROM pq) AS q, (SELECT string_agg(tag, '' ORDER BY id) FROM nd) AS n
  - {id: out, load: {input: all, table: formats_out}}
"""
    )

    outcome = ws.run("formats")

    assert outcome.status == "succeeded", outcome.error
    assert ws.read_table("formats_out")[1] == [(60.75, 121.5, 2, "ab")]
    steps = {s.step_id: s for s in ws.repo.list_steps(outcome.run_id)}
    assert ", 2 files, " in (steps["parts"].message or "")
    for step in ("zipped", "parts", "pq", "nd"):
        assert (steps[step].message or "").startswith("snapshot xxh3_128:"), step


def test_explain_still_names_the_source_file(ws: Workspace) -> None:
    shown = " ".join(str(v) for row in ws.explain("snap") for v in row.values())
    assert str(ws.root / "data" / "src.csv") in shown
    assert "sources" not in shown


def test_the_snapshot_is_what_duckdb_reads(tmp_path: Path) -> None:
    """repoint swaps the file names only: options pinned at compile time stay."""
    path = tmp_path / "a.csv"
    write_old(path, GOOD)
    read = exp.select("*").from_(
        exp.Anonymous(
            this="read_csv",
            expressions=[
                exp.Array(expressions=[exp.Literal.string(str(path))]),
                exp.EQ(this=exp.column("header"), expression=exp.true()),
            ],
        )
    )
    assert sources.files_read(read) == [str(path)]
    snap = sources.take("s", [str(path)], tmp_path / "sources", {})
    moved = sources.repoint(read, snap)
    assert sources.files_read(moved) == [snap.files[0].path]
    assert "header = TRUE" in moved.sql("duckdb")
    with duckdb.connect() as con:
        assert con.execute(moved.sql("duckdb")).fetchall() == GOOD_ROWS
