"""Staging garbage collection: which staging tables no run needs any more, and dropping them.

A staging table's name starts with the id of the run that wrote it. A run that ended (succeeded,
failed, cancelled) needs nothing; an audited run keeps its staging until `commit`; a run still
marked running is taken for dead once it started more than `stale_after_s` ago (its process was
killed). Tables of runs this metadata store does not know are never touched: the staging schema
may be shared with other workspaces.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from ..connectors.registry import ConnectionSet
from ..connectors.sql import SqlConnector
from ..errors import QueryForgeError
from ..secrets import scrub
from ..store import Repo

WAITING = frozenset({"audited", "running", "queued"})


def collect_staging(
    repo: Repo, connections: ConnectionSet, *, dry_run: bool, stale_after_s: float
) -> list[dict[str, Any]]:
    """One dict per dropped (or, with `dry_run`, droppable) table, or per connection that failed."""
    cutoff = datetime.now(UTC) - timedelta(seconds=stale_after_s)
    removed: list[dict[str, Any]] = []
    for name in list(connections.configs):
        try:
            connector = connections.get(name)
            if not isinstance(connector, SqlConnector) or not connector.config.writable:
                continue
            staging = connector.staging_tables()
        except QueryForgeError as exc:
            removed.append({"connection": name, "error": scrub(exc.render())})
            continue
        for staged in staging:
            run_id = staged.split("__", 1)[0]
            try:
                run = repo.get_run(run_id)
            except QueryForgeError:
                continue  # another workspace's run
            started = run.started_at or run.created_at
            if run.status in WAITING and not (run.status == "running" and started <= cutoff):
                continue
            if not dry_run:
                connector.drop_staging(staged)
            removed.append({"connection": name, "table": staged, "run_id": run_id, "run_status": run.status})
    return removed
