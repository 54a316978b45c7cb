"""The metadata schema as SQLAlchemy Core tables: the single description the repository queries.

The Alembic revisions under `migrations/versions/` create these tables explicitly (they never import
this module, so old revisions stay frozen); `tests/integration/test_store.py` compares the migrated
database with `metadata` so the two cannot drift apart.

Every tenant-owned row carries `org_id`. It is deliberately not a foreign key to `orgs`: orgs are
managed by the security layer, and a repository for a new org must work before anyone registers it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

# Named constraints make later migrations (SQLite batch mode in particular) able to drop them.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

RUN_MODES = ("sandbox", "publish")
SNAPSHOT_PHASES = ("before", "after")
AUDIT_DECISIONS = ("allow", "rewrite", "block", "info")
CATCH_UP_POLICIES = ("none", "latest", "all")
WATERMARK_TYPES = ("int", "float", "decimal", "string", "date", "timestamp", "timestamptz", "bool")


class UTCDateTime(TypeDecorator[datetime]):
    """`DateTime(timezone=True)` that always hands back aware UTC datetimes.

    SQLite has no time zones: values are stored as naive UTC text and get `tzinfo=UTC` on the way
    out. PostgreSQL stores `timestamptz`; values are converted to UTC on the way out too, so callers
    never see the session's time zone.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store only accepts timezone-aware datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _org_id() -> Column[str]:
    return Column("org_id", String(64), nullable=False, index=True)


def _created_by() -> Column[str]:
    return Column("created_by", String(255), nullable=False)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


orgs = Table(
    "orgs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

pipelines = Table(
    "pipelines",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _org_id(),
    Column("name", String(255), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    _created_by(),
    UniqueConstraint("org_id", "name"),
)

pipeline_versions = Table(
    "pipeline_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _org_id(),
    Column("pipeline_id", Integer, ForeignKey("pipelines.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("spec_json", Text, nullable=False),
    Column("source_path", Text, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    _created_by(),
    UniqueConstraint("pipeline_id", "content_hash"),
    # Two writers saving different specs at once must not both get the same number.
    UniqueConstraint("pipeline_id", "version"),
)

runs = Table(
    "runs",
    metadata,
    Column("id", String(32), primary_key=True),
    _org_id(),
    Column("pipeline_id", Integer, ForeignKey("pipelines.id"), nullable=False),
    Column("pipeline_version_id", Integer, ForeignKey("pipeline_versions.id"), nullable=False),
    Column("pipeline_name", String(255), nullable=False),
    Column("mode", String(16), nullable=False),
    Column("status", String(32), nullable=False),
    Column("params_json", Text, nullable=False),
    Column("idempotency_key", String(255), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("started_at", UTCDateTime(), nullable=True),
    Column("ended_at", UTCDateTime(), nullable=True),
    Column("error_class", String(64), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("staged_json", Text, nullable=True),
    Column("result_json", Text, nullable=True),
    _created_by(),
    Column("attempt", Integer, nullable=False, server_default="0"),
    # The queue (migration 0004): a worker owns a claimed run until `lease_expires_at`, renewing it
    # with heartbeats; a run whose lease ran out `max_lost_leases` times is dead-lettered.
    Column("lease_owner", String(255), nullable=True),
    Column("lease_expires_at", UTCDateTime(), nullable=True),
    Column("heartbeat_at", UTCDateTime(), nullable=True),
    Column("lost_leases", Integer, nullable=False, server_default="0"),
    Column("cancel_requested_at", UTCDateTime(), nullable=True),
    Column("not_before", UTCDateTime(), nullable=True),
    Column("max_concurrent", Integer, nullable=True),  # the pipeline's own limit, copied at submit
    Column("trigger", String(255), nullable=True),  # cli, schedule:<name>, after:<run>, backfill:<id>
    Column("backfill_id", String(32), nullable=True, index=True),
    Column("resumed_from", String(32), nullable=True),
    Column("skip_json", Text, nullable=True),  # steps a user chose to skip (skip_and_continue)
    UniqueConstraint("org_id", "idempotency_key"),
    CheckConstraint(_in("mode", RUN_MODES), name="mode"),
    Index("ix_runs_org_id_created_at", "org_id", "created_at"),
    Index("ix_runs_org_id_status", "org_id", "status"),
    Index("ix_runs_status_created_at", "status", "created_at"),
)

run_steps = Table(
    "run_steps",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _org_id(),
    Column("run_id", String(32), ForeignKey("runs.id"), nullable=False),
    Column("step_id", String(255), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("status", String(32), nullable=False),
    Column("started_at", UTCDateTime(), nullable=True),
    Column("ended_at", UTCDateTime(), nullable=True),
    Column("duration_ms", Float, nullable=True),
    Column("rows_in", BigInteger, nullable=True),
    Column("rows_out", BigInteger, nullable=True),
    Column("bytes", BigInteger, nullable=True),
    Column("output_hash", String(128), nullable=True),
    Column("retry_count", Integer, nullable=False, server_default="0"),
    Column("failure_class", String(64), nullable=True),
    Column("message", Text, nullable=True),
    UniqueConstraint("run_id", "step_id"),
)

check_results = Table(
    "check_results",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _org_id(),
    Column("run_id", String(32), ForeignKey("runs.id"), nullable=False, index=True),
    Column("step_id", String(255), nullable=False),
    Column("rule_name", String(255), nullable=False),
    Column("rule", String(64), nullable=False),
    Column("column_name", String(255), nullable=True),
    Column("severity", String(16), nullable=False),
    Column("passed", Boolean, nullable=False),
    Column("violations", BigInteger, nullable=False),
    Column("samples_json", Text, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

schema_snapshots = Table(
    "schema_snapshots",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _org_id(),
    Column("run_id", String(32), ForeignKey("runs.id"), nullable=True, index=True),
    Column("connection", String(255), nullable=False),
    Column("table_name", String(512), nullable=False),
    Column("phase", String(16), nullable=False),
    Column("exists", Boolean, nullable=False),
    Column("columns_json", Text, nullable=False),
    Column("row_count", BigInteger, nullable=True),
    Column("taken_at", UTCDateTime(), nullable=False),
    CheckConstraint(_in("phase", SNAPSHOT_PHASES), name="phase"),
)

# One row per attempt of a `queryforge ask` session (all attempts share `ask_id`): the pipeline that
# was tried, the sandbox run it started (if any), the error it hit and why the next attempt changed it.
repair_logs = Table(
    "repair_logs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _org_id(),
    Column("ask_id", String(32), nullable=False, index=True),
    Column("run_id", String(32), ForeignKey("runs.id"), nullable=True, index=True),
    Column("attempt_number", Integer, nullable=False),
    Column("request", Text, nullable=False),
    Column("error_class", String(32), nullable=True),
    Column("original_error", Text, nullable=True),
    Column("fix_reason", Text, nullable=True),
    Column("pipeline_json", Text, nullable=False),
    Column("repair_successful", Boolean, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    _created_by(),
)

# Append-only, hash-chained per org (see `queryforge.store.repo.audit_hash` for the formula).
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _org_id(),
    Column("seq", Integer, nullable=False),
    Column("ts", UTCDateTime(), nullable=False),
    Column("actor", String(255), nullable=False),
    Column("action", String(64), nullable=False),
    Column("decision", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("details_json", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    UniqueConstraint("org_id", "seq"),
    CheckConstraint(_in("decision", AUDIT_DECISIONS), name="decision"),
)

# The high-water mark of one incremental extract step: the largest cursor value a published run read.
# `value` is the canonical text of a `value_type` value (see `queryforge.store.repo.encode_watermark`).
watermarks = Table(
    "watermarks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _org_id(),
    Column("pipeline", String(255), nullable=False),
    Column("step_id", String(255), nullable=False),
    Column("value_type", String(16), nullable=False),
    Column("value", Text, nullable=False),
    Column("run_id", String(32), ForeignKey("runs.id"), nullable=True),
    Column("updated_at", UTCDateTime(), nullable=False),
    UniqueConstraint("org_id", "pipeline", "step_id"),
)

# Every state change of a run or step, in order: the source of truth that event streams replay.
run_events = Table(
    "run_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _org_id(),
    Column("run_id", String(32), ForeignKey("runs.id"), nullable=False),
    Column("ts", UTCDateTime(), nullable=False),
    Column("kind", String(16), nullable=False),  # run | step
    Column("step_id", String(255), nullable=True),
    Column("status", String(32), nullable=False),
    Column("detail", Text, nullable=True),
    Index("ix_run_events_run_id_id", "run_id", "id"),
)

# A cron schedule of one pipeline; `next_fire_at` is the next tick (UTC) it has not fired yet.
schedules = Table(
    "schedules",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _org_id(),
    Column("name", String(255), nullable=False),
    Column("pipeline", Text, nullable=False),
    Column("cron", String(255), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("params_json", Text, nullable=False),
    Column("catch_up", String(16), nullable=False),
    Column("paused", Boolean, nullable=False),
    Column("next_fire_at", UTCDateTime(), nullable=True),
    Column("last_fire_at", UTCDateTime(), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    _created_by(),
    UniqueConstraint("org_id", "name"),
    CheckConstraint(_in("catch_up", CATCH_UP_POLICIES), name="catch_up"),
)

# One backfill: a run per value of one parameter, all pinned to one pipeline version.
backfills = Table(
    "backfills",
    metadata,
    Column("id", String(32), primary_key=True),
    _org_id(),
    Column("pipeline_name", String(255), nullable=False),
    Column("pipeline_version_id", Integer, ForeignKey("pipeline_versions.id"), nullable=False),
    Column("param", String(255), nullable=False),
    Column("values_json", Text, nullable=False),
    Column("params_json", Text, nullable=False),
    Column("status", String(32), nullable=False),  # active | cancelled
    Column("created_at", UTCDateTime(), nullable=False),
    _created_by(),
)

__all__ = [
    "AUDIT_DECISIONS",
    "CATCH_UP_POLICIES",
    "RUN_MODES",
    "SNAPSHOT_PHASES",
    "WATERMARK_TYPES",
    "UTCDateTime",
    "audit_log",
    "backfills",
    "check_results",
    "metadata",
    "orgs",
    "pipeline_versions",
    "pipelines",
    "repair_logs",
    "run_events",
    "run_steps",
    "runs",
    "schedules",
    "schema_snapshots",
    "watermarks",
]
