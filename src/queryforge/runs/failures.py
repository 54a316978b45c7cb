"""The retry policy: which failures a step retries, how often, and how long it waits in between.

Keyed on the failure class an error carries (ARCHITECTURE.md), never on message text:
TRANSIENT is retried with backoff (default 3 tries, waiting 1 s, 4 s, 16 s), TIMEOUT once, every
other class never. A step's own `retry:` overrides the pipeline's, which overrides the default.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import FailureClass
from ..spec import models as m

DEFAULT_DELAYS = (1.0, 4.0, 16.0)


@dataclass(frozen=True)
class Retry:
    attempts: int = 3  # tries in all, the first included
    delays: tuple[float, ...] = DEFAULT_DELAYS  # wait before the 2nd, 3rd, ... try; the last repeats

    @classmethod
    def of(cls, step: m.RetryPolicy | None, pipeline: m.RetryPolicy | None) -> Retry:
        chosen = step or pipeline
        if chosen is None:
            return cls()
        return cls(attempts=chosen.attempts, delays=tuple(chosen.delays or DEFAULT_DELAYS))

    def delay(self, failure: FailureClass, attempt: int) -> float | None:
        """Seconds to wait before trying again after failed try number `attempt` (1-based), or None."""
        if failure == FailureClass.TRANSIENT:
            allowed = self.attempts
        elif failure == FailureClass.TIMEOUT:
            allowed = min(self.attempts, 2)
        else:
            return None
        if attempt >= allowed:
            return None
        return self.delays[min(attempt, len(self.delays)) - 1] if self.delays else 0.0
