"""The metadata database as the run queue: claims with leases, heartbeats, reaping, positions.

A worker claims the oldest queued run of the org with the fewest running runs (fair across orgs),
as long as that org is under its concurrency limit (and the run's pipeline under its own). It owns
the run until `lease_expires_at` and renews the lease with heartbeats; a run whose lease ran out
(its worker died) goes back to the queue, and after `max_lost_leases` lost leases to the dead-letter
queue instead.

PostgreSQL: each org is claimed from under a transaction-scoped advisory lock (so counting the org's
running runs and claiming one cannot interleave with another worker doing the same), and the run
row is locked with `FOR UPDATE SKIP LOCKED`. SQLite: the claim is one `BEGIN IMMEDIATE` transaction,
which serialises it against every other writer.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, or_, select, update

from queryforge.store import tables as t
from queryforge.store.repo import record_event

QUEUED, RUNNING, DEAD = "queued", "running", "dead_lettered"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Claim:
    run_id: str
    org_id: str
    owner: str
    attempt: int  # 1 for the first claim of a run, 2 after a resume, ...
    lost_leases: int
    # This process's monotonic clock just before the lease was written: the lease runs at least
    # `lease_s` from here, which is what the worker's self-fencing counts from.
    at: float = field(default_factory=time.monotonic)

    @property
    def tries(self) -> int:
        """Attempts of the run that ended by themselves, this one included: what the run-level
        retry policy (`QUERYFORGE_RUN_ATTEMPTS`) counts. An attempt whose worker died is not one:
        `max_lost_leases` bounds those, and a run killed once must still get all its retries."""
        return max(1, self.attempt - self.lost_leases)


@dataclass(frozen=True)
class Outstanding:
    """What a draining worker still waits for (`RunQueue.outstanding`)."""

    queued: int  # runnable now or after a retry backoff
    leased: int  # running under a lease: finished by its holder, or back in the queue once it runs out
    leases_until: datetime | None  # the latest of those leases, as last renewed

    def __bool__(self) -> bool:
        return bool(self.queued or self.leased)


@dataclass(frozen=True)
class Beat:
    """A heartbeat's answer: the lease is renewed; whether somebody asked the run to stop."""

    cancel_requested: bool


class RunQueue:
    def __init__(
        self,
        engine: Engine,
        *,
        lease_s: float = 30.0,
        max_lost_leases: int = 3,
        org_limit: int = 3,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.lease = timedelta(seconds=lease_s)
        self.max_lost_leases = max_lost_leases
        self.org_limit = org_limit
        self.clock = clock
        self._postgres = engine.dialect.name == "postgresql"
        # Expired leases are looked for at most this often (a lease is only noticed late by this much).
        self.reap_every_s = min(lease_s / 4, 2.0)
        self._reaped = -float("inf")

    # ------------------------------------------------------------ claiming
    def claim(self, owner: str) -> Claim | None:
        """Claim one runnable run for `owner`, or None when nothing may run now."""
        if time.monotonic() - self._reaped >= self.reap_every_s:
            self.reap()
            self._reaped = time.monotonic()
        at = time.monotonic()
        now = self.clock()
        for org in self._orgs_in_turn(now):
            with self.engine.begin() as conn:
                claim = self._claim_in(conn, org, owner, now)
            if claim is not None:
                return replace(claim, at=at)
        return None

    def _orgs_in_turn(self, now: datetime) -> list[str]:
        """Orgs with runnable queued runs, fewest running first, then the oldest waiting run first."""
        r = t.runs
        runnable = and_(r.c.status == QUEUED, or_(r.c.not_before.is_(None), r.c.not_before <= now))
        running = func.count().filter(r.c.status == RUNNING)
        oldest = func.min(r.c.created_at).filter(runnable)
        query = (
            select(r.c.org_id, running.label("running"), oldest.label("oldest"))
            .where(r.c.status.in_((QUEUED, RUNNING)))
            .group_by(r.c.org_id)
            .having(oldest.is_not(None))
            .order_by(running, oldest)
        )
        with self.engine.connect() as conn:
            return [row.org_id for row in conn.execute(query) if row.running < self.org_limit]

    def _claim_in(self, conn: Connection, org: str, owner: str, now: datetime) -> Claim | None:
        r = t.runs
        if self._postgres:
            conn.execute(select(func.pg_advisory_xact_lock(_org_lock(org))))
        counts: dict[str, int] = dict(
            conn.execute(
                select(r.c.pipeline_name, func.count())
                .where(r.c.org_id == org, r.c.status == RUNNING)
                .group_by(r.c.pipeline_name)
            ).all()
        )
        if sum(counts.values()) >= self.org_limit:
            return None
        candidates = conn.execute(
            select(r.c.id, r.c.pipeline_name, r.c.max_concurrent, r.c.attempt, r.c.lost_leases)
            .where(
                r.c.org_id == org,
                r.c.status == QUEUED,
                or_(r.c.not_before.is_(None), r.c.not_before <= now),
            )
            .order_by(r.c.created_at, r.c.id)
            .limit(50)
            .with_for_update(skip_locked=True)
        ).all()
        for row in candidates:
            if row.max_concurrent is not None and counts.get(row.pipeline_name, 0) >= row.max_concurrent:
                continue
            return self._start(conn, row.id, org, owner, now, row.attempt, row.lost_leases)
        return None

    def _start(
        self, conn: Connection, run_id: str, org: str, owner: str, now: datetime, attempt: int, lost: int
    ) -> Claim:
        """Mark a run running under `owner`'s lease (inside the claiming transaction)."""
        r = t.runs
        conn.execute(
            update(r)
            .where(r.c.id == run_id)
            .values(
                status=RUNNING,
                lease_owner=owner,
                lease_expires_at=now + self.lease,
                heartbeat_at=now,
                attempt=r.c.attempt + 1,
                started_at=func.coalesce(r.c.started_at, now),
                ended_at=None,
            )
        )
        record_event(conn, org, run_id, "run", RUNNING, detail=f"claimed by {owner}")
        return Claim(run_id, org, owner, attempt + 1, lost)

    def take(self, run_id: str, owner: str) -> Claim | None:
        """Claim one particular queued run now, outside the limits (a run started from the command line)."""
        r = t.runs
        at = time.monotonic()
        now = self.clock()
        with self.engine.begin() as conn:
            row = conn.execute(
                select(r.c.org_id, r.c.attempt, r.c.lost_leases, r.c.status)
                .where(r.c.id == run_id)
                .with_for_update()
            ).first()
            if row is None or row.status != QUEUED:
                return None
            return replace(
                self._start(conn, run_id, row.org_id, owner, now, row.attempt, row.lost_leases), at=at
            )

    # ------------------------------------------------------------ owning
    def heartbeat(self, run_id: str, owner: str) -> Beat | None:
        """Renew the lease; None when `owner` no longer holds it (the run was reaped or re-claimed)."""
        r = t.runs
        now = self.clock()
        with self.engine.begin() as conn:
            # Not filtered on status: the run may have ended a moment ago, still under our lease.
            found = conn.execute(
                update(r)
                .where(r.c.id == run_id, r.c.lease_owner == owner)
                .values(lease_expires_at=now + self.lease, heartbeat_at=now)
                .returning(r.c.cancel_requested_at)
            ).first()
        if found is None:
            return None
        return Beat(cancel_requested=found.cancel_requested_at is not None)

    def release(self, run_id: str, owner: str) -> None:
        """Drop the lease after the run ended (its final status is already written). A run still
        `running` (its runner crashed) keeps the lease, which runs out: the run is then resumed."""
        r = t.runs
        with self.engine.begin() as conn:
            conn.execute(
                update(r)
                .where(r.c.id == run_id, r.c.lease_owner == owner, r.c.status != RUNNING)
                .values(lease_owner=None, lease_expires_at=None)
            )

    def cancel(self, run_id: str) -> str | None:
        """A queued run is cancelled at once (`cancelled`); a running one is asked to stop
        (`cancelling`: its worker sees it at the next heartbeat). None when it is neither."""
        r = t.runs
        now = self.clock()
        with self.engine.begin() as conn:
            row = conn.execute(
                update(r)
                .where(r.c.id == run_id, r.c.status == QUEUED)
                .values(status="cancelled", ended_at=now, error_message="cancelled before it started")
                .returning(r.c.org_id)
            ).first()
            if row is not None:
                record_event(conn, row.org_id, run_id, "run", "cancelled")
                return "cancelled"
            row = conn.execute(
                update(r)
                .where(r.c.id == run_id, r.c.status == RUNNING)
                .values(cancel_requested_at=func.coalesce(r.c.cancel_requested_at, now))
                .returning(r.c.org_id)
            ).first()
            if row is not None:
                record_event(conn, row.org_id, run_id, "run", "cancelling")
                return "cancelling"
        return None

    # ------------------------------------------------------------ recovering
    def reap(self) -> list[tuple[str, str]]:
        """Runs whose lease ran out (the worker died): back to the queue, or dead-lettered after
        `max_lost_leases` lost leases. Returns (run id, new status) pairs."""
        r = t.runs
        now = self.clock()
        expired = and_(r.c.status == RUNNING, r.c.lease_expires_at.is_not(None), r.c.lease_expires_at < now)
        changed: list[tuple[str, str]] = []
        with self.engine.begin() as conn:
            rows = conn.execute(
                select(r.c.id, r.c.org_id, r.c.lost_leases, r.c.lease_owner)
                .where(expired)
                .with_for_update(skip_locked=True)
            ).all()
            for row in rows:
                lost = row.lost_leases + 1
                dead = lost >= self.max_lost_leases
                values: dict[str, Any] = {
                    "status": DEAD if dead else QUEUED,
                    "lost_leases": lost,
                    "lease_owner": None,
                    "lease_expires_at": None,
                }
                if dead:
                    values |= {
                        "ended_at": now,
                        "error_class": "INTERNAL",
                        "error_message": f"The run's worker stopped answering {lost} times (lost leases); "
                        "dead-lettered. Hint: see its steps with 'queryforge runs show', then "
                        "'queryforge dlq requeue' it",
                    }
                conn.execute(update(r).where(r.c.id == row.id, expired).values(values))
                record_event(
                    conn,
                    row.org_id,
                    row.id,
                    "run",
                    values["status"],
                    detail=f"lease of {row.lease_owner} lost",
                )
                changed.append((row.id, values["status"]))
        return changed

    # ------------------------------------------------------------ looking
    def positions(self, org_id: str) -> dict[str, int]:
        """Queued runs of an org and their place in its line (1 = claimed next)."""
        r = t.runs
        with self.engine.connect() as conn:
            ids = conn.scalars(
                select(r.c.id)
                .where(r.c.org_id == org_id, r.c.status == QUEUED)
                .order_by(r.c.created_at, r.c.id)
            ).all()
        return {run_id: i for i, run_id in enumerate(ids, 1)}

    def outstanding(self) -> Outstanding:
        """Runs some worker still has to execute: queued ones (those waiting out a retry backoff
        too) and running ones held under a lease. A lease's holder may be alive or dead, which
        nobody can tell before the lease runs out; if it died, the run comes back to the queue then.
        `worker --drain` exits only when there are none. A run `running` with no lease at all is
        not counted: no claim can ever take it."""
        r = t.runs
        leased = and_(r.c.status == RUNNING, r.c.lease_expires_at.is_not(None))
        query = select(
            func.count().filter(r.c.status == QUEUED),
            func.count().filter(leased),
            func.max(r.c.lease_expires_at).filter(leased),
        ).where(or_(r.c.status == QUEUED, leased))
        with self.engine.connect() as conn:
            queued, running, until = conn.execute(query).one()
        return Outstanding(int(queued or 0), int(running or 0), until)

    def counts(self) -> dict[str, dict[str, int]]:
        """Per org: how many runs are queued and running."""
        r = t.runs
        query = (
            select(r.c.org_id, r.c.status, func.count())
            .where(r.c.status.in_((QUEUED, RUNNING)))
            .group_by(r.c.org_id, r.c.status)
        )
        out: dict[str, dict[str, int]] = {}
        with self.engine.connect() as conn:
            for org, status, n in conn.execute(query):
                out.setdefault(org, {QUEUED: 0, RUNNING: 0})[status] = n
        return out


def _org_lock(org: str) -> int:
    """A stable 63-bit advisory-lock key per org."""
    return (0x5146 << 47) | zlib.crc32(f"qf-claim:{org}".encode())
