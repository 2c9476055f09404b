"""SQLAlchemy tables of the read side: projections, their tracking, the process catalog."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

USAGE_COLUMNS = (
    "model_calls",
    "prompt_tokens",
    "completion_tokens",
    "cost_nano_usd",
    "unpriced_calls",
)
"""Model usage of metric runs and totals (`projections.metrics.ModelUsage`), all counts."""

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
    # model calls and what they used; null tokens or cost: none made, or one did not say
    sa.Column("model_calls", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("prompt_tokens", sa.BigInteger),
    sa.Column("completion_tokens", sa.BigInteger),
    sa.Column("cost_usd", sa.Float),
    # lineage: the execution it forks and from which step; how often, and when last, resumed
    sa.Column("parent_id", sa.Uuid),
    sa.Column("forked_from_step", sa.String(100)),
    sa.Column("resumes", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("resumed_at", sa.DateTime(timezone=True)),
    sa.Index("execution_status_user_started", "user_id", "started_at", "execution_id"),
    sa.Index("execution_status_status", "status"),
    sa.Index("execution_status_parent", "parent_id", "started_at", "execution_id"),
)

step_status = sa.Table(  # one row per step of an execution (part of execution_status)
    "step_status",
    metadata,
    sa.Column("execution_id", sa.Uuid, primary_key=True),
    sa.Column("step_id", sa.String(100), primary_key=True),
    sa.Column("ordinal", sa.Integer, nullable=False),
    sa.Column("user_id", sa.String(200), nullable=False),
    sa.Column("process_name", sa.String(100), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("retries", sa.Integer, nullable=False),
    sa.Column("agent", sa.String(200)),
    sa.Column("started_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("duration_ms", sa.Float),
    sa.Column("error", sa.JSON),
    sa.Column("skip_reason", sa.String(100)),
    sa.Column("last_event", sa.String(60), nullable=False),
    sa.Column("last_position", sa.BigInteger, nullable=False),
    sa.Column("awaiting", sa.String(100)),  # the signal a `waiting` step waits for
    # completed in the execution this one forks: its output copied, never run here
    sa.Column("copied", sa.Boolean, nullable=False, server_default=sa.false()),
)

step_latency = sa.Table(  # step duration histogram buckets (part of execution_status)
    "step_latency",
    metadata,
    sa.Column("process_name", sa.String(100), primary_key=True),
    sa.Column("step_id", sa.String(100), primary_key=True),
    sa.Column("bucket", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("sum_us", sa.BigInteger, nullable=False),  # integer: sums in any order agree
)

metric_runs = sa.Table(  # one row per agent attempt, tool call and execution (metrics)
    "metric_runs",
    metadata,
    sa.Column("execution_id", sa.Uuid, primary_key=True),
    sa.Column("kind", sa.String(10), primary_key=True),
    sa.Column("key", sa.String(400), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("user_id", sa.String(200), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("outcome", sa.String(20), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("duration_ms", sa.Float),
    sa.Column("retries", sa.Integer, nullable=False),
    *(  # model calls of the run, their tokens, their known cost (integer billionths of a USD)
        sa.Column(name, sa.BigInteger, nullable=False, server_default=sa.text("0"))
        for name in USAGE_COLUMNS
    ),
    sa.Index("metric_runs_kind_started", "kind", "started_at"),
    sa.Index("metric_runs_user_kind_started", "user_id", "kind", "started_at"),
)

event_counts = sa.Table(  # events applied, by type (metrics)
    "event_counts",
    metadata,
    sa.Column("type", sa.String(60), primary_key=True),
    sa.Column("count", sa.BigInteger, nullable=False),
)

model_usage = sa.Table(  # model calls, tokens and known cost per agent and process (metrics)
    "model_usage",
    metadata,
    sa.Column("kind", sa.String(10), primary_key=True),
    sa.Column("name", sa.String(200), primary_key=True),
    *(sa.Column(name, sa.BigInteger, nullable=False) for name in USAGE_COLUMNS),
)

projection_versions = sa.Table(  # which table set each versioned projection reads and builds
    "projection_versions",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("active_version", sa.Integer, nullable=False),
    sa.Column("building_version", sa.Integer),
    sa.Column("switched_at", sa.DateTime(timezone=True)),
)

event_index = sa.Table(  # the tail's catch-up index: which positions are whose
    "event_index",
    metadata,
    sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.String(200), nullable=False),
    sa.Column("execution_id", sa.Uuid, nullable=False),
    sa.Column("type", sa.String(60), nullable=False),
    sa.Index("event_index_user_position", "user_id", "position"),
)

token_revocations = sa.Table(  # tokens of `subject` issued at or before `revoked_at` are void
    "token_revocations",
    metadata,
    sa.Column("subject", sa.String(200), primary_key=True),
    sa.Column("revoked_at", sa.Float, nullable=False),  # seconds since the epoch, like `iat`
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

audit_reads = sa.Table(
    "audit_reads",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(40), nullable=False),
    sa.Column("execution_id", sa.Uuid),
    sa.Column("correlation_id", sa.String(200)),
    sa.Column("detail", sa.JSON, nullable=False),
    sa.Index("audit_reads_actor", "actor", "id"),
    sa.Index("audit_reads_execution", "execution_id", "id"),
)

audit_checkpoints = sa.Table(
    "audit_checkpoints",
    metadata,
    sa.Column("execution_id", sa.Uuid, primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("signature", sa.String(128), nullable=False),
)

parked_events = sa.Table(  # stored events a projection could not apply, passed by so it goes on
    "parked_events",
    metadata,
    sa.Column("tracking_name", sa.String(100), primary_key=True),  # projection and table version
    sa.Column("position", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("projection", sa.String(100), nullable=False),
    sa.Column("event_type", sa.String(60), nullable=False),
    sa.Column("execution_id", sa.Uuid),
    sa.Column("error", sa.Text, nullable=False),
    sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_tried", sa.DateTime(timezone=True), nullable=False),
    sa.Column("tries", sa.Integer, nullable=False),
)

http_tools = sa.Table(  # tools admins registered for model agents, called over HTTP
    "http_tools",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("parameters", sa.JSON, nullable=False),
    sa.Column("timeout_seconds", sa.Float, nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

schedules = sa.Table(  # each user's schedules as their aggregates last left them (0006)
    "schedules",
    metadata,
    sa.Column("schedule_id", sa.Uuid, primary_key=True),
    sa.Column("user_id", sa.String(200), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("process", sa.String(100), nullable=False),
    sa.Column("process_version", sa.Integer),
    sa.Column("input", sa.JSON, nullable=False),
    sa.Column("cron", sa.String(200), nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("paused", sa.Boolean, nullable=False),
    sa.Column("overlap", sa.String(20), nullable=False),
    sa.Column("deleted", sa.Boolean, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("ticks_from", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_tick", sa.DateTime(timezone=True)),
    sa.Column("last_execution_id", sa.Uuid),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
    sa.Index("schedules_owner_name", "user_id", "name", unique=True),
)

webhooks = sa.Table(  # each user's webhooks and how far each has delivered (0008)
    "webhooks",
    metadata,
    sa.Column("user_id", sa.String(200), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("types", sa.JSON, nullable=False),
    sa.Column("secret", sa.Text, nullable=False),  # signs bodies; never returned nor logged
    sa.Column("state", sa.String(20), nullable=False),  # active | failing
    sa.Column("position", sa.BigInteger, nullable=False),  # the last position acknowledged
    sa.Column("attempt", sa.Integer, nullable=False),  # failed tries of the next event
    sa.Column("failing_since", sa.DateTime(timezone=True)),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

webhook_deliveries = sa.Table(  # every try of every webhook delivery (0008)
    "webhook_deliveries",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("user_id", sa.String(200), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("position", sa.BigInteger, nullable=False),
    sa.Column("event_type", sa.String(100), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("status_code", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("duration_ms", sa.Float, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("webhook_deliveries_by_webhook", "user_id", "name", "id"),
)
