"""Schedules: each user's schedules, as their `Schedule` aggregates last left them.

Revision ID: 0006
Revises: 0005

The aggregates' events are in the schedules' own event store; this table lists them for the
API and tells every worker's scheduler which schedules run. A table already there (made by
`metadata.create_all` from the current tables.py, then stamped at the baseline) is left
alone.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create `schedules`."""
    if "schedules" in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        "schedules",
        sa.Column("schedule_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("process", sa.String(length=100), nullable=False),
        sa.Column("process_version", sa.Integer(), nullable=True),
        sa.Column("input", sa.JSON(), nullable=False),
        sa.Column("cron", sa.String(length=200), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("overlap", sa.String(length=20), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("ticks_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_tick", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_execution_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("schedule_id"),
    )
    op.create_index("schedules_owner_name", "schedules", ["user_id", "name"], unique=True)


def downgrade() -> None:
    """Drop `schedules`."""
    op.drop_index("schedules_owner_name", table_name="schedules")
    op.drop_table("schedules")
