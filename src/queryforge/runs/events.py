"""Following a run's events: the `run_events` rows are the truth; notifications only wake us up.

On PostgreSQL every event is also sent with NOTIFY (see `store.repo.record_event`), so a follower
LISTENs and reads new rows the moment they commit, whichever process wrote them. On SQLite the
in-process doorbell (`store.doorbell`) wakes the follower when this process wrote them (the embedded
mode); rows written by other processes are found by polling every `poll_s`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from ..store import Repo
from ..store.doorbell import DOORBELL
from ..store.repo import EVENTS_CHANNEL

ENDED = frozenset({"succeeded", "failed", "cancelled", "dead_lettered", "audited"})


def follow(
    repo: Repo,
    run_id: str,
    *,
    live: bool,
    poll_s: float = 0.25,
    wait: Callable[[float], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """The run's events in order; with `live`, keep going until the run has ended."""
    last = 0
    with _listener(repo) as waiter:
        while True:
            rang = DOORBELL.rings
            events = repo.list_events(run_id, after_id=last)
            yield from events
            if events:
                last = events[-1]["id"]
            if not live or (
                repo.get_run(run_id).status in ENDED and not repo.list_events(run_id, after_id=last)
            ):
                return
            if wait is not None:
                wait(poll_s)
            elif waiter is not None:
                waiter(poll_s)
            else:
                DOORBELL.wait(rang, poll_s)


@contextlib.contextmanager
def _listener(repo: Repo) -> Iterator[Callable[[float], None] | None]:
    """On PostgreSQL: a function that waits until the next NOTIFY (or the timeout); else None."""
    if repo.engine.dialect.name != "postgresql":
        yield None
        return
    conn = repo.engine.raw_connection()
    try:
        driver = conn.driver_connection
        assert driver is not None
        driver.autocommit = True
        driver.execute(f"LISTEN {EVENTS_CHANNEL}")

        def wait(timeout: float) -> None:
            for _ in driver.notifies(timeout=max(timeout, 0.05) * 4, stop_after=1):
                pass

        yield wait
    finally:
        conn.close()
