"""Create the metadata schema: orgs, pipelines and versions, runs, steps, checks, schema snapshots."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "orgs",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orgs")),
    )

    op.create_table(
        "pipelines",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        _ts("created_at"),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipelines")),
        sa.UniqueConstraint("org_id", "name", name=op.f("uq_pipelines_org_id_name")),
    )
    op.create_index(op.f("ix_pipelines_org_id"), "pipelines", ["org_id"])

    op.create_table(
        "pipeline_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("pipeline_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("spec_json", sa.Text(), nullable=False),
        sa.Column("source_path", sa.Text(), nullable=True),
        _ts("created_at"),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipeline_versions")),
        sa.ForeignKeyConstraint(
            ["pipeline_id"], ["pipelines.id"], name=op.f("fk_pipeline_versions_pipeline_id_pipelines")
        ),
        sa.UniqueConstraint(
            "pipeline_id", "content_hash", name=op.f("uq_pipeline_versions_pipeline_id_content_hash")
        ),
        sa.UniqueConstraint("pipeline_id", "version", name=op.f("uq_pipeline_versions_pipeline_id_version")),
    )
    op.create_index(op.f("ix_pipeline_versions_org_id"), "pipeline_versions", ["org_id"])

    op.create_table(
        "runs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("pipeline_id", sa.Integer(), nullable=False),
        sa.Column("pipeline_version_id", sa.Integer(), nullable=False),
        sa.Column("pipeline_name", sa.String(255), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("params_json", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        _ts("created_at"),
        _ts("started_at", nullable=True),
        _ts("ended_at", nullable=True),
        sa.Column("error_class", sa.String(64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("staged_json", sa.Text(), nullable=True),
        sa.Column("result_json", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("attempt", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
        sa.ForeignKeyConstraint(
            ["pipeline_id"], ["pipelines.id"], name=op.f("fk_runs_pipeline_id_pipelines")
        ),
        sa.ForeignKeyConstraint(
            ["pipeline_version_id"],
            ["pipeline_versions.id"],
            name=op.f("fk_runs_pipeline_version_id_pipeline_versions"),
        ),
        sa.UniqueConstraint("org_id", "idempotency_key", name=op.f("uq_runs_org_id_idempotency_key")),
        sa.CheckConstraint("mode IN ('sandbox', 'publish')", name=op.f("ck_runs_mode")),
    )
    op.create_index(op.f("ix_runs_org_id"), "runs", ["org_id"])
    op.create_index(op.f("ix_runs_org_id_created_at"), "runs", ["org_id", "created_at"])
    op.create_index(op.f("ix_runs_org_id_status"), "runs", ["org_id", "status"])

    op.create_table(
        "run_steps",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("step_id", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        _ts("started_at", nullable=True),
        _ts("ended_at", nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column("rows_in", sa.BigInteger(), nullable=True),
        sa.Column("rows_out", sa.BigInteger(), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=True),
        sa.Column("output_hash", sa.String(128), nullable=True),
        sa.Column("retry_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("failure_class", sa.String(64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_steps")),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_run_steps_run_id_runs")),
        sa.UniqueConstraint("run_id", "step_id", name=op.f("uq_run_steps_run_id_step_id")),
    )
    op.create_index(op.f("ix_run_steps_org_id"), "run_steps", ["org_id"])

    op.create_table(
        "check_results",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("step_id", sa.String(255), nullable=False),
        sa.Column("rule_name", sa.String(255), nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("column_name", sa.String(255), nullable=True),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("violations", sa.BigInteger(), nullable=False),
        sa.Column("samples_json", sa.Text(), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_check_results")),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_check_results_run_id_runs")),
    )
    op.create_index(op.f("ix_check_results_org_id"), "check_results", ["org_id"])
    op.create_index(op.f("ix_check_results_run_id"), "check_results", ["run_id"])

    op.create_table(
        "schema_snapshots",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("connection", sa.String(255), nullable=False),
        sa.Column("table_name", sa.String(512), nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("exists", sa.Boolean(), nullable=False),
        sa.Column("columns_json", sa.Text(), nullable=False),
        sa.Column("row_count", sa.BigInteger(), nullable=True),
        _ts("taken_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schema_snapshots")),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_schema_snapshots_run_id_runs")),
        sa.CheckConstraint("phase IN ('before', 'after')", name=op.f("ck_schema_snapshots_phase")),
    )
    op.create_index(op.f("ix_schema_snapshots_org_id"), "schema_snapshots", ["org_id"])
    op.create_index(op.f("ix_schema_snapshots_run_id"), "schema_snapshots", ["run_id"])

    now = datetime.now(UTC)
    if op.get_context().dialect.name == "sqlite":
        now = now.replace(tzinfo=None)  # SQLite stores naive UTC text, as the store's UTCDateTime does
    orgs = sa.table(
        "orgs",
        sa.column("id", sa.String()),
        sa.column("name", sa.String()),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    op.bulk_insert(orgs, [{"id": "default", "name": "Default", "created_at": now}])


def downgrade() -> None:
    for table in ("schema_snapshots", "check_results", "run_steps", "runs", "pipeline_versions", "pipelines"):
        op.drop_table(table)
    op.drop_table("orgs")
