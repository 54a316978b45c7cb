"""What a running run shares with whoever watches it: the step it is in, and a stop request.

The executor writes `step` and `publishing`; a watchdog thread (the worker's heartbeat) reads them to
enforce step time limits and sets `cancel` when somebody cancelled the run. The executor honours
`cancel` between steps, never inside a publish.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from ..errors import FailureClass, QueryForgeError
from ..store import Repo
from .failures import Retry

# Failure classes that end a run in the dead-letter queue: a person has to look (ARCHITECTURE.md).
DEAD_LETTER = frozenset({FailureClass.MALFORMED_RESPONSE, FailureClass.INTERNAL})


@dataclass
class RunControl:
    cancel: threading.Event = field(default_factory=threading.Event)
    step: tuple[str, str, float] | None = None  # (step id, kind, monotonic start)
    publishing: bool = False
    timeouts: dict[str, float] = field(default_factory=dict)  # step id -> its timeout_s

    def entered(self, step_id: str, kind: str) -> None:
        self.step = (step_id, kind, time.monotonic())

    def left(self) -> None:
        self.step = None

    def overdue(self) -> tuple[str, float] | None:
        """The current step and its limit, when it has run longer than its `timeout_s`."""
        current = self.step
        if current is None or self.publishing:
            return None
        limit = self.timeouts.get(current[0])
        if limit is not None and time.monotonic() - current[2] > limit:
            return current[0], limit
        return None


def final_status(failure: FailureClass) -> str:
    """Where a run that failed with this class ends up when nobody retries it."""
    return "dead_lettered" if failure in DEAD_LETTER or failure == FailureClass.TRANSIENT else "failed"


def worker_failure_status(
    attempt: int, run_attempts: int
) -> Callable[[QueryForgeError], tuple[str, datetime | None]]:
    """On a worker, a run that failed TRANSIENT goes back to the queue with the retry policy's
    backoff until it was tried `run_attempts` times; anything else ends as `final_status` says."""
    retry = Retry(attempts=run_attempts)

    def decide(exc: QueryForgeError) -> tuple[str, datetime | None]:
        wait = retry.delay(exc.failure_class, attempt)
        if exc.failure_class == FailureClass.TRANSIENT and wait is not None:
            return "queued", datetime.now(UTC) + timedelta(seconds=wait)
        return final_status(exc.failure_class), None

    return decide


def record_hard_stop(repo: Repo, run_id: str, reason: str, step: str | None) -> None:
    """Record a run stopped from outside, before its process exits: a cancel, or a step over its
    time limit (TIMEOUT is retried once, as the retry policy says: back to the queue, then failed)."""
    now = datetime.now(UTC)
    lease = {"lease_owner": None, "lease_expires_at": None}
    if reason.startswith("cancelled"):
        if step is not None:
            repo.finish_step(run_id, step, status="cancelled", message=reason)
        repo.update_run(run_id, status="cancelled", ended_at=now, error_message=reason, **lease)
        return
    tries = 1
    if step is not None:
        # Earlier TIMEOUTs of this step, from its history: not its retry_count, which every start
        # raises (a resume after a killed worker, a TRANSIENT retry), so a run resumed once had its
        # one TIMEOUT retry used up before it ever timed out (issue 10, defect 14).
        tries = 1 + sum(
            1
            for e in repo.list_events(run_id)
            if e["kind"] == "step"
            and e["step_id"] == step
            and e["status"] == "failed"
            and e["detail"] == "TIMEOUT"
        )
        repo.finish_step(run_id, step, status="failed", failure_class="TIMEOUT", message=reason)
    message = f"Run {run_id} stopped: {reason}"
    if Retry().delay(FailureClass.TIMEOUT, tries) is not None:
        repo.update_run(run_id, status="queued", error_class="TIMEOUT", error_message=message, **lease)
    else:
        repo.update_run(
            run_id,
            status="failed",
            ended_at=now,
            error_class="TIMEOUT",
            error_message=f"{message} (tried {tries} times)",
            **lease,
        )
