"""The retry policy per failure class: retryable classes wait as configured, terminal ones never retry."""

from __future__ import annotations

import pytest

from queryforge.errors import FailureClass
from queryforge.runs.failures import DEFAULT_DELAYS, Retry
from queryforge.spec.models import RetryPolicy

TERMINAL = [c for c in FailureClass if c not in (FailureClass.TRANSIENT, FailureClass.TIMEOUT)]


@pytest.mark.parametrize(
    ("failure", "attempt", "expected"),
    [
        (FailureClass.TRANSIENT, 1, 1.0),
        (FailureClass.TRANSIENT, 2, 4.0),
        (FailureClass.TRANSIENT, 3, None),  # three tries in all by default
        (FailureClass.TIMEOUT, 1, 1.0),  # a timeout is tried once more
        (FailureClass.TIMEOUT, 2, None),
        *[(c, 1, None) for c in TERMINAL],
    ],
)
def test_default_policy(failure: FailureClass, attempt: int, expected: float | None) -> None:
    assert Retry().delay(failure, attempt) == expected


def test_the_default_is_three_tries_waiting_1_4_16_seconds() -> None:
    assert Retry() == Retry(attempts=3, delays=DEFAULT_DELAYS) and DEFAULT_DELAYS == (1.0, 4.0, 16.0)


def test_more_attempts_than_delays_repeat_the_last_delay() -> None:
    policy = Retry(attempts=6, delays=(0.5, 2.0))
    waits = [policy.delay(FailureClass.TRANSIENT, a) for a in range(1, 7)]
    assert waits == [0.5, 2.0, 2.0, 2.0, 2.0, None]


def test_one_attempt_never_retries() -> None:
    assert Retry(attempts=1).delay(FailureClass.TRANSIENT, 1) is None
    assert Retry(attempts=1).delay(FailureClass.TIMEOUT, 1) is None


def test_a_step_policy_overrides_the_pipeline_policy_which_overrides_the_default() -> None:
    step, pipeline = RetryPolicy(attempts=5, delays=[0.1]), RetryPolicy(attempts=2)
    assert Retry.of(step, pipeline) == Retry(attempts=5, delays=(0.1,))
    assert Retry.of(None, pipeline) == Retry(attempts=2, delays=DEFAULT_DELAYS)
    assert Retry.of(None, None) == Retry()
