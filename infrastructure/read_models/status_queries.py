"""The execution status view in SQL, and its queries."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa

from agent_ledger.domain.execution_state import ExecutionStatus
from agent_ledger.infrastructure.read_models.row_batch import aware
from agent_ledger.infrastructure.read_models.table_sets import active_tables
from agent_ledger.projections.execution_status import ExecutionStatusProjection, ExecutionStatusRow
from agent_ledger.projections.step_status import StepStatusRow

_NAME = ExecutionStatusProjection.name


def row_from_record(record: Any) -> ExecutionStatusRow:
    return ExecutionStatusRow(**{k: aware(v) for k, v in record._mapping.items()})


class ExecutionStatusQueries:
    """Reads of the execution status view for the API and the engine's recovery."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def get(self, execution_id: UUID, user_id: str | None) -> ExecutionStatusRow | None:
        with self.engine.connect() as connection:
            t = active_tables(connection, _NAME)["execution_status"]
            query = sa.select(t).where(t.c.execution_id == execution_id)
            if user_id is not None:
                query = query.where(t.c.user_id == user_id)
            record = connection.execute(query).first()
        return None if record is None else row_from_record(record)

    def steps(self, execution_id: UUID) -> list[StepStatusRow]:
        """The execution's steps in the process's order."""
        with self.engine.connect() as connection:
            t = active_tables(connection, _NAME)["step_status"]
            query = sa.select(t).where(t.c.execution_id == execution_id).order_by(t.c.ordinal)
            return [
                StepStatusRow(**{k: aware(v) for k, v in r._mapping.items()})
                for r in connection.execute(query)
            ]

    def list_rows(
        self,
        *,
        user_id: str | None,
        status: str | None = None,
        process: str | None = None,
        thread_id: str | None = None,
        parent_id: UUID | None = None,
        limit: int = 50,
        before: tuple[datetime, UUID] | None = None,
        started_from: datetime | None = None,
        started_to: datetime | None = None,
    ) -> list[ExecutionStatusRow]:
        """Newest first; `before` is the (started_at, id) of the last row of the previous page;
        `parent_id`: the forks of that execution."""
        with self.engine.connect() as connection:
            t = active_tables(connection, _NAME)["execution_status"]
            equal = {
                "user_id": user_id,
                "status": status,
                "process_name": process,
                "thread_id": thread_id,
                "parent_id": parent_id,
            }
            query = self._list_query(t, equal, limit, before)
            if started_from is not None:
                query = query.where(t.c.started_at >= started_from)
            if started_to is not None:
                query = query.where(t.c.started_at < started_to)
            return [row_from_record(r) for r in connection.execute(query)]

    def children(self, execution_id: UUID, user_id: str | None, limit: int) -> list[UUID]:
        """The ids of the executions forked from this one, newest first."""
        with self.engine.connect() as connection:
            t = active_tables(connection, _NAME)["execution_status"]
            query = self._list_query(
                t, {"parent_id": execution_id, "user_id": user_id}, limit, None, t.c.execution_id
            )
            return list(connection.execute(query).scalars())

    @staticmethod
    def _list_query(
        t: sa.Table,
        equal: dict[str, Any],
        limit: int,
        before: tuple[datetime, UUID] | None,
        *columns: sa.ColumnElement[Any],
    ) -> sa.Select[Any]:
        query = (
            sa.select(*(columns or [t]))
            .order_by(t.c.started_at.desc(), t.c.execution_id.desc())
            .limit(limit)
        )
        for name, value in equal.items():
            if value is not None:
                query = query.where(t.c[name] == value)
        if before is not None:
            started, execution_id = before
            query = query.where(
                sa.or_(
                    t.c.started_at < started,
                    sa.and_(t.c.started_at == started, t.c.execution_id < execution_id),
                )
            )
        return query

    def unfinished_ids(self) -> list[UUID]:
        """Executions not yet in a terminal state, oldest first."""
        with self.engine.connect() as connection:
            t = active_tables(connection, _NAME)["execution_status"]
            query = (
                sa.select(t.c.execution_id)
                .where(t.c.status.in_([s.value for s in ExecutionStatus if not s.is_terminal]))
                .order_by(t.c.started_at)
            )
            return [r[0] for r in connection.execute(query)]
