"""Named fault-injection points, switched on only by the QUERYFORGE_FAULTS environment variable.

Crash and resume tests need to stop a process at an exact instant (say, inside the publish
transaction). `QUERYFORGE_FAULTS="publish.in_transaction=sleep:30"` makes that point sleep;
`=raise` raises a TransientError; `=exit` ends the process abruptly. Unset, a point costs one
dict lookup.
"""

from __future__ import annotations

import os
import time

from .errors import TransientError


def _active() -> dict[str, str]:
    spec = os.environ.get("QUERYFORGE_FAULTS", "")
    return dict(item.split("=", 1) for item in spec.split(",") if "=" in item)


def point(name: str) -> None:
    action = _active().get(name)
    if action is None:
        return
    if action.startswith("sleep:"):
        time.sleep(float(action.split(":", 1)[1]))
    elif action == "raise":
        raise TransientError(f"fault injected at {name}")
    elif action == "exit":
        os._exit(137)
