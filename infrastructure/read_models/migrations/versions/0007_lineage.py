"""Lineage: the execution a fork comes from, how often an execution was resumed, copied steps.

Revision ID: 0007
Revises: 0006

Every table set of the execution status projection gets them: version 1 (the base names,
absent once a rebuild has switched away from it) and the `_vN` sets `projections rebuild`
made, each with its own index of forks by parent. A column or index already there is left
alone. Rows written before this revision show no parent, no resume and no copied step
(events applied before it were not projected as such): `agent-ledger projections rebuild
execution_status` shows them.
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

PARENT_INDEX = "execution_status_parent"


def _versions(base: str) -> list[str]:
    """The tables holding `base`'s rows: `base` itself and its `base_vN` copies."""
    pattern = re.compile(rf"{re.escape(base)}(_v\d+)?")
    names = sa.inspect(op.get_bind()).get_table_names()
    return sorted(name for name in names if pattern.fullmatch(name))


def _columns(table: str) -> set[str]:
    return {column["name"] for column in sa.inspect(op.get_bind()).get_columns(table)}


def _status_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("parent_id", sa.Uuid(), nullable=True),
        sa.Column("forked_from_step", sa.String(length=100), nullable=True),
        sa.Column("resumes", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("resumed_at", sa.DateTime(timezone=True), nullable=True),
    ]


def _index(table: str) -> str:
    """The table set's name of the index: `_vN` copies suffix their indexes' names."""
    return PARENT_INDEX + table.removeprefix("execution_status")


def upgrade() -> None:
    """Add the lineage columns and the index of forks to every version's rows."""
    for table in _versions("execution_status"):
        present = _columns(table)
        for column in _status_columns():
            if column.name not in present:
                op.add_column(table, column)
        indexes = {i["name"] for i in sa.inspect(op.get_bind()).get_indexes(table)}
        if _index(table) not in indexes:
            op.create_index(_index(table), table, ["parent_id", "started_at", "execution_id"])
    for table in _versions("step_status"):
        if "copied" not in _columns(table):
            op.add_column(
                table, sa.Column("copied", sa.Boolean(), nullable=False, server_default=sa.false())
            )


def downgrade() -> None:
    """Drop them again."""
    for table in _versions("step_status"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("copied")
    for table in _versions("execution_status"):
        op.drop_index(_index(table), table_name=table)
        with op.batch_alter_table(table) as batch:
            for column in reversed(_status_columns()):
                batch.drop_column(column.name)
