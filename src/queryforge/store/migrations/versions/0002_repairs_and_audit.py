"""Add repair_logs (the attempts of one `queryforge ask`) and the hash-chained audit_log."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "repair_logs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("ask_id", sa.String(32), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("attempt_number", sa.Integer(), nullable=False),
        sa.Column("request", sa.Text(), nullable=False),
        sa.Column("error_class", sa.String(32), nullable=True),
        sa.Column("original_error", sa.Text(), nullable=True),
        sa.Column("fix_reason", sa.Text(), nullable=True),
        sa.Column("pipeline_json", sa.Text(), nullable=False),
        sa.Column("repair_successful", sa.Boolean(), nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_repair_logs")),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_repair_logs_run_id_runs")),
    )
    op.create_index(op.f("ix_repair_logs_org_id"), "repair_logs", ["org_id"])
    op.create_index(op.f("ix_repair_logs_ask_id"), "repair_logs", ["ask_id"])
    op.create_index(op.f("ix_repair_logs_run_id"), "repair_logs", ["run_id"])

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        _ts("ts"),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("details_json", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
        sa.UniqueConstraint("org_id", "seq", name=op.f("uq_audit_log_org_id_seq")),
        sa.CheckConstraint(
            "decision IN ('allow', 'rewrite', 'block', 'info')", name=op.f("ck_audit_log_decision")
        ),
    )
    op.create_index(op.f("ix_audit_log_org_id"), "audit_log", ["org_id"])


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("repair_logs")
