"""Steps that read or stage retry TRANSIENT failures as their policy says, and record every try.

A real local HTTP API answers 503 to the first requests of a run; the connector itself is set to
try once, so the failure reaches the step, whose retry policy tries the extract again.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from queryforge.workspace import Workspace

ROWS = [{"id": i, "name": f"n{i}"} for i in range(1, 6)]


class FlakyApi:
    """Answers 503 to the requests whose numbers (1-based) are in `failing`, else the rows."""

    def __init__(self) -> None:
        self.failing: set[int] | range = set()
        self.status = 503
        self.requests = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                api.requests += 1
                status, body = (api.status, {"error": "no"}) if api.requests in api.failing else (200, ROWS)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def api() -> Iterator[FlakyApi]:
    server = FlakyApi()
    yield server
    server.close()


def workspace(root: Path, api: FlakyApi, retry: str) -> Workspace:
    Workspace.init(root, bare=True).close()
    config = yaml.safe_load((root / "queryforge.yaml").read_text())
    config["connections"]["api"] = {"url": api.url, "retry": {"tries": 1}}
    (root / "queryforge.yaml").write_text(yaml.safe_dump(config))
    (root / "pipelines" / "p.yaml").write_text(
        f"name: p\n{retry}steps:\n"
        "  - id: src\n    extract: {connection: api, endpoint: /rows}\n"
        "  - id: out\n    load: {input: src, table: rows}\n"
    )
    return Workspace(root)


def test_a_transient_extract_failure_is_retried_and_every_try_is_recorded(
    tmp_path: Path, api: FlakyApi
) -> None:
    ws = workspace(tmp_path / "ws", api, "retry: {attempts: 4, delays: [0.5, 2]}\n")
    waits: list[float] = []
    try:
        ws.executor = _with_sleep(ws, waits)  # type: ignore[method-assign]
        api.failing = {2, 3, 4}  # request 1 is validation's; the run's first three tries fail
        outcome = ws.run("pipelines/p.yaml")
        assert outcome.status == "succeeded", outcome.error
        step = next(s for s in ws.repo.list_steps(outcome.run_id) if s.step_id == "src")
        assert step.retry_count == 3 and step.status == "succeeded"
        assert waits == [0.5, 2.0, 2.0] and api.requests == 5
        assert sorted(ws.read_table("rows")[1]) == [(r["id"], r["name"]) for r in ROWS]
    finally:
        ws.close()


def test_retries_stop_at_the_policy_and_the_run_fails_transient(tmp_path: Path, api: FlakyApi) -> None:
    ws = workspace(tmp_path / "ws", api, "retry: {attempts: 2, delays: [0]}\n")
    waits: list[float] = []
    try:
        ws.executor = _with_sleep(ws, waits)  # type: ignore[method-assign]
        api.failing = range(2, 100)
        outcome = ws.run("pipelines/p.yaml")
        assert outcome.status == "dead_lettered" and outcome.error is not None  # retries exhausted
        assert outcome.error.failure_class.value == "TRANSIENT"
        step = next(s for s in ws.repo.list_steps(outcome.run_id) if s.step_id == "src")
        assert step.retry_count == 1 and step.status == "failed"
        assert waits == [0.0] and api.requests == 3
    finally:
        ws.close()


def test_a_terminal_failure_is_not_retried(tmp_path: Path, api: FlakyApi) -> None:
    ws = workspace(tmp_path / "ws", api, "retry: {attempts: 5, delays: [0]}\n")
    waits: list[float] = []
    try:
        ws.executor = _with_sleep(ws, waits)  # type: ignore[method-assign]
        api.status, api.failing = 404, {2}  # the endpoint vanished between validation and the run
        outcome = ws.run("pipelines/p.yaml")
        assert outcome.status == "failed" and outcome.error is not None
        assert outcome.error.failure_class.value == "VALIDATION_FAILED"
        step = next(s for s in ws.repo.list_steps(outcome.run_id) if s.step_id == "src")
        assert step.retry_count == 0 and waits == [] and api.requests == 2
    finally:
        ws.close()


def _with_sleep(ws: Workspace, waits: list[float]) -> Any:
    original = ws.executor

    def build(*args: Any, **kwargs: Any) -> Any:
        executor = original(*args, **kwargs)
        executor.sleep = waits.append
        return executor

    return build
