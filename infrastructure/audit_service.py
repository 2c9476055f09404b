"""Wiring of the audit trail: the Audit service on the configured store and read database."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import sqlalchemy as sa
from eventsourcing.persistence import Notification

from application.audit import Audit
from application.checkpoints import CheckpointSigner
from application.executions import Executions
from infrastructure.audit_sql import SqlAuditReadLog, SqlCheckpointStore
from infrastructure.persistence import EVENTS_TABLE, SQLITE_EVENTS_TABLE
from infrastructure.settings import Settings


def checkpoint_signer(settings: Settings) -> CheckpointSigner | None:
    """The signer of the configured key, or None when no key is configured."""
    key = settings.audit_signing_key
    return CheckpointSigner(key) if key else None


def open_audit(settings: Settings, executions: Executions, read_engine: sa.Engine) -> Audit:
    """The Audit service over this process's store and read-model database."""
    return Audit(
        executions,
        SqlAuditReadLog(read_engine),
        SqlCheckpointStore(read_engine),
        checkpoint_signer(settings),
        chain_reader=ChainBySql(executions),
    )


class ChainBySql:
    """One execution's stored events after a version, by the primary key alone.

    Paging by version keeps the scan on (originator_id, originator_version): a condition
    on the notification id makes PostgreSQL walk that index across the whole table.
    """

    def __init__(self, executions: Executions):
        self.datastore = executions.recorder.datastore  # type: ignore[attr-defined]
        self.postgres = hasattr(self.datastore, "schema")

    def __call__(self, execution_id: UUID, after: int, limit: int) -> Sequence[Notification]:
        if self.postgres:
            statement = (
                "SELECT notification_id, originator_id, originator_version, topic, state "
                f"FROM {self.datastore.schema}.{EVENTS_TABLE} WHERE originator_id = %s "
                "AND originator_version > %s ORDER BY originator_version LIMIT %s"
            )
            params: tuple[object, ...] = (execution_id, after, limit)
        else:
            statement = (
                "SELECT rowid AS notification_id, originator_id, originator_version, topic, "
                f"state FROM {SQLITE_EVENTS_TABLE} WHERE originator_id = ? "
                "AND originator_version > ? ORDER BY originator_version LIMIT ?"
            )
            params = (execution_id.hex, after, limit)
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(statement, params)
            rows = cursor.fetchall()
        return [
            Notification(
                id=row["notification_id"],
                originator_id=execution_id,
                originator_version=row["originator_version"],
                topic=row["topic"],
                state=bytes(row["state"]),
            )
            for row in rows
        ]


def execution_heads(executions: Executions) -> dict[UUID, int]:
    """Every execution's newest version, straight from the events table."""
    datastore = executions.recorder.datastore  # type: ignore[attr-defined]
    postgres = hasattr(datastore, "schema")
    table = f"{datastore.schema}.{EVENTS_TABLE}" if postgres else SQLITE_EVENTS_TABLE
    statement = (
        f"SELECT originator_id, max(originator_version) AS version FROM {table} "
        "GROUP BY originator_id"
    )
    with datastore.transaction(commit=False) as cursor:
        cursor.execute(statement)
        rows = cursor.fetchall()
    return {UUID(str(row["originator_id"])): int(row["version"]) for row in rows}
