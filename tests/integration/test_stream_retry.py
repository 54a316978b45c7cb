"""A stream that loses its broker or sink for a moment waits it out and goes on, exactly once.

The failure is injected at the two instants that matter: before the batch's publish (nothing
committed: the batch is read again) and after its commit but before the acknowledgement (the
batch is committed: serving again from the stored position must not publish it twice).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import duckdb
import pytest

from queryforge import faults
from queryforge.errors import TransientError
from queryforge.runs import stream as stream_module
from queryforge.workspace import Workspace
from tests.services import NATS_URL, nats_publish, nats_subject

MESSAGES = 2_000
# Every message is published before the stream starts, so each batch fills to max_rows; a short
# max_wait_s would let a loaded machine close a batch early and the four batches miss messages.

PIPELINE = """
name: flaky
mode: streaming
trigger: {{max_rows: 500, max_wait_s: 5}}
steps:
  - id: incoming
    extract: {{connection: bus, stream: "{subject}", types: {{id: BIGINT, amount: DOUBLE}}}}
  - id: sink
    load: {{input: incoming, table: flaky, mode: append}}
"""


def workspace(make_workspace: Callable[..., Workspace], subject: str) -> Workspace:
    ws = make_workspace(bare=True)
    config = ws.root / "queryforge.yaml"
    config.write_text(config.read_text() + f"  bus: {{url: '{NATS_URL}'}}\n")
    (ws.root / "pipelines").mkdir(exist_ok=True)
    (ws.root / "pipelines" / "flaky.yaml").write_text(PIPELINE.format(subject=subject))
    return Workspace(ws.root)


@pytest.mark.parametrize("where", ["stream.before_publish", "stream.before_ack"])
def test_a_transient_failure_is_waited_out_and_nothing_is_published_twice(
    make_workspace: Callable[..., Workspace], monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    monkeypatch.setattr(stream_module, "MAX_BACKOFF_S", 0.1)
    failures: list[str] = []
    real_point = faults.point

    def flaky(name: str) -> None:
        if name == where and len(failures) < 2:  # the first two batches each fail once
            failures.append(name)
            raise TransientError(f"injected at {name}")
        real_point(name)

    monkeypatch.setattr(faults, "point", flaky)
    with nats_subject() as subject:
        nats_publish(subject, [json.dumps({"id": i, "amount": i / 4}).encode() for i in range(MESSAGES)])
        ws = workspace(make_workspace, subject)
        errors: list[str] = []
        try:
            run_id, status = ws.stream(
                "flaky",
                stop=threading.Event(),
                max_batches=MESSAGES // 500,
                on_progress=lambda s, notable: errors.append(s.last_error or "") if notable else None,
            )
            run_status = ws.repo.get_run(run_id).status
        finally:
            ws.close()
    assert len(failures) == 2
    assert any("injected" in e and "trying again" in e for e in errors)
    assert run_status == "succeeded"
    assert status.last_batch == MESSAGES // 500  # batches numbered without a gap or a repeat
    with duckdb.connect(str(ws.root / ".queryforge" / "warehouse.duckdb")) as con:
        count, distinct, total = con.execute(
            "SELECT count(*), count(DISTINCT id), sum(amount) FROM flaky"
        ).fetchone()  # type: ignore[misc]
    assert (count, distinct) == (MESSAGES, MESSAGES)
    assert total == pytest.approx(sum(i / 4 for i in range(MESSAGES)))
