"""The metadata store: one engine per process, org-scoped repositories over SQLAlchemy Core.

SQLite (the laptop default) runs in WAL mode with `synchronous=NORMAL`, a 30 s busy timeout and
foreign keys on; write transactions start with `BEGIN IMMEDIATE` so a read-then-write transaction
waits for the lock instead of failing with SQLITE_BUSY when another worker wrote in between.
PostgreSQL URLs (`postgresql://...`) use the psycopg 3 driver.

Every call of `Repo` is one short transaction and every query filters on the repo's org: a run of
another org is indistinguishable from a run that does not exist.

Example::

    store = Store("sqlite:///.queryforge/meta.db")
    store.migrate()
    repo = store.repo("default", user="alice")
    pipeline_id, version_id, number = repo.save_pipeline_version("daily", digest, spec_json, None)
    run_id = repo.create_run(
        pipeline_id=pipeline_id, version_id=version_id, pipeline_name="daily", mode="sandbox", params={}
    )
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    Select,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, CursorResult, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.sql import Executable

from queryforge.errors import ConfigError, NotFoundError

if TYPE_CHECKING:  # alembic is imported lazily: it costs ~0.2 s of every CLI start
    from alembic.config import Config

from queryforge.store import doorbell
from queryforge.store import tables as t

HEAD_REVISION = "0004"  # the newest migration; a test keeps it equal to alembic's head

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
MIN_PREFIX = 6
"""Shortest run-id prefix `Repo.get_run` resolves."""

_READ = "queryforge_read_only"
# Serialises concurrent `migrate()` calls of several processes on one PostgreSQL database.
_PG_MIGRATE_LOCK = 0x5146_6D69_6772_6174  # "QFmigrat"
_SAVE_ATTEMPTS = 5
_RUN_FIELDS = frozenset(
    {
        "status", "started_at", "ended_at", "error_class", "error_message", "staged", "result", "attempt",
        "lease_owner", "lease_expires_at", "heartbeat_at", "lost_leases", "cancel_requested_at",
        "not_before", "skip",
    }
)  # fmt: skip
EVENTS_CHANNEL = "queryforge_run_events"
"""PostgreSQL NOTIFY channel every run and step event is published on (payload: the event as JSON)."""
_REPAIR_FIELDS = frozenset({"run_id", "error_class", "original_error", "fix_reason", "repair_successful"})
MAX_REQUEST_CHARS = 4000
"""`add_repair_log` keeps only this many characters of the user's prompt."""


class RecordNotFound(NotFoundError, LookupError):
    """A run, step or pipeline version that does not exist in this org, or an ambiguous id prefix."""


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run as stored; `params`, `staged` and `result` are parsed JSON."""

    id: str
    org_id: str
    pipeline_name: str
    pipeline_id: int
    pipeline_version_id: int
    version: int
    mode: str
    status: str
    params: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    error_class: str | None
    error_message: str | None
    staged: list[Any] | dict[str, Any] | None
    result: dict[str, Any] | None
    idempotency_key: str | None
    attempt: int
    created_by: str
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    heartbeat_at: datetime | None = None
    lost_leases: int = 0
    cancel_requested_at: datetime | None = None
    not_before: datetime | None = None
    max_concurrent: int | None = None
    trigger: str | None = None
    backfill_id: str | None = None
    resumed_from: str | None = None
    skip: list[str] = field(default_factory=list)  # steps skipped on purpose (resume --skip)


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One step run as stored."""

    step_id: str
    kind: str
    status: str
    started_at: datetime | None
    ended_at: datetime | None
    duration_ms: float | None
    rows_in: int | None
    rows_out: int | None
    bytes: int | None
    output_hash: str | None
    retry_count: int
    failure_class: str | None
    message: str | None


def normalize_url(url: str) -> URL:
    """Parse a store URL; `postgresql://` and `postgres://` get the psycopg 3 driver."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise ConfigError(
            f"Invalid metadata store URL '{url}'",
            hint="use sqlite:///path/to/meta.db or postgresql://user@host/db",
        ) from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"Unsupported metadata store '{parsed.get_backend_name()}' in URL "
            f"'{parsed.render_as_string(hide_password=True)}'",
            hint="the metadata store runs on sqlite:///... or postgresql://...",
        )
    return parsed


def make_engine(url: str) -> Engine:
    """An engine for the metadata store, with the SQLite settings described in this module."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "postgresql":
        engine = create_engine(parsed, pool_pre_ping=True)
        doorbell.install(engine)
        return engine
    database = parsed.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args={"timeout": 30})
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    doorbell.install(engine)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # Take BEGIN away from the sqlite3 module so transactions (and DDL) are ours, see _sqlite_on_begin.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(_READ) else "BEGIN IMMEDIATE")


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for the packaged migrations; no alembic.ini needed.

    Args:
        connection: the connection the migrations run on (stored in `config.attributes`).
    """
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def new_run_id() -> str:
    """`r` + 12 hex digits of the millisecond clock + 8 random hex digits: sortable by creation time."""
    return f"r{time.time_ns() // 1_000_000:012x}{secrets.token_hex(4)}"


def new_ask_id() -> str:
    """`a` + 12 hex digits of the millisecond clock + 8 random hex digits, like `new_run_id`."""
    return f"a{time.time_ns() // 1_000_000:012x}{secrets.token_hex(4)}"


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _plain_json(value: Any) -> Any:
    """`value` as JSON gives it back: non-JSON values become strings, dict keys become strings."""
    return json.loads(json.dumps(value, default=str))


def audit_hash(
    prev_hash: str,
    *,
    org_id: str,
    seq: int,
    ts: datetime,
    actor: str,
    action: str,
    decision: str,
    reason: str,
    details: Mapping[str, Any],
) -> str:
    """The hash of one audit_log row, chaining it to the row before (`prev_hash`, '' for seq 1).

    Exactly::

        sha256(utf8(prev_hash + canonical)).hexdigest()
        canonical = json.dumps(
            {"org_id": org_id, "seq": seq, "ts": ts.astimezone(UTC).isoformat(timespec="microseconds"),
             "actor": actor, "action": action, "decision": decision, "reason": reason, "details": details},
            sort_keys=True, separators=(",", ":"), ensure_ascii=False,
        )

    i.e. `ts` like `2024-05-01T12:00:00.000000+00:00` and `details` as parsed from `details_json`
    (which stores that same canonical JSON of the details).
    """
    if ts.tzinfo is None:
        raise ValueError(f"naive datetime {ts!r}: audit timestamps must be timezone-aware")
    canonical = _canonical_json(
        {
            "org_id": org_id,
            "seq": seq,
            "ts": ts.astimezone(UTC).isoformat(timespec="microseconds"),
            "actor": actor,
            "action": action,
            "decision": decision,
            "reason": reason,
            "details": details,
        }
    )
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


def encode_watermark(value: Any) -> tuple[str, str]:
    """`(value_type, text)`: how `Repo.set_watermark` stores a high-water mark.

    - bool → `bool`: `true` or `false`
    - int → `int`: its decimal digits, e.g. `-42`
    - float → `float`: its `repr`, the shortest text that parses back exactly, e.g. `0.1`, `1e+100`
    - Decimal → `decimal`: its `str`, which keeps the scale: `1.50`, `1E+3`, `-0.00`
    - str → `string`: the string itself
    - datetime.date → `date`: `2024-05-01`
    - naive datetime → `timestamp`: `2024-05-01T12:00:00.000001` (always 6 fraction digits)
    - aware datetime → `timestamptz`: `2024-05-01T12:00:00.000001+02:00` (its own UTC offset)

    `decode_watermark` turns the pair back into an equal value of the same type (aware datetimes
    come back with a fixed-offset `timezone` of the same UTC offset).

    Raises:
        TypeError: any other type (subclasses of the types above are stored as the base type).
        ValueError: a NaN or infinite float or Decimal (meaningless as a mark), or a string
            containing NUL (PostgreSQL text cannot hold it).
    """
    # A bool is an int and a datetime is a date: test the subclass first.
    if isinstance(value, bool):
        return "bool", "true" if value else "false"
    if isinstance(value, int):
        return "int", str(int(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"watermark {value!r} is not a finite number")
        return "float", repr(float(value))
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"watermark {value!r} is not a finite number")
        return "decimal", str(value)
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"watermark {value[:80]!r} contains a NUL character")
        return "string", str.__str__(value)
    if isinstance(value, datetime):
        kind = "timestamp" if value.utcoffset() is None else "timestamptz"
        # `datetime.isoformat` itself: subclasses such as pandas.Timestamp format differently.
        return kind, datetime.isoformat(value, timespec="microseconds")
    if isinstance(value, date):
        return "date", date.isoformat(value)
    raise TypeError(
        f"Unsupported watermark type {type(value).__name__}: expected int, float, Decimal, str, "
        "date, datetime or bool"
    )


def decode_watermark(value_type: str, text: str) -> Any:
    """The Python value of a stored `(value_type, text)` pair; see `encode_watermark`.

    Raises:
        ValueError: an unknown `value_type` (written by a newer release?) or text it cannot parse.
    """
    if value_type == "bool":
        if text not in ("true", "false"):
            raise ValueError(f"invalid bool watermark {text!r}")
        return text == "true"
    if value_type == "int":
        return int(text)
    if value_type == "float":
        return float(text)
    if value_type == "decimal":
        return Decimal(text)
    if value_type == "string":
        return text
    if value_type == "date":
        return date.fromisoformat(text)
    if value_type in ("timestamp", "timestamptz"):
        parsed = datetime.fromisoformat(text)
        if (parsed.utcoffset() is None) != (value_type == "timestamp"):
            raise ValueError(f"invalid {value_type} watermark {text!r}")
        return parsed
    raise ValueError(f"Unknown watermark type '{value_type}': expected one of {', '.join(t.WATERMARK_TYPES)}")


def _check_length(field: str, value: str | None, limit: int) -> None:
    # PostgreSQL would reject the value, SQLite would store it: fail the same way on both.
    if value is not None and len(value) > limit:
        raise ValueError(f"{field} is {len(value)} characters long; at most {limit} fit: {value[:80]!r}")


def record_event(
    conn: Connection,
    org_id: str,
    run_id: str,
    kind: str,
    status: str,
    *,
    step_id: str | None = None,
    detail: str | None = None,
) -> None:
    """Insert one run event and, on PostgreSQL, NOTIFY it (delivered when the transaction commits);
    in this process, followers are woken when the connection returns to the pool (`doorbell`)."""
    ts = _now()
    conn.info[doorbell.PENDING] = True
    conn.execute(
        insert(t.run_events).values(
            org_id=org_id, run_id=run_id, ts=ts, kind=kind, step_id=step_id, status=status, detail=detail
        )
    )
    if conn.dialect.name == "postgresql":
        payload = _dumps(
            {
                "org_id": org_id,
                "run_id": run_id,
                "ts": ts.isoformat(),
                "kind": kind,
                "step_id": step_id,
                "status": status,
                "detail": detail,
            }
        )
        conn.execute(select(func.pg_notify(EVENTS_CHANNEL, payload[:7900])))


def _new_id(result: CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    if key is None:  # pragma: no cover - only for statements that are not single-row inserts
        raise RuntimeError("the insert returned no primary key")
    return int(key[0])


def _now() -> datetime:
    return datetime.now(UTC)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str, separators=(",", ":"))


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class Store:
    """The metadata database: owns the engine, migrates, and hands out org-scoped repositories.

    Args:
        url: `sqlite:///path/meta.db` (parent folders are created) or `postgresql://user@host/db`.

    Raises:
        ConfigError: the URL is invalid or names an unsupported database.
    """

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self.url = self.engine.url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        """`sqlite` or `postgresql`."""
        return self.engine.dialect.name

    def migrate(self, revision: str = "head") -> None:
        """Upgrade the schema to `revision` (default: the newest). Idempotent; call it at every start."""
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(_PG_MIGRATE_LOCK)))
            from alembic import command

            command.upgrade(alembic_config(conn), revision)

    def ensure_schema(self) -> None:
        """Migrate only when the database is not at HEAD_REVISION (the common case costs one query)."""
        from sqlalchemy import inspect, text

        with self.engine.connect() as conn:
            current = None
            if inspect(conn).has_table("alembic_version"):
                current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        if current != HEAD_REVISION:
            self.migrate()

    def revision(self) -> str | None:
        """The schema revision of the database, or None before the first `migrate()`."""
        with self.engine.connect() as conn:
            conn.execution_options(**{_READ: True})
            from alembic.runtime.migration import MigrationContext

            return MigrationContext.configure(conn).get_current_revision()

    def repo(self, org_id: str = "default", user: str = "local") -> Repo:
        """A repository that sees and writes only `org_id`'s rows, recording `user` as their creator."""
        return Repo(self.engine, org_id=org_id, user=user)

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.dispose()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"


class Repo:
    """Reads and writes of one org. Each method is one short transaction.

    Reads of a run that belongs to another org raise `RecordNotFound` (a `LookupError`), exactly as
    if it did not exist.
    """

    def __init__(self, engine: Engine, *, org_id: str, user: str) -> None:
        self.engine = engine
        self.org_id = org_id
        self.user = user
        self._postgres = engine.dialect.name == "postgresql"
        self._known_runs: set[str] = set()  # runs already checked to be this org's; ownership never changes

    # -- transactions -----------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            conn.execution_options(**{_READ: True})
            yield conn

    def _require_run(self, conn: Connection, run_id: str) -> None:
        if run_id in self._known_runs:
            return
        found = conn.scalar(select(t.runs.c.id).where(t.runs.c.id == run_id, t.runs.c.org_id == self.org_id))
        if found is None:
            raise self._run_not_found(run_id)
        self._known_runs.add(run_id)

    def _run_not_found(self, run_id: str) -> RecordNotFound:
        return RecordNotFound(
            f"Run '{run_id}' not found", where=f"org '{self.org_id}'", hint="list runs for valid ids"
        )

    # -- pipelines --------------------------------------------------------------------------------

    def save_pipeline_version(
        self, name: str, content_hash: str, spec_json: str, source_path: str | None
    ) -> tuple[int, int, int]:
        """Record a pipeline version; saving the same content hash again returns the existing one.

        Returns:
            `(pipeline_id, version_id, version_number)`; numbers count 1, 2, 3... per pipeline.
        """
        p, v = t.pipelines, t.pipeline_versions
        for attempt in range(_SAVE_ATTEMPTS):
            try:
                with self._write() as conn:
                    now = _now()
                    # The row lock serialises version numbering per pipeline on PostgreSQL (SQLite
                    # already holds the database write lock from BEGIN IMMEDIATE).
                    pipeline_id = conn.scalar(
                        select(p.c.id).where(p.c.org_id == self.org_id, p.c.name == name).with_for_update()
                    )
                    if pipeline_id is None:
                        created = conn.execute(
                            insert(p).values(
                                org_id=self.org_id, name=name, created_at=now, created_by=self.user
                            )
                        )
                        pipeline_id = _new_id(created)
                    existing = conn.execute(
                        select(v.c.id, v.c.version).where(
                            v.c.pipeline_id == pipeline_id, v.c.content_hash == content_hash
                        )
                    ).first()
                    if existing is not None:
                        return int(pipeline_id), int(existing.id), int(existing.version)
                    last = conn.scalar(select(func.max(v.c.version)).where(v.c.pipeline_id == pipeline_id))
                    number = int(last or 0) + 1
                    saved = conn.execute(
                        insert(v).values(
                            org_id=self.org_id,
                            pipeline_id=pipeline_id,
                            version=number,
                            content_hash=content_hash,
                            spec_json=spec_json,
                            source_path=source_path,
                            created_at=now,
                            created_by=self.user,
                        )
                    )
                    return int(pipeline_id), _new_id(saved), number
            except IntegrityError:
                # Another writer created the same pipeline first (PostgreSQL); look again.
                if attempt == _SAVE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def get_pipeline_version(self, version_id: int) -> dict[str, Any]:
        """The version's fields.

        Returns:
            Keys id, pipeline_id, name, version, content_hash, spec_json, source_path, created_at,
            created_by.
        """
        p, v = t.pipelines, t.pipeline_versions
        query = (
            select(
                v.c.id,
                v.c.pipeline_id,
                p.c.name,
                v.c.version,
                v.c.content_hash,
                v.c.spec_json,
                v.c.source_path,
                v.c.created_at,
                v.c.created_by,
            )
            .join_from(v, p, v.c.pipeline_id == p.c.id)
            .where(v.c.id == version_id, v.c.org_id == self.org_id)
        )
        with self._read() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise RecordNotFound(f"Pipeline version {version_id} not found", where=f"org '{self.org_id}'")
        return dict(row._mapping)

    # -- runs -------------------------------------------------------------------------------------

    def create_run(
        self,
        *,
        pipeline_id: int,
        version_id: int,
        pipeline_name: str,
        mode: str,
        params: Mapping[str, Any],
        status: str = "queued",
        idempotency_key: str | None = None,
        trigger: str | None = None,
        max_concurrent: int | None = None,
        backfill_id: str | None = None,
        resumed_from: str | None = None,
    ) -> str:
        """Create a run and return its id; a known `idempotency_key` returns the existing run's id.

        Raises:
            ValueError: `mode` is not `sandbox` or `publish`.
            RecordNotFound: the pipeline version does not exist in this org.
        """
        if mode not in t.RUN_MODES:
            raise ValueError(f"Unknown run mode '{mode}': expected one of {', '.join(t.RUN_MODES)}")
        r, v = t.runs, t.pipeline_versions
        try:
            with self._write() as conn:
                if idempotency_key is not None:
                    existing = self._run_by_key(conn, idempotency_key)
                    if existing is not None:
                        return existing
                version = conn.scalar(
                    select(v.c.id).where(
                        v.c.id == version_id, v.c.pipeline_id == pipeline_id, v.c.org_id == self.org_id
                    )
                )
                if version is None:
                    raise RecordNotFound(
                        f"Pipeline version {version_id} of pipeline {pipeline_id} not found",
                        where=f"org '{self.org_id}'",
                    )
                run_id = new_run_id()
                conn.execute(
                    insert(r).values(
                        id=run_id,
                        org_id=self.org_id,
                        pipeline_id=pipeline_id,
                        pipeline_version_id=version_id,
                        pipeline_name=pipeline_name,
                        mode=mode,
                        status=status,
                        params_json=_dumps(dict(params)),
                        idempotency_key=idempotency_key,
                        created_at=_now(),
                        created_by=self.user,
                        attempt=0,
                        trigger=trigger,
                        max_concurrent=max_concurrent,
                        backfill_id=backfill_id,
                        resumed_from=resumed_from,
                    )
                )
                self._event(conn, run_id, "run", status, detail=trigger)
                return run_id
        except IntegrityError:
            # A concurrent submission with the same key won the race: it is the run to return.
            if idempotency_key is not None:
                with self._read() as conn:
                    existing = self._run_by_key(conn, idempotency_key)
                if existing is not None:
                    return existing
            raise

    def _run_by_key(self, conn: Connection, key: str) -> str | None:
        r = t.runs
        found: str | None = conn.scalar(
            select(r.c.id).where(r.c.org_id == self.org_id, r.c.idempotency_key == key)
        )
        return found

    @staticmethod
    def _run_query() -> Select[Any]:
        r, v = t.runs, t.pipeline_versions
        return select(r, v.c.version).join_from(r, v, r.c.pipeline_version_id == v.c.id)

    @staticmethod
    def _to_run(row: Row[Any]) -> RunRecord:
        m = row._mapping
        return RunRecord(
            id=m["id"],
            org_id=m["org_id"],
            pipeline_name=m["pipeline_name"],
            pipeline_id=m["pipeline_id"],
            pipeline_version_id=m["pipeline_version_id"],
            version=m["version"],
            mode=m["mode"],
            status=m["status"],
            params=json.loads(m["params_json"]),
            created_at=m["created_at"],
            started_at=m["started_at"],
            ended_at=m["ended_at"],
            error_class=m["error_class"],
            error_message=m["error_message"],
            staged=_loads(m["staged_json"]),
            result=_loads(m["result_json"]),
            idempotency_key=m["idempotency_key"],
            attempt=m["attempt"],
            created_by=m["created_by"],
            lease_owner=m["lease_owner"],
            lease_expires_at=m["lease_expires_at"],
            heartbeat_at=m["heartbeat_at"],
            lost_leases=m["lost_leases"],
            cancel_requested_at=m["cancel_requested_at"],
            not_before=m["not_before"],
            max_concurrent=m["max_concurrent"],
            trigger=m["trigger"],
            backfill_id=m["backfill_id"],
            resumed_from=m["resumed_from"],
            skip=_loads(m["skip_json"]) or [],
        )

    def get_run(self, run_id: str) -> RunRecord:
        """The run with this id, or with this unique id prefix of at least 6 characters.

        Raises:
            RecordNotFound: no such run in this org, or the prefix matches several runs.
        """
        r = t.runs
        base = self._run_query().where(r.c.org_id == self.org_id)
        with self._read() as conn:
            row = conn.execute(base.where(r.c.id == run_id)).first()
            if row is None and len(run_id) >= MIN_PREFIX:
                matches = conn.execute(
                    base.where(r.c.id.startswith(run_id, autoescape=True)).order_by(r.c.id).limit(2)
                ).all()
                if len(matches) > 1:
                    raise RecordNotFound(
                        f"Run id prefix '{run_id}' is ambiguous: it matches {matches[0].id}, "
                        f"{matches[1].id} and maybe more",
                        hint="give more characters of the run id",
                    )
                row = matches[0] if matches else None
        if row is None:
            raise self._run_not_found(run_id)
        return self._to_run(row)

    def list_runs(
        self,
        *,
        limit: int | None = 20,
        status: str | None = None,
        pipeline: str | None = None,
        mode: str | None = None,
        trigger: str | None = None,
    ) -> list[RunRecord]:
        """The org's runs, newest first, optionally only one status, pipeline name, mode or trigger
        (`limit` None: all of them)."""
        r = t.runs
        query = self._run_query().where(r.c.org_id == self.org_id)
        if trigger is not None:
            query = query.where(r.c.trigger == trigger)
        if status is not None:
            query = query.where(r.c.status == status)
        if mode is not None:
            query = query.where(r.c.mode == mode)
        if pipeline is not None:
            query = query.where(r.c.pipeline_name == pipeline)
        query = query.order_by(r.c.created_at.desc(), r.c.id.desc()).limit(limit)
        with self._read() as conn:
            return [self._to_run(row) for row in conn.execute(query)]

    def update_run(self, run_id: str, **fields: Any) -> None:
        """Set some of: status, started_at, ended_at, error_class, error_message, staged, result, attempt.

        `staged` and `result` are stored as JSON (values JSON cannot hold are stored as strings).

        Raises:
            TypeError: an unknown field.
            RecordNotFound: no such run in this org.
        """
        unknown = set(fields) - _RUN_FIELDS
        if unknown:
            raise TypeError(
                f"update_run() got unknown field(s) {', '.join(sorted(unknown))}; "
                f"expected some of {', '.join(sorted(_RUN_FIELDS))}"
            )
        values: dict[str, Any] = {}
        for name, value in fields.items():
            if name in ("staged", "result", "skip"):
                values[f"{name}_json"] = None if value is None else _dumps(value)
            elif isinstance(value, datetime) and value.tzinfo is None:
                raise ValueError(f"update_run({name}=...) needs a timezone-aware datetime, got {value!r}")
            else:
                values[name] = value
        r = t.runs
        with self._write() as conn:
            if not values:
                self._require_run(conn, run_id)
                return
            done = conn.execute(update(r).where(r.c.id == run_id, r.c.org_id == self.org_id).values(values))
            if done.rowcount == 0:
                raise self._run_not_found(run_id)
            if "status" in values:
                detail = values.get("error_class") or values.get("lease_owner")
                self._event(conn, run_id, "run", values["status"], detail=detail)

    def stream_progress(self, run_id: str, result: dict[str, Any], detail: str) -> None:
        """A running stream's figures (the run's result) and an event saying them in a line."""
        r = t.runs
        with self._write() as conn:
            conn.execute(
                update(r)
                .where(r.c.id == run_id, r.c.org_id == self.org_id)
                .values(result_json=_dumps(result))
            )
            self._event(conn, run_id, "stream", "progress", detail=detail[:500])

    # -- steps ------------------------------------------------------------------------------------

    def start_step(self, run_id: str, step_id: str, kind: str) -> None:
        """Mark a step `running` from now. Starting it again (a retry) counts one more `retry_count`
        and clears the previous outcome."""
        s = t.run_steps
        now = _now()
        values = {
            "org_id": self.org_id,
            "run_id": run_id,
            "step_id": step_id,
            "kind": kind,
            "status": "running",
            "started_at": now,
            "retry_count": 0,
        }
        again = {
            "kind": kind,
            "status": "running",
            "started_at": now,
            "ended_at": None,
            "duration_ms": None,
            "rows_in": None,
            "rows_out": None,
            "bytes": None,
            "output_hash": None,
            "failure_class": None,
            "message": None,
            "retry_count": s.c.retry_count + 1,
        }
        statement: Executable
        if self._postgres:
            statement = (
                postgresql.insert(s)
                .values(values)
                .on_conflict_do_update(index_elements=["run_id", "step_id"], set_=again)
            )
        else:
            statement = (
                sqlite.insert(s)
                .values(values)
                .on_conflict_do_update(index_elements=["run_id", "step_id"], set_=again)
            )
        with self._write() as conn:
            self._require_run(conn, run_id)
            conn.execute(statement)
            self._event(conn, run_id, "step", "running", step_id=step_id, detail=kind)

    def finish_step(
        self,
        run_id: str,
        step_id: str,
        *,
        status: str,
        rows_in: int | None = None,
        rows_out: int | None = None,
        bytes: int | None = None,
        output_hash: str | None = None,
        failure_class: str | None = None,
        message: str | None = None,
    ) -> None:
        """Record a started step's outcome; sets `ended_at` and `duration_ms`.

        Raises:
            RecordNotFound: the step was never started in this run (or the run is not this org's).
        """
        s = t.run_steps
        now = _now()
        with self._write() as conn:
            row = conn.execute(
                select(s.c.id, s.c.started_at).where(
                    s.c.run_id == run_id, s.c.step_id == step_id, s.c.org_id == self.org_id
                )
            ).first()
            if row is None:
                raise RecordNotFound(
                    f"Step '{step_id}' of run '{run_id}' was never started",
                    where=f"org '{self.org_id}'",
                    hint="call start_step before finish_step",
                )
            started: datetime | None = row.started_at
            duration = None if started is None else (now - started).total_seconds() * 1000.0
            conn.execute(
                update(s)
                .where(s.c.id == row.id)
                .values(
                    status=status,
                    ended_at=now,
                    duration_ms=duration,
                    rows_in=rows_in,
                    rows_out=rows_out,
                    bytes=bytes,
                    output_hash=output_hash,
                    failure_class=failure_class,
                    message=message,
                )
            )
            self._event(conn, run_id, "step", status, step_id=step_id, detail=failure_class)

    def note_step(self, run_id: str, step_id: str, message: str) -> None:
        """Replace a recorded step's note, leaving its status and times alone (an extract's snapshot
        hash, computed in the background, arrives after the step ended)."""
        s = t.run_steps
        with self._write() as conn:
            conn.execute(
                update(s)
                .where(s.c.run_id == run_id, s.c.step_id == step_id, s.c.org_id == self.org_id)
                .values(message=message)
            )

    def list_steps(self, run_id: str) -> list[StepRecord]:
        """The run's steps in the order they were first started."""
        s = t.run_steps
        query = (
            select(
                s.c.step_id,
                s.c.kind,
                s.c.status,
                s.c.started_at,
                s.c.ended_at,
                s.c.duration_ms,
                s.c.rows_in,
                s.c.rows_out,
                s.c.bytes,
                s.c.output_hash,
                s.c.retry_count,
                s.c.failure_class,
                s.c.message,
            )
            .where(s.c.run_id == run_id, s.c.org_id == self.org_id)
            .order_by(s.c.id)
        )
        with self._read() as conn:
            self._require_run(conn, run_id)
            return [StepRecord(**row._mapping) for row in conn.execute(query)]

    # -- checks and schema snapshots --------------------------------------------------------------

    def add_check_results(self, run_id: str, results: list[dict[str, Any]]) -> None:
        """Store check outcomes. Keys: step_id, rule_name, rule, column (optional), severity, passed,
        violations, samples (a list of row dicts; values JSON cannot hold are stored as strings)."""
        now = _now()
        rows = [
            {
                "org_id": self.org_id,
                "run_id": run_id,
                "step_id": result["step_id"],
                "rule_name": result["rule_name"],
                "rule": result["rule"],
                "column_name": result.get("column"),
                "severity": result["severity"],
                "passed": bool(result["passed"]),
                "violations": int(result["violations"]),
                "samples_json": _dumps(result.get("samples") or []),
                "created_at": now,
            }
            for result in results
        ]
        with self._write() as conn:
            self._require_run(conn, run_id)
            if rows:
                conn.execute(insert(t.check_results), rows)

    def list_check_results(self, run_id: str) -> list[dict[str, Any]]:
        """The run's check outcomes in the order they were added, with the keys `add_check_results` takes."""
        c = t.check_results
        query = select(c).where(c.c.run_id == run_id, c.c.org_id == self.org_id).order_by(c.c.id)
        with self._read() as conn:
            self._require_run(conn, run_id)
            rows = conn.execute(query).all()
        return [
            {
                "step_id": row.step_id,
                "rule_name": row.rule_name,
                "rule": row.rule,
                "column": row.column_name,
                "severity": row.severity,
                "passed": bool(row.passed),
                "violations": row.violations,
                "samples": json.loads(row.samples_json),
            }
            for row in rows
        ]

    def add_schema_snapshot(
        self,
        run_id: str | None,
        *,
        connection: str,
        table: str,
        phase: str,
        exists: bool,
        columns: list[tuple[str, str]],
        rows: int,
    ) -> None:
        """Record a table's shape before or after a publish (`run_id` None: taken outside a run).

        Raises:
            ValueError: `phase` is not `before` or `after`.
        """
        if phase not in t.SNAPSHOT_PHASES:
            raise ValueError(
                f"Unknown snapshot phase '{phase}': expected one of {', '.join(t.SNAPSHOT_PHASES)}"
            )
        values = {
            "org_id": self.org_id,
            "run_id": run_id,
            "connection": connection,
            "table_name": table,
            "phase": phase,
            "exists": exists,
            "columns_json": _dumps([[name, type_] for name, type_ in columns]),
            "row_count": rows,
            "taken_at": _now(),
        }
        with self._write() as conn:
            if run_id is not None:
                self._require_run(conn, run_id)
            conn.execute(insert(t.schema_snapshots).values(values))

    def list_schema_snapshots(self, run_id: str) -> list[dict[str, Any]]:
        """Keys: run_id, connection, table, phase, exists, columns (list of (name, type)), rows, taken_at."""
        ss = t.schema_snapshots
        query = select(ss).where(ss.c.run_id == run_id, ss.c.org_id == self.org_id).order_by(ss.c.id)
        with self._read() as conn:
            self._require_run(conn, run_id)
            rows = conn.execute(query).all()
        return [
            {
                "run_id": row.run_id,
                "connection": row.connection,
                "table": row.table_name,
                "phase": row.phase,
                "exists": bool(row.exists),
                "columns": [(name, type_) for name, type_ in json.loads(row.columns_json)],
                "rows": row.row_count,
                "taken_at": row.taken_at,
            }
            for row in rows
        ]

    # -- repair logs (the attempts of one `queryforge ask`) -------------------------------------

    def new_ask_id(self) -> str:
        """A new id grouping the attempts of one `queryforge ask` session (see `new_ask_id`)."""
        return new_ask_id()

    def add_repair_log(
        self,
        *,
        ask_id: str,
        attempt: int,
        request: str,
        pipeline_json: str,
        run_id: str | None = None,
        error_class: str | None = None,
        original_error: str | None = None,
        fix_reason: str | None = None,
        repair_successful: bool | None = None,
    ) -> int:
        """Record one attempt of an ask and return the log's id.

        `request` (the user's prompt) is cut to its first 4000 characters; `pipeline_json` is the
        pipeline tried in this attempt, stored as given; `repair_successful` None means not known yet.

        Raises:
            RecordNotFound: `run_id` is not a run of this org.
            ValueError: `ask_id` is longer than 32 characters or `error_class` longer than 32.
        """
        _check_length("ask_id", ask_id, 32)
        _check_length("error_class", error_class, 32)
        now = _now()
        values = {
            "org_id": self.org_id,
            "ask_id": ask_id,
            "run_id": run_id,
            "attempt_number": attempt,
            "request": request[:MAX_REQUEST_CHARS],
            "error_class": error_class,
            "original_error": original_error,
            "fix_reason": fix_reason,
            "pipeline_json": pipeline_json,
            "repair_successful": repair_successful,
            "created_at": now,
            "updated_at": now,
            "created_by": self.user,
        }
        with self._write() as conn:
            if run_id is not None:
                self._require_run(conn, run_id)
            return _new_id(conn.execute(insert(t.repair_logs).values(values)))

    def update_repair_log(self, log_id: int, **fields: Any) -> None:
        """Set some of: run_id, error_class, original_error, fix_reason, repair_successful.

        Also moves `updated_at` to now.

        Raises:
            TypeError: an unknown field.
            RecordNotFound: no such repair log in this org, or `run_id` is not a run of this org.
            ValueError: `error_class` longer than 32 characters.
        """
        unknown = set(fields) - _REPAIR_FIELDS
        if unknown:
            raise TypeError(
                f"update_repair_log() got unknown field(s) {', '.join(sorted(unknown))}; "
                f"expected some of {', '.join(sorted(_REPAIR_FIELDS))}"
            )
        _check_length("error_class", fields.get("error_class"), 32)
        rl = t.repair_logs
        with self._write() as conn:
            if fields.get("run_id") is not None:
                self._require_run(conn, fields["run_id"])
            done = conn.execute(
                update(rl)
                .where(rl.c.id == log_id, rl.c.org_id == self.org_id)
                .values({**fields, "updated_at": _now()})
            )
            if done.rowcount == 0:
                raise RecordNotFound(f"Repair log {log_id} not found", where=f"org '{self.org_id}'")

    def list_repair_logs(
        self, *, ask_id: str | None = None, run_id: str | None = None
    ) -> list[dict[str, Any]]:
        """The org's repair logs, each a dict keyed by column name (`pipeline_json` stays text).

        `ask_id` selects one ask's attempts; `run_id` selects every attempt of the ask(s) that run
        belongs to (an unknown run gives []); both: attempts matching both; neither: all of the org's.
        Ordered by ask_id (which sorts by creation time), then attempt_number.
        """
        rl = t.repair_logs
        query = select(rl).where(rl.c.org_id == self.org_id)
        if ask_id is not None:
            query = query.where(rl.c.ask_id == ask_id)
        if run_id is not None:
            asks = select(rl.c.ask_id).where(rl.c.org_id == self.org_id, rl.c.run_id == run_id)
            query = query.where(rl.c.ask_id.in_(asks.scalar_subquery()))
        query = query.order_by(rl.c.ask_id, rl.c.attempt_number, rl.c.id)
        with self._read() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    # -- audit log (append-only, hash-chained per org) -------------------------------------------

    def audit(self, *, action: str, decision: str, reason: str, details: dict[str, Any] | None = None) -> int:
        """Append one entry to the org's audit log, chained to the previous one; returns its seq.

        `actor` is the repo's user and `ts` now. `details` is stored as canonical JSON (values JSON
        cannot hold are stored as strings; None is stored as {}). See `audit_hash` for the hash.
        Concurrent writers get consecutive seqs: SQLite's write transactions start with
        `BEGIN IMMEDIATE`, and on PostgreSQL the transaction first takes
        `pg_advisory_xact_lock(hashtext(org_id))`.

        Raises:
            ValueError: `decision` is not allow, rewrite, block or info; `action` is longer than 64.
        """
        if decision not in t.AUDIT_DECISIONS:
            raise ValueError(
                f"Unknown audit decision '{decision}': expected one of {', '.join(t.AUDIT_DECISIONS)}"
            )
        _check_length("action", action, 64)
        plain = _plain_json(details or {})
        a = t.audit_log
        with self._write() as conn:
            if self._postgres:
                conn.execute(select(func.pg_advisory_xact_lock(func.hashtext(self.org_id))))
            last = conn.execute(
                select(a.c.seq, a.c.hash).where(a.c.org_id == self.org_id).order_by(a.c.seq.desc()).limit(1)
            ).first()
            seq, prev_hash = (1, "") if last is None else (int(last.seq) + 1, str(last.hash))
            ts = _now()
            digest = audit_hash(
                prev_hash,
                org_id=self.org_id,
                seq=seq,
                ts=ts,
                actor=self.user,
                action=action,
                decision=decision,
                reason=reason,
                details=plain,
            )
            conn.execute(
                insert(a).values(
                    org_id=self.org_id,
                    seq=seq,
                    ts=ts,
                    actor=self.user,
                    action=action,
                    decision=decision,
                    reason=reason,
                    details_json=_canonical_json(plain),
                    prev_hash=prev_hash,
                    hash=digest,
                )
            )
            return seq

    def _audit_query(self) -> Select[Any]:
        a = t.audit_log
        columns = ("seq", "ts", "actor", "action", "decision", "reason", "details_json", "prev_hash", "hash")
        return select(*(a.c[name] for name in columns)).where(a.c.org_id == self.org_id)

    def list_audit(self, *, limit: int = 100, action: str | None = None) -> list[dict[str, Any]]:
        """The org's newest audit entries first, optionally of one action.

        Keys: seq, ts, actor, action, decision, reason, details (parsed), prev_hash, hash.
        """
        a = t.audit_log
        query = self._audit_query()
        if action is not None:
            query = query.where(a.c.action == action)
        query = query.order_by(a.c.seq.desc()).limit(limit)
        with self._read() as conn:
            rows = conn.execute(query).all()
        entries = []
        for row in rows:
            entry = dict(row._mapping)
            entry["details"] = json.loads(entry.pop("details_json"))
            entries.append(entry)
        return entries

    def verify_audit_chain(self) -> int | None:
        """None if the org's audit chain is intact, else the first seq that breaks it.

        A row breaks the chain when its seq is not the previous seq + 1 (1 for the first row), its
        prev_hash is not the previous row's hash, or its hash does not match its content. Removing
        the newest rows cannot be detected from the table alone.
        """
        query = self._audit_query().order_by(t.audit_log.c.seq)
        expected_seq, prev_hash = 1, ""
        with self._read() as conn:
            for row in conn.execute(query):
                try:
                    details = json.loads(row.details_json)
                except ValueError:
                    return int(row.seq)
                digest = audit_hash(
                    prev_hash,
                    org_id=self.org_id,
                    seq=row.seq,
                    ts=row.ts,
                    actor=row.actor,
                    action=row.action,
                    decision=row.decision,
                    reason=row.reason,
                    details=details,
                )
                if row.seq != expected_seq or row.prev_hash != prev_hash or row.hash != digest:
                    return int(row.seq)
                expected_seq, prev_hash = expected_seq + 1, row.hash
        return None

    # -- watermarks (high-water marks of incremental extracts) -----------------------------------

    # -- backfills --------------------------------------------------------------------------------

    def create_backfill(
        self, *, pipeline_name: str, version_id: int, param: str, values: list[Any], params: Mapping[str, Any]
    ) -> str:
        backfill_id = "bf_" + secrets.token_hex(6)
        with self._write() as conn:
            conn.execute(
                insert(t.backfills).values(
                    id=backfill_id,
                    org_id=self.org_id,
                    pipeline_name=pipeline_name,
                    pipeline_version_id=version_id,
                    param=param,
                    values_json=_dumps(values),
                    params_json=_dumps(dict(params)),
                    status="active",
                    created_at=_now(),
                    created_by=self.user,
                )
            )
        return backfill_id

    def get_backfill(self, backfill_id: str) -> dict[str, Any]:
        b = t.backfills
        with self._read() as conn:
            row = conn.execute(
                select(b).where(b.c.org_id == self.org_id, b.c.id.startswith(backfill_id, autoescape=True))
            ).first()
        if row is None:
            raise RecordNotFound(
                f"Backfill '{backfill_id}' not found", hint="list them with 'queryforge backfills list'"
            )
        return self._backfill(row)

    def list_backfills(self, limit: int = 50) -> list[dict[str, Any]]:
        b = t.backfills
        query = select(b).where(b.c.org_id == self.org_id).order_by(b.c.created_at.desc()).limit(limit)
        with self._read() as conn:
            return [self._backfill(row) for row in conn.execute(query)]

    def set_backfill_status(self, backfill_id: str, status: str) -> None:
        b = t.backfills
        with self._write() as conn:
            conn.execute(
                update(b).where(b.c.id == backfill_id, b.c.org_id == self.org_id).values(status=status)
            )

    def runs_of_backfill(self, backfill_id: str) -> list[RunRecord]:
        r = t.runs
        query = self._run_query().where(r.c.org_id == self.org_id, r.c.backfill_id == backfill_id)
        with self._read() as conn:
            return [self._to_run(row) for row in conn.execute(query.order_by(r.c.created_at, r.c.id))]

    @staticmethod
    def _backfill(row: Row[Any]) -> dict[str, Any]:
        m = row._mapping
        return {
            "id": m["id"],
            "pipeline": m["pipeline_name"],
            "pipeline_version_id": m["pipeline_version_id"],
            "param": m["param"],
            "values": json.loads(m["values_json"]),
            "params": json.loads(m["params_json"]),
            "status": m["status"],
            "created_at": m["created_at"],
            "created_by": m["created_by"],
        }

    def run_by_key(self, key: str) -> str | None:
        """The run submitted with this idempotency key, if any."""
        with self._read() as conn:
            return self._run_by_key(conn, key)

    # -- events -----------------------------------------------------------------------------------

    def _event(
        self,
        conn: Connection,
        run_id: str,
        kind: str,
        status: str,
        *,
        step_id: str | None = None,
        detail: str | None = None,
    ) -> None:
        """Record a state change in the same transaction as the change itself (the source of truth),
        and on PostgreSQL announce it to listeners once that transaction commits."""
        record_event(conn, self.org_id, run_id, kind, status, step_id=step_id, detail=detail)

    def list_events(self, run_id: str, *, after_id: int = 0) -> list[dict[str, Any]]:
        """The run's events in order; `after_id` continues where a previous call stopped."""
        e = t.run_events
        query = (
            select(e.c.id, e.c.run_id, e.c.ts, e.c.kind, e.c.step_id, e.c.status, e.c.detail)
            .where(e.c.run_id == run_id, e.c.org_id == self.org_id, e.c.id > after_id)
            .order_by(e.c.id)
        )
        with self._read() as conn:
            self._require_run(conn, run_id)
            return [dict(row._mapping) for row in conn.execute(query)]

    def get_watermark(self, pipeline: str, step_id: str) -> Any | None:
        """The high-water mark of `pipeline`'s step `step_id`, or None if it has none yet.

        Returns:
            The value `set_watermark` stored, as its own type again: int, float, Decimal (with its
            scale), str, date, datetime (naive, or aware with the stored UTC offset) or bool.

        Raises:
            ValueError: the stored row cannot be decoded (see `decode_watermark`).
        """
        w = t.watermarks
        query = select(w.c.value_type, w.c.value).where(
            w.c.org_id == self.org_id, w.c.pipeline == pipeline, w.c.step_id == step_id
        )
        with self._read() as conn:
            row = conn.execute(query).first()
        return None if row is None else decode_watermark(row.value_type, row.value)

    def set_watermark(self, pipeline: str, step_id: str, value: Any, run_id: str | None = None) -> None:
        """Store `value` as the high-water mark of `pipeline`'s step `step_id`, replacing any earlier one.

        The caller decides when a mark advances (only when its run publishes); this method does not
        compare with the previous value. `run_id` records the run that advanced it. See
        `encode_watermark` for the supported types and how they are stored.

        Raises:
            TypeError: `value` is not an int, float, Decimal, str, date, datetime or bool.
            ValueError: `value` is NaN, infinite or a string with NUL; `pipeline` or `step_id` is
                longer than 255 characters.
            RecordNotFound: `run_id` is not a run of this org.
        """
        value_type, text = encode_watermark(value)
        _check_length("pipeline", pipeline, 255)
        _check_length("step_id", step_id, 255)
        w = t.watermarks
        values = {"value_type": value_type, "value": text, "run_id": run_id, "updated_at": _now()}
        statement = (
            update(w)
            .where(w.c.org_id == self.org_id, w.c.pipeline == pipeline, w.c.step_id == step_id)
            .values(values)
        )
        for attempt in range(2):
            try:
                with self._write() as conn:
                    if run_id is not None:
                        self._require_run(conn, run_id)
                    if conn.execute(statement).rowcount == 0:
                        conn.execute(
                            insert(w).values(org_id=self.org_id, pipeline=pipeline, step_id=step_id, **values)
                        )
                return
            except IntegrityError:
                # A concurrent writer inserted the same mark first (PostgreSQL): now the update hits it.
                if attempt == 1:
                    raise

    def list_watermarks(self, pipeline: str | None = None) -> list[dict[str, Any]]:
        """The org's high-water marks (only `pipeline`'s, if given), ordered by pipeline, step_id.

        Returns:
            Dicts with keys pipeline, step_id, value_type, value (decoded as by `get_watermark`),
            run_id, updated_at.

        Raises:
            ValueError: a stored row cannot be decoded (see `decode_watermark`).
        """
        w = t.watermarks
        query = select(w.c.pipeline, w.c.step_id, w.c.value_type, w.c.value, w.c.run_id, w.c.updated_at)
        query = query.where(w.c.org_id == self.org_id)
        if pipeline is not None:
            query = query.where(w.c.pipeline == pipeline)
        query = query.order_by(w.c.pipeline, w.c.step_id)
        with self._read() as conn:
            rows = conn.execute(query).all()
        marks = []
        for row in rows:
            mark = dict(row._mapping)
            mark["value"] = decode_watermark(row.value_type, row.value)
            marks.append(mark)
        return marks

    def delete_watermark(self, pipeline: str, step_id: str | None = None) -> int:
        """Forget the high-water mark of one step, or of every step of `pipeline` (`step_id` None).

        The next incremental run of those steps reads everything again (a full refresh).

        Returns:
            The number of marks deleted (0 if there were none).
        """
        w = t.watermarks
        statement = delete(w).where(w.c.org_id == self.org_id, w.c.pipeline == pipeline)
        if step_id is not None:
            statement = statement.where(w.c.step_id == step_id)
        with self._write() as conn:
            return int(conn.execute(statement).rowcount)

    def __repr__(self) -> str:
        return f"Repo(org_id={self.org_id!r}, user={self.user!r})"
