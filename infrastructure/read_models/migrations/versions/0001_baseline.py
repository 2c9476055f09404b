"""Baseline: the read-model tables as `metadata.create_all` made them before migrations.

A database made that way has no version table;
`agent_ledger.infrastructure.read_models.migrations.upgrade` stamps it at this revision
instead of running it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create the read-model tables and their indexes."""
    op.create_table(
        "audit_checkpoints",
        sa.Column("execution_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("execution_id", "version"),
    )
    op.create_table(
        "audit_reads",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("execution_id", sa.Uuid(), nullable=True),
        sa.Column("correlation_id", sa.String(length=200), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("audit_reads_actor", "audit_reads", ["actor", "id"], unique=False)
    op.create_index("audit_reads_execution", "audit_reads", ["execution_id", "id"], unique=False)
    op.create_table(
        "event_counts",
        sa.Column("type", sa.String(length=60), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("type"),
    )
    op.create_table(
        "event_index",
        sa.Column("position", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("execution_id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(length=60), nullable=False),
        sa.PrimaryKeyConstraint("position"),
    )
    op.create_index(
        "event_index_user_position", "event_index", ["user_id", "position"], unique=False
    )
    op.create_table(
        "execution_status",
        sa.Column("execution_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("process_name", sa.String(length=100), nullable=False),
        sa.Column("process_version", sa.Integer(), nullable=False),
        sa.Column("thread_id", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("current_steps", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("cancellation_requested", sa.Boolean(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column("last_event", sa.String(length=60), nullable=False),
        sa.Column("last_position", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("output", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("execution_id"),
    )
    op.create_index("execution_status_status", "execution_status", ["status"], unique=False)
    op.create_index(
        "execution_status_user_started",
        "execution_status",
        ["user_id", "started_at", "execution_id"],
        unique=False,
    )
    op.create_table(
        "metric_runs",
        sa.Column("execution_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("execution_id", "kind", "key"),
    )
    op.create_index("metric_runs_kind_started", "metric_runs", ["kind", "started_at"], unique=False)
    op.create_index(
        "metric_runs_user_kind_started",
        "metric_runs",
        ["user_id", "kind", "started_at"],
        unique=False,
    )
    op.create_table(
        "process_definitions",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", "version"),
    )
    op.create_table(
        "projection_tracking",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "projection_versions",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("active_version", sa.Integer(), nullable=False),
        sa.Column("building_version", sa.Integer(), nullable=True),
        sa.Column("switched_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "step_latency",
        sa.Column("process_name", sa.String(length=100), nullable=False),
        sa.Column("step_id", sa.String(length=100), nullable=False),
        sa.Column("bucket", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("sum_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("process_name", "step_id", "bucket"),
    )
    op.create_table(
        "step_status",
        sa.Column("execution_id", sa.Uuid(), nullable=False),
        sa.Column("step_id", sa.String(length=100), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("process_name", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("agent", sa.String(length=200), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("skip_reason", sa.String(length=100), nullable=True),
        sa.Column("last_event", sa.String(length=60), nullable=False),
        sa.Column("last_position", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("execution_id", "step_id"),
    )
    op.create_table(
        "token_revocations",
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("revoked_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("subject"),
    )


def downgrade() -> None:
    """Drop the read-model tables."""
    op.drop_table("token_revocations")
    op.drop_table("step_status")
    op.drop_table("step_latency")
    op.drop_table("projection_versions")
    op.drop_table("projection_tracking")
    op.drop_table("process_definitions")
    op.drop_index("metric_runs_user_kind_started", table_name="metric_runs")
    op.drop_index("metric_runs_kind_started", table_name="metric_runs")
    op.drop_table("metric_runs")
    op.drop_index("execution_status_user_started", table_name="execution_status")
    op.drop_index("execution_status_status", table_name="execution_status")
    op.drop_table("execution_status")
    op.drop_index("event_index_user_position", table_name="event_index")
    op.drop_table("event_index")
    op.drop_table("event_counts")
    op.drop_index("audit_reads_execution", table_name="audit_reads")
    op.drop_index("audit_reads_actor", table_name="audit_reads")
    op.drop_table("audit_reads")
    op.drop_table("audit_checkpoints")
