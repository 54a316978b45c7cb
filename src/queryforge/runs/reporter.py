"""How the core tells the world about progress without printing: a Reporter interface."""

from __future__ import annotations

from typing import Protocol


class Reporter(Protocol):
    def run_started(self, run_id: str, pipeline: str, steps: list[tuple[str, str]]) -> None: ...

    def step_started(self, step_id: str, kind: str) -> None: ...

    def step_finished(
        self, step_id: str, status: str, rows: int | None, seconds: float, detail: str | None = None
    ) -> None: ...

    def run_finished(self, run_id: str, status: str) -> None: ...


class NullReporter:
    """Reports nothing: tests, --json output and library use."""

    def run_started(self, run_id: str, pipeline: str, steps: list[tuple[str, str]]) -> None:
        pass

    def step_started(self, step_id: str, kind: str) -> None:
        pass

    def step_finished(
        self, step_id: str, status: str, rows: int | None, seconds: float, detail: str | None = None
    ) -> None:
        pass

    def run_finished(self, run_id: str, status: str) -> None:
        pass
