"""A stream into a folder of batch files: no transaction, so exactly once by batch number.

Batch N is the file `<stream>-<N>.parquet`; the position is saved after the batch's files are in
place. A crash in between makes the restart write the same batch again, into the same name.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from queryforge import faults
from queryforge.connectors.base import StagedLoad, TargetRef
from queryforge.connectors.files import FilesConnector
from queryforge.connectors.folder_sink import FolderSink
from queryforge.connectors.sql import StreamMark
from queryforge.errors import QueryForgeError, SpecError
from queryforge.workspace import Workspace
from tests.integration import test_streaming
from tests.integration.test_streaming import stream, streaming
from tests.services import NATS_URL, nats_publish, nats_subject

TYPES = {"id": "BIGINT", "shop": "VARCHAR", "amount": "DOUBLE"}


build = test_streaming.build  # the same workspace fixture


def messages(start: int, count: int) -> list[bytes]:
    return [
        json.dumps({"id": i, "shop": f"s{i % 3}", "amount": i / 8}).encode()
        for i in range(start, start + count)
    ]


def folder_rows(root: Path, pattern: str) -> list[tuple[Any, ...]]:
    with duckdb.connect() as con:
        return con.execute(
            f"SELECT id, shop, amount FROM read_parquet('{root / pattern}') ORDER BY id"
        ).fetchall()


def expected(ids: range) -> list[tuple[Any, ...]]:
    return [(i, f"s{i % 3}", i / 8) for i in ids]


def pipeline(subject: str, **load: Any) -> dict[str, Any]:
    return streaming(
        "sales",
        {"connection": "bus", "stream": subject, "types": TYPES},
        {"id": "ok", "check": {"input": "incoming", "rules": [{"not_null": ["id"]}]}},
        load={"input": "incoming", "path": "lake/sales/*.parquet", "mode": "append", **load},
        trigger={"max_rows": 100, "max_wait_s": 0.3},
    )


def test_each_batch_is_one_file_named_by_its_number(build: Callable[..., Workspace]) -> None:
    with nats_subject() as subject:
        ws = build({"bus": {"url": NATS_URL}}, pipeline(subject))
        nats_publish(subject, messages(0, 300))
        _, status = stream(ws, "sales", 3)
        assert (status.batches, status.published_rows) == (3, 300)
        folder = ws.root / "lake" / "sales"
        assert sorted(p.name for p in folder.iterdir()) == [
            f"sales.incoming-{n:09d}.parquet" for n in (1, 2, 3)
        ]
        assert folder_rows(ws.root, "lake/sales/*.parquet") == expected(range(300))

        # A batch pipeline reads the folder back with the same pattern.
        (ws.root / "pipelines" / "count.yaml").write_text(
            "name: count\nsteps:\n  - id: s\n    extract: {path: lake/sales/*.parquet}\n"
            "  - id: n\n    sql: SELECT count(*) AS n, sum(amount) AS total FROM s\n"
            "  - id: out\n    load: {input: n, table: sales_total}\n"
        )
        ws.run("count")
        with duckdb.connect(str(ws.root / ".queryforge" / "warehouse.duckdb"), read_only=True) as con:
            assert con.execute("SELECT n, total FROM sales_total").fetchone() == (300, sum(range(300)) / 8)


def test_a_crash_between_the_files_and_the_position_rewrites_the_same_batch(
    build: Callable[..., Workspace], monkeypatch: pytest.MonkeyPatch
) -> None:
    with nats_subject() as subject:
        ws = build({"bus": {"url": NATS_URL}}, pipeline(subject))
        nats_publish(subject, messages(0, 300))
        real_point = faults.point
        seen: list[str] = []

        def crash_after_second_rename(name: str) -> None:
            if name == "stream.in_transaction":
                seen.append(name)
                if len(seen) == 2:  # batch 2's file is in place, its position not saved
                    raise QueryForgeError("killed between the rename and the position")
            real_point(name)

        monkeypatch.setattr(faults, "point", crash_after_second_rename)
        with pytest.raises(QueryForgeError, match="killed"):
            ws.stream("sales", stop=threading.Event(), max_batches=3)
        folder = ws.root / "lake" / "sales"
        assert len(list(folder.glob("*.parquet"))) == 2  # batch 2 is there, the position says 1
        position = json.loads((ws.root / ".queryforge" / "streams" / "sales.incoming.json").read_text())
        assert position["batch"] == 1

        monkeypatch.setattr(faults, "point", real_point)
        _, status = stream(ws, "sales", 2)
        assert status.last_batch == 3
        assert sorted(p.name for p in folder.glob("*.parquet")) == [
            f"sales.incoming-{n:09d}.parquet" for n in (1, 2, 3)
        ]
        assert folder_rows(ws.root, "lake/sales/*.parquet") == expected(range(300))  # none twice
        assert not list(folder.glob(".*.tmp"))


def test_failed_checks_quarantine_into_a_subfolder(build: Callable[..., Workspace]) -> None:
    with nats_subject() as subject:
        spec = pipeline(subject)
        spec["on_check_failure"] = "quarantine"
        spec["steps"][1]["check"]["rules"] = [{"expression": "amount < 20"}]
        ws = build({"bus": {"url": NATS_URL}}, spec)
        nats_publish(subject, messages(0, 300))  # amounts reach 20 from id 160: batches 2 and 3 fail
        _, status = stream(ws, "sales", 3)
        assert status.quarantined_batches == 2
        assert folder_rows(ws.root, "lake/sales/*.parquet") == expected(range(100))
        assert folder_rows(ws.root, "lake/sales/_quarantine/*.parquet") == expected(range(100, 300))


@pytest.mark.parametrize(
    ("load", "message"),
    [
        ({"path": "lake/sales.parquet"}, "not 'folder/\\*.ext'"),
        ({"path": "lake/*/x.parquet"}, "not 'folder/\\*.ext'"),
        ({"mode": "merge", "keys": ["id"]}, "can only grow"),
    ],
)
def test_what_a_folder_cannot_do_is_refused_at_validation(
    build: Callable[..., Workspace], load: dict[str, Any], message: str
) -> None:
    ws = build({"bus": {"url": NATS_URL}}, pipeline("qf.never.published", **load))
    with pytest.raises(SpecError, match=message):
        ws.validate("sales")


def test_a_batch_pipeline_cannot_write_a_folder_pattern(build: Callable[..., Workspace]) -> None:
    ws = build({})
    (ws.root / "data").mkdir(exist_ok=True)
    (ws.root / "data" / "in.csv").write_text("id\n1\n")
    (ws.root / "pipelines" / "once.yaml").write_text(
        "name: once\nsteps:\n  - id: s\n    extract: {path: data/in.csv}\n"
        "  - id: out\n    load: {input: s, path: lake/x/*.parquet}\n"
    )
    with pytest.raises(QueryForgeError, match="only a streaming pipeline writes"):
        ws.run("once")
    assert not (ws.root / "lake").exists() or not list((ws.root / "lake").rglob("*.parquet"))


def test_a_replayed_batch_leaves_no_copy_in_the_other_folders(build: Callable[..., Workspace]) -> None:
    """The first try quarantined batch 4 (or rejected some of its messages); the replay, cut at
    other boundaries, passes: batch 4 must then exist only where the replay put it."""
    ws = build({})
    files = ws.connections().get("files")
    assert isinstance(files, FilesConnector)
    sink = FolderSink(files, ["lake/sales/*.parquet"])
    mark = StreamMark(stream="sales.incoming", batch=4, position="40", token="t")
    stale = [
        ws.root / "lake/sales/_quarantine/sales.incoming-000000004.parquet",
        ws.root / "lake/sales/_rejected/sales.incoming-000000004.parquet",
    ]
    kept = ws.root / "lake/sales/_quarantine/sales.incoming-000000003.parquet"  # another batch
    for path in [*stale, kept]:
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"id": [1]}), path)
    load = StagedLoad(
        step_id="sink",
        target=TargetRef(connection="files", table="lake/sales/*.parquet"),
        mode="append",
        keys=[],
        staging_name="",
        rows=0,
        columns=[],
    )
    table = pa.table({"id": [7, 8]})
    sink.publish(
        [sink.stage("s", load, pa.RecordBatchReader.from_batches(table.schema, table.to_batches()))], mark
    )

    assert not any(path.exists() for path in stale)
    assert kept.exists()
    assert pq.read_table(ws.root / "lake/sales/sales.incoming-000000004.parquet").column(
        "id"
    ).to_pylist() == [7, 8]
    assert sink.stream_position("sales.incoming") == (4, "40", "t")
