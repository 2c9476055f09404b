"""SQLAlchemy tables of the read side: projections, their tracking, the process catalog."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

projection_tracking = sa.Table(
    "projection_tracking",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

execution_status = sa.Table(
    "execution_status",
    metadata,
    sa.Column("execution_id", sa.Uuid, primary_key=True),
    sa.Column("user_id", sa.String(200), nullable=False),
    sa.Column("process_name", sa.String(100), nullable=False),
    sa.Column("process_version", sa.Integer, nullable=False),
    sa.Column("thread_id", sa.String(200)),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("current_steps", sa.JSON, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("retries", sa.Integer, nullable=False),
    sa.Column("cancellation_requested", sa.Boolean, nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("duration_ms", sa.Float),
    sa.Column("last_event", sa.String(60), nullable=False),
    sa.Column("last_position", sa.BigInteger, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("output", sa.JSON),
    sa.Column("error", sa.JSON),
    sa.Index("execution_status_user_started", "user_id", "started_at", "execution_id"),
    sa.Index("execution_status_status", "status"),
)

process_definitions = sa.Table(
    "process_definitions",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("document", sa.JSON, nullable=False),
    sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
)
