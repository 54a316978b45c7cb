"""Cron schedules as stored: one row per schedule, org-scoped like `Repo`, plus the scheduler's view.

The repository does no cron maths (that is `queryforge.runs.scheduler`): callers validate the cron
and time zone and compute `next_fire_at` before they write. The only state the scheduler changes is
`next_fire_at` (and `last_fire_at`), and it changes it by compare-and-set (`advance`), so two
scheduler processes never both move a schedule: the loser learns it and drops its update.

Example::

    schedules = ScheduleRepo(store.engine, org_id="default", user="alice")
    schedules.add(name="daily", pipeline="daily_sales", cron="0 6 * * *", timezone="Europe/Berlin",
                  params={}, catch_up="latest", next_fire_at=next_fires("0 6 * * *", "Europe/Berlin", now)[0])
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from queryforge.errors import UserError, did_you_mean
from queryforge.store import tables as t
from queryforge.store.repo import _READ, RecordNotFound, _check_length, _dumps, _loads, _new_id, _now


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """One schedule as stored; `params` is parsed JSON, datetimes are aware UTC."""

    id: int
    org_id: str
    name: str
    pipeline: str
    cron: str
    timezone: str
    params: dict[str, Any]
    catch_up: str
    paused: bool
    next_fire_at: datetime | None
    last_fire_at: datetime | None
    created_at: datetime
    created_by: str


_Records = list[ScheduleRecord]  # `ScheduleRepo.list` shadows the builtin inside the class body


def _to_record(row: Row[Any]) -> ScheduleRecord:
    m = row._mapping
    return ScheduleRecord(
        id=int(m["id"]),
        org_id=m["org_id"],
        name=m["name"],
        pipeline=m["pipeline"],
        cron=m["cron"],
        timezone=m["timezone"],
        params=_loads(m["params_json"]) or {},
        catch_up=m["catch_up"],
        paused=bool(m["paused"]),
        next_fire_at=m["next_fire_at"],
        last_fire_at=m["last_fire_at"],
        created_at=m["created_at"],
        created_by=m["created_by"],
    )


class ScheduleRepo:
    """The schedules of one org; each method is one short transaction (see `Repo`).

    A schedule of another org is indistinguishable from one that does not exist. Only `due` looks
    across orgs: one scheduler process serves every org of the metadata database.
    """

    def __init__(self, engine: Engine, *, org_id: str, user: str) -> None:
        self.engine = engine
        self.org_id = org_id
        self.user = user

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn.execution_options(**{_READ: True})
            yield conn

    def _not_found(self, conn: Connection, name: str) -> RecordNotFound:
        s = t.schedules
        names = conn.scalars(select(s.c.name).where(s.c.org_id == self.org_id)).all()
        return RecordNotFound(
            f"Schedule '{name}' not found",
            where=f"org '{self.org_id}'",
            hint=did_you_mean(name, names)
            or "there are no schedules yet; add one: queryforge schedules add PIPELINE --cron '0 6 * * *'",
        )

    def _one(self, conn: Connection, name: str) -> ScheduleRecord:
        s = t.schedules
        row = conn.execute(select(s).where(s.c.org_id == self.org_id, s.c.name == name)).first()
        if row is None:
            raise self._not_found(conn, name)
        return _to_record(row)

    def _duplicate(self, name: str) -> UserError:
        return UserError(
            f"A schedule named '{name}' already exists",
            where=f"org '{self.org_id}'",
            hint=f"choose another name with --name, or first remove it: queryforge schedules remove {name}",
        )

    def add(
        self,
        *,
        name: str,
        pipeline: str,
        cron: str,
        timezone: str,
        params: dict[str, Any],
        catch_up: str,
        next_fire_at: datetime | None,
    ) -> ScheduleRecord:
        """Store a new, unpaused schedule; the caller has validated `cron` and `timezone`.

        Raises:
            UserError: the org already has a schedule of that name, or `catch_up` is not
                none, latest or all.
            ValueError: a field is longer than its column (255; the time zone 64).
        """
        if catch_up not in t.CATCH_UP_POLICIES:
            raise UserError(
                f"Unknown catch-up policy '{catch_up}'",
                hint=did_you_mean(catch_up, t.CATCH_UP_POLICIES),
            )
        _check_length("name", name, 255)
        _check_length("cron", cron, 255)
        _check_length("timezone", timezone, 64)
        s = t.schedules
        try:
            with self._write() as conn:
                if conn.scalar(select(s.c.id).where(s.c.org_id == self.org_id, s.c.name == name)):
                    raise self._duplicate(name)
                created = conn.execute(
                    insert(s).values(
                        org_id=self.org_id,
                        name=name,
                        pipeline=pipeline,
                        cron=cron,
                        timezone=timezone,
                        params_json=_dumps(dict(params)),
                        catch_up=catch_up,
                        paused=False,
                        next_fire_at=next_fire_at,
                        last_fire_at=None,
                        created_at=_now(),
                        created_by=self.user,
                    )
                )
                row = conn.execute(select(s).where(s.c.id == _new_id(created))).one()
                return _to_record(row)
        except IntegrityError as exc:
            # A concurrent `add` of the same name committed between our check and our insert.
            raise self._duplicate(name) from exc

    def get(self, name: str) -> ScheduleRecord:
        """The org's schedule called `name`.

        Raises:
            RecordNotFound: (a NotFoundError) no such schedule in this org; the hint names the closest.
        """
        with self._read() as conn:
            return self._one(conn, name)

    def list(self) -> _Records:
        """The org's schedules, ordered by name."""
        s = t.schedules
        query = select(s).where(s.c.org_id == self.org_id).order_by(s.c.name)
        with self._read() as conn:
            return [_to_record(row) for row in conn.execute(query)]

    def set_paused(self, name: str, paused: bool, next_fire_at: datetime | None) -> ScheduleRecord:
        """Pause or resume a schedule and set its `next_fire_at`.

        Pausing passes the unchanged `next_fire_at` (a paused schedule is simply never due).
        Resuming passes a fresh `next_fires(cron, tz, after=now)[0]`: ticks that fell into the pause
        are skipped, whatever the catch-up policy, because the person chose not to run them.

        Raises:
            RecordNotFound: no such schedule in this org.
        """
        s = t.schedules
        with self._write() as conn:
            conn.execute(
                update(s)
                .where(s.c.org_id == self.org_id, s.c.name == name)
                .values(paused=paused, next_fire_at=next_fire_at)
            )
            return self._one(conn, name)

    def remove(self, name: str) -> None:
        """Delete a schedule; the runs it queued stay.

        Raises:
            RecordNotFound: no such schedule in this org.
        """
        s = t.schedules
        with self._write() as conn:
            done = conn.execute(delete(s).where(s.c.org_id == self.org_id, s.c.name == name))
            if done.rowcount == 0:
                raise self._not_found(conn, name)

    def advance(
        self,
        schedule_id: int,
        *,
        expected_next: datetime | None,
        new_next: datetime | None,
        fired_at: datetime | None,
    ) -> bool:
        """Move `next_fire_at` from `expected_next` to `new_next` if nobody moved it meanwhile.

        Compare-and-set, so of two schedulers that handled the same ticks only one moves the
        schedule; the other gets False and must not retry (the ticks it submitted were the same
        runs, thanks to their idempotency keys). `fired_at`, when given, becomes `last_fire_at`.
        A pause or resume in between also changes `next_fire_at`, so it wins over a stale pass.

        Returns:
            True if this call changed the row.
        """
        s = t.schedules
        same = s.c.next_fire_at.is_(None) if expected_next is None else s.c.next_fire_at == expected_next
        values: dict[str, Any] = {"next_fire_at": new_next}
        if fired_at is not None:
            values["last_fire_at"] = fired_at
        statement = update(s).where(s.c.id == schedule_id, s.c.org_id == self.org_id, same).values(values)
        with self._write() as conn:
            return bool(conn.execute(statement).rowcount == 1)

    @staticmethod
    def due(engine: Engine, now: datetime) -> _Records:
        """Every org's unpaused schedules whose `next_fire_at` is at or before `now`, oldest first."""
        s = t.schedules
        query = (
            select(s)
            .where(s.c.paused.is_(False), s.c.next_fire_at.is_not(None), s.c.next_fire_at <= now)
            .order_by(s.c.next_fire_at, s.c.id)
        )
        with engine.connect() as conn:
            conn.execution_options(**{_READ: True})
            return [_to_record(row) for row in conn.execute(query)]

    def __repr__(self) -> str:
        return f"ScheduleRepo(org_id={self.org_id!r}, user={self.user!r})"


__all__ = ["ScheduleRecord", "ScheduleRepo"]
