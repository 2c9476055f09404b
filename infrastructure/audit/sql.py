"""SQL homes of the audit trail: the log of auditors' reads and the signed checkpoints."""

from __future__ import annotations

from datetime import UTC
from typing import Any
from uuid import UUID

import sqlalchemy as sa

from agent_ledger.application.audit import AuditRead
from agent_ledger.application.checkpoints import Checkpoint
from agent_ledger.infrastructure.read_models.tables import audit_checkpoints, audit_reads
from agent_ledger.infrastructure.store.sql_files import sql_file


def audit_append_only_ddl() -> str:
    """Reads and checkpoints are evidence too: PostgreSQL refuses to change or delete them."""
    return sql_file(__package__, "append_only_triggers.sql")


class SqlAuditReadLog:
    """Auditors' reads, one row each, in the read-model database."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def record(self, read: AuditRead) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                audit_reads.insert().values(
                    at=read.at,
                    actor=read.actor,
                    action=read.action,
                    execution_id=read.execution_id,
                    correlation_id=read.correlation_id,
                    detail=dict(read.detail),
                )
            )

    def list(
        self,
        *,
        actor: str | None = None,
        execution_id: UUID | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> list[AuditRead]:
        query = sa.select(audit_reads).where(audit_reads.c.id > after)
        if actor is not None:
            query = query.where(audit_reads.c.actor == actor)
        if execution_id is not None:
            query = query.where(audit_reads.c.execution_id == execution_id)
        with self.engine.connect() as connection:
            rows = connection.execute(query.order_by(audit_reads.c.id).limit(limit)).all()
        return [
            AuditRead(
                actor=row.actor,
                action=row.action,
                execution_id=row.execution_id,
                correlation_id=row.correlation_id,
                at=row.at,
                detail=row.detail,
                id=row.id,
            )
            for row in rows
        ]


class SqlCheckpointStore:
    """Signed checkpoints, kept apart from the events they vouch for."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def add(self, checkpoint: Checkpoint) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                audit_checkpoints.insert().values(
                    execution_id=checkpoint.execution_id,
                    version=checkpoint.version,
                    hash=checkpoint.hash,
                    signed_at=checkpoint.signed_at,
                    key_id=checkpoint.key_id,
                    signature=checkpoint.signature,
                )
            )

    def latest(self, execution_id: UUID) -> Checkpoint | None:
        query = (
            sa.select(audit_checkpoints)
            .where(audit_checkpoints.c.execution_id == execution_id)
            .order_by(audit_checkpoints.c.version.desc())
            .limit(1)
        )
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        return None if row is None else _checkpoint(row)

    def heads(self) -> dict[UUID, int]:
        query = sa.select(
            audit_checkpoints.c.execution_id, sa.func.max(audit_checkpoints.c.version)
        ).group_by(audit_checkpoints.c.execution_id)
        with self.engine.connect() as connection:
            return {row[0]: row[1] for row in connection.execute(query)}


def _checkpoint(row: Any) -> Checkpoint:
    signed_at = row.signed_at
    if signed_at.tzinfo is None:  # SQLite keeps no zone; checkpoints are signed in UTC
        signed_at = signed_at.replace(tzinfo=UTC)
    return Checkpoint(row.execution_id, row.version, row.hash, signed_at, row.key_id, row.signature)
