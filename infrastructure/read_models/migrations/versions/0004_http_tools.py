"""HTTP tools: tools admins register for model agents, called at their URL.

Revision ID: 0004
Revises: 0003

A table already there (made by `metadata.create_all` from the current tables.py, then
stamped at the baseline) is left alone.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create `http_tools`."""
    if "http_tools" in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        "http_tools",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("timeout_seconds", sa.Float(), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    """Drop `http_tools`."""
    op.drop_table("http_tools")
