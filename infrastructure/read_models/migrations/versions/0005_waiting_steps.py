"""Waiting steps: the signal a `waiting` step row waits for.

Revision ID: 0005
Revises: 0004

Every table set of the execution status projection gets the column: version 1 (the base
names, absent once a rebuild has switched away from it) and the `_vN` sets `projections
rebuild` made. A column already there is left alone. Rows written before this revision show
a step that waits as `running` and its execution as `running`: `agent-ledger projections
rebuild execution_status` shows them `waiting`.
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def _versions(base: str) -> list[str]:
    """The tables holding `base`'s rows: `base` itself and its `base_vN` copies."""
    pattern = re.compile(rf"{re.escape(base)}(_v\d+)?")
    names = sa.inspect(op.get_bind()).get_table_names()
    return sorted(name for name in names if pattern.fullmatch(name))


def upgrade() -> None:
    """Add `awaiting` to every version's step rows."""
    for table in _versions("step_status"):
        present = {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}
        if "awaiting" not in present:
            op.add_column(table, sa.Column("awaiting", sa.String(length=100), nullable=True))


def downgrade() -> None:
    """Drop it again."""
    for table in _versions("step_status"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("awaiting")
