"""Webhooks: each user's webhooks, their delivered positions and a delivery log.

Revision ID: 0008
Revises: 0007

Tables already there (made by `metadata.create_all` from the current tables.py, then
stamped at the baseline) are left alone.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create `webhooks` and `webhook_deliveries`."""
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "webhooks" not in existing:
        op.create_table(
            "webhooks",
            sa.Column("user_id", sa.String(length=200), nullable=False),
            sa.Column("name", sa.String(length=64), nullable=False),
            sa.Column("url", sa.Text(), nullable=False),
            sa.Column("types", sa.JSON(), nullable=False),
            sa.Column("secret", sa.Text(), nullable=False),
            sa.Column("state", sa.String(length=20), nullable=False),
            sa.Column("position", sa.BigInteger(), nullable=False),
            sa.Column("attempt", sa.Integer(), nullable=False),
            sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True),
            sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
            sa.Column("last_error", sa.Text(), nullable=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("user_id", "name"),
        )
    if "webhook_deliveries" not in existing:
        op.create_table(
            "webhook_deliveries",
            sa.Column(
                "id",
                sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                autoincrement=True,
                nullable=False,
            ),
            sa.Column("user_id", sa.String(length=200), nullable=False),
            sa.Column("name", sa.String(length=64), nullable=False),
            sa.Column("position", sa.BigInteger(), nullable=False),
            sa.Column("event_type", sa.String(length=100), nullable=False),
            sa.Column("attempt", sa.Integer(), nullable=False),
            sa.Column("status_code", sa.Integer(), nullable=True),
            sa.Column("error", sa.Text(), nullable=True),
            sa.Column("duration_ms", sa.Float(), nullable=False),
            sa.Column("at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index(
            "webhook_deliveries_by_webhook",
            "webhook_deliveries",
            ["user_id", "name", "id"],
            unique=False,
        )


def downgrade() -> None:
    """Drop both."""
    op.drop_index("webhook_deliveries_by_webhook", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhooks")
