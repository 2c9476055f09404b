"""Model usage: tokens and cost on metric runs and execution status, totals per agent and process.

Revision ID: 0003
Revises: 0002

Every table set of the two projections gets them: version 1 (the base names, absent once a
rebuild has switched away from it) and the `_vN` sets `projections rebuild` made, which the
code reads under the same columns. A column or table already there is left alone. Events
applied before this revision were counted without their model calls: `agent-ledger
projections rebuild metrics` (and `execution_status`) counts them.
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

USAGE = ("model_calls", "prompt_tokens", "completion_tokens", "cost_nano_usd", "unpriced_calls")


def _versions(base: str) -> list[str]:
    """The tables holding `base`'s rows: `base` itself and its `base_vN` copies."""
    pattern = re.compile(rf"{re.escape(base)}(_v\d+)?")
    names = sa.inspect(op.get_bind()).get_table_names()
    return sorted(name for name in names if pattern.fullmatch(name))


def _columns(table: str) -> set[str]:
    return {column["name"] for column in sa.inspect(op.get_bind()).get_columns(table)}


def _status_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("model_calls", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=True),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=True),
        sa.Column("cost_usd", sa.Float(), nullable=True),
    ]


def upgrade() -> None:
    """Add the usage columns to every version's rows, and `model_usage` beside each."""
    for table in _versions("execution_status"):
        present = _columns(table)
        for column in _status_columns():
            if column.name not in present:
                op.add_column(table, column)
    for table in _versions("metric_runs"):
        present = _columns(table)
        for name in USAGE:
            if name not in present:
                column = sa.Column(
                    name, sa.BigInteger(), nullable=False, server_default=sa.text("0")
                )
                op.add_column(table, column)
        totals = table.replace("metric_runs", "model_usage", 1)
        if totals not in sa.inspect(op.get_bind()).get_table_names():
            op.create_table(
                totals,
                sa.Column("kind", sa.String(length=10), nullable=False),
                sa.Column("name", sa.String(length=200), nullable=False),
                *(sa.Column(name, sa.BigInteger(), nullable=False) for name in USAGE),
                sa.PrimaryKeyConstraint("kind", "name"),
            )


def downgrade() -> None:
    """Drop them again."""
    for table in _versions("model_usage"):
        op.drop_table(table)
    for table in _versions("metric_runs"):
        with op.batch_alter_table(table) as batch:
            for name in reversed(USAGE):
                batch.drop_column(name)
    for table in _versions("execution_status"):
        with op.batch_alter_table(table) as batch:
            for column in reversed(_status_columns()):
                batch.drop_column(column.name)
