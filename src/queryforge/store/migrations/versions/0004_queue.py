"""The durable queue: leases on runs, run events, schedules and backfills."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(255), nullable=True))
        batch.add_column(_ts("lease_expires_at", True))
        batch.add_column(_ts("heartbeat_at", True))
        batch.add_column(sa.Column("lost_leases", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(_ts("cancel_requested_at", True))
        batch.add_column(_ts("not_before", True))
        batch.add_column(sa.Column("max_concurrent", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("trigger", sa.String(255), nullable=True))
        batch.add_column(sa.Column("backfill_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("resumed_from", sa.String(32), nullable=True))
        batch.add_column(sa.Column("skip_json", sa.Text(), nullable=True))
    op.create_index("ix_runs_status_created_at", "runs", ["status", "created_at"])
    op.create_index(op.f("ix_runs_backfill_id"), "runs", ["backfill_id"])
    op.create_table(
        "run_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        _ts("ts"),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("step_id", sa.String(255), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_events")),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_run_events_run_id_runs")),
    )
    op.create_index(op.f("ix_run_events_org_id"), "run_events", ["org_id"])
    op.create_index("ix_run_events_run_id_id", "run_events", ["run_id", "id"])
    op.create_table(
        "schedules",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("pipeline", sa.Text(), nullable=False),
        sa.Column("cron", sa.String(255), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("params_json", sa.Text(), nullable=False),
        sa.Column("catch_up", sa.String(16), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        _ts("next_fire_at", True),
        _ts("last_fire_at", True),
        _ts("created_at"),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
        sa.UniqueConstraint("org_id", "name", name=op.f("uq_schedules_org_id_name")),
        sa.CheckConstraint("catch_up IN ('none', 'latest', 'all')", name=op.f("ck_schedules_catch_up")),
    )
    op.create_index(op.f("ix_schedules_org_id"), "schedules", ["org_id"])
    op.create_table(
        "backfills",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("pipeline_name", sa.String(255), nullable=False),
        sa.Column("pipeline_version_id", sa.Integer(), nullable=False),
        sa.Column("param", sa.String(255), nullable=False),
        sa.Column("values_json", sa.Text(), nullable=False),
        sa.Column("params_json", sa.Text(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        _ts("created_at"),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backfills")),
        sa.ForeignKeyConstraint(
            ["pipeline_version_id"],
            ["pipeline_versions.id"],
            name=op.f("fk_backfills_pipeline_version_id_pipeline_versions"),
        ),
    )
    op.create_index(op.f("ix_backfills_org_id"), "backfills", ["org_id"])


def downgrade() -> None:
    op.drop_table("backfills")
    op.drop_table("schedules")
    op.drop_table("run_events")
    op.drop_index(op.f("ix_runs_backfill_id"), "runs")
    op.drop_index("ix_runs_status_created_at", "runs")
    # Plain ALTER TABLE (SQLite >= 3.35 has DROP COLUMN): batch mode would recreate `runs`, which the
    # foreign keys of run_steps and check_results forbid.
    for name in (
        "skip_json", "resumed_from", "backfill_id", "trigger", "max_concurrent", "not_before",
        "cancel_requested_at", "lost_leases", "heartbeat_at", "lease_expires_at", "lease_owner",
    ):  # fmt: skip
        op.execute(f'ALTER TABLE runs DROP COLUMN "{name}"')
