"""A Spark stream SIGKILLed at random instants publishes every row exactly once.

`queryforge stream --engine spark` runs in its own process (its own JVM) over a file-drop folder
into SQLite; it is killed several times while it works through the files, then a last start drains
the rest and stops on SIGTERM. Spark's checkpoint and the sink's committed batch numbers must agree
after every kill: no file's rows lost, none twice, compared with the files written here.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
import yaml

from queryforge.workspace import Workspace

QF = str(Path(sys.executable).with_name("queryforge"))
FILES, ROWS = 40, 50
KILLS = 4
SEED = 20261207

# The process-heavy fault tests run one after another on one xdist worker, never side by side:
# each starts and kills many processes, and two at once starve each other's timeouts.
pytestmark = [pytest.mark.spark, pytest.mark.xdist_group("heavy")]


def sink_ids(root: Path) -> list[int]:
    path = root / "data" / "sink.sqlite"
    if not path.exists():
        return []
    with closing(sqlite3.connect(path)) as con:
        try:
            return [int(r[0]) for r in con.execute("SELECT id FROM sales")]
        except sqlite3.OperationalError:  # no table before the first batch
            return []


def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    Workspace.init(root, bare=True).close()
    config = {
        "name": "ws",
        "target": "lite",
        "connections": {"lite": {"url": "sqlite:data/sink.sqlite", "writable": True}},
    }
    (root / "queryforge.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    pipeline = {
        "name": "sales",
        "mode": "streaming",
        "trigger": {"max_rows": 2, "max_wait_s": 0.5},
        "steps": [
            {
                "id": "incoming",
                "extract": {"path": "inbox/*.json", "types": {"id": "BIGINT", "amount": "DOUBLE"}},
            },
            {"id": "sink", "load": {"input": "incoming", "table": "sales", "mode": "append"}},
        ],
    }
    (root / "pipelines" / "sales.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    inbox = root / "inbox"
    inbox.mkdir()
    for n in range(FILES):
        rows = [{"id": n * ROWS + i, "amount": i / 4} for i in range(ROWS)]
        (inbox / f"part-{n:03d}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def start(root: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [QF, "stream", "sales", "--engine", "spark"],
        cwd=root,
        env={**os.environ, "QUERYFORGE_FAULTS": ""},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_killed_spark_stream_resumes_from_its_checkpoint_exactly_once(tmp_path: Path) -> None:
    root = workspace(tmp_path)
    rng = random.Random(SEED)
    advanced = 0
    for _ in range(KILLS):
        before = len(sink_ids(root))
        proc = start(root)
        deadline = time.monotonic() + 180  # the JVM starts in 10-30 s on two busy cores
        while len(sink_ids(root)) == before and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        time.sleep(rng.uniform(0.0, 2.0))  # somewhere in the next batches: reading, publishing, committing
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, f"the stream ended by itself: {err[-2000:]}"
        advanced += len(sink_ids(root)) > before
        ids = sink_ids(root)
        assert len(ids) == len(set(ids)), "a row was published twice"
    assert advanced == KILLS, "a start was killed before it published anything"

    final = start(root)
    deadline = time.monotonic() + 240
    while len(sink_ids(root)) < FILES * ROWS and time.monotonic() < deadline and final.poll() is None:
        time.sleep(0.5)
    final.send_signal(signal.SIGTERM)
    out, err = final.communicate(timeout=120)
    assert final.returncode == 0, err[-3000:]
    assert "Stream stopped cleanly" in out

    ids = sink_ids(root)
    assert sorted(ids) == list(range(FILES * ROWS))  # every row of every file, each once
    with closing(sqlite3.connect(root / "data" / "sink.sqlite")) as con:
        batches = [
            r[0] for r in con.execute("SELECT batch FROM _qf_staging___qf_stream_batches ORDER BY batch")
        ]
    assert batches == list(range(1, len(batches) + 1))  # numbered without a gap or a repeat
