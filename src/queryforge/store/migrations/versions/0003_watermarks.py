"""Add watermarks: the high-water mark of each incremental extract step, per org and pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "watermarks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("pipeline", sa.String(255), nullable=False),
        sa.Column("step_id", sa.String(255), nullable=False),
        sa.Column("value_type", sa.String(16), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=True),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_watermarks")),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_watermarks_run_id_runs")),
        sa.UniqueConstraint(
            "org_id", "pipeline", "step_id", name=op.f("uq_watermarks_org_id_pipeline_step_id")
        ),
    )
    op.create_index(op.f("ix_watermarks_org_id"), "watermarks", ["org_id"])


def downgrade() -> None:
    op.drop_table("watermarks")
