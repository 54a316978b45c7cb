"""The in-process event interface: a doorbell rung after every transaction that recorded run events.

The `run_events` rows stay the truth; the bell only wakes whoever follows them in this process (the
embedded mode: `worker --in-process`, `run`, and later the API server) so a follower reads new rows
the moment they commit, instead of on its next poll. Workers in other processes reach followers
through PostgreSQL NOTIFY, or on SQLite through the follower's poll.

`record_event` marks the DBAPI connection; when the connection goes back to the pool (after its
transaction committed or rolled back) the bell rings. A ring after a rollback is a harmless wake-up.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import Engine, event

PENDING = "queryforge_events_pending"


class Doorbell:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.rings = 0

    def ring(self) -> None:
        with self._changed:
            self.rings += 1
            self._changed.notify_all()

    def wait(self, seen: int, timeout: float) -> None:
        """Return once the bell rang after `seen` rings, or after `timeout` seconds."""
        with self._changed:
            self._changed.wait_for(lambda: self.rings != seen, timeout)


DOORBELL = Doorbell()


def _ring_if_pending(dbapi_connection: Any, record: Any) -> None:
    if record is not None and record.info.pop(PENDING, False):
        DOORBELL.ring()


def install(engine: Engine) -> None:
    """Ring the bell whenever a connection of `engine` that recorded events returns to its pool."""
    event.listen(engine, "checkin", _ring_if_pending)
