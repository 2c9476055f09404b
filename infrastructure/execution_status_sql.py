"""The execution status view in SQL, and its queries."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa

from infrastructure.tables import execution_status
from projections.execution_status import ExecutionStatusRow

_COLUMNS = [c.name for c in execution_status.columns]


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes: they were written in UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def row_from_record(record: Any) -> ExecutionStatusRow:
    values = dict(record._mapping)
    values["started_at"] = _aware(values["started_at"])
    values["finished_at"] = _aware(values["finished_at"])
    return ExecutionStatusRow(**values)


class SqlExecutionStatusView:
    """Status rows read and written in one transaction; writes are flushed in one go."""

    def __init__(self, connection: sa.Connection):
        self.connection = connection
        self._rows: dict[UUID, ExecutionStatusRow] = {}
        self._new: set[UUID] = set()
        self._dirty: set[UUID] = set()

    def get(self, execution_id: UUID) -> ExecutionStatusRow | None:
        if execution_id in self._rows:
            return self._rows[execution_id]
        record = self.connection.execute(
            sa.select(execution_status).where(execution_status.c.execution_id == execution_id)
        ).first()
        if record is None:
            return None
        row = row_from_record(record)
        self._rows[execution_id] = row
        return row

    def put(self, row: ExecutionStatusRow) -> None:
        if row.execution_id not in self._rows:
            self._new.add(row.execution_id)
        self._rows[row.execution_id] = row
        self._dirty.add(row.execution_id)

    def flush(self) -> None:
        """Write every changed row: inserts in one statement, updates in another."""
        inserts = [asdict(self._rows[i]) for i in self._dirty if i in self._new]
        updates = [asdict(self._rows[i]) for i in self._dirty if i not in self._new]
        if inserts:
            self.connection.execute(sa.insert(execution_status), inserts)
        if updates:
            table = execution_status
            statement = (
                sa.update(table)
                .where(table.c.execution_id == sa.bindparam("b_execution_id"))
                .values({c: sa.bindparam(f"b_{c}") for c in _COLUMNS if c != "execution_id"})
            )
            self.connection.execute(
                statement, [{f"b_{k}": v for k, v in row.items()} for row in updates]
            )
        self._new.clear()
        self._dirty.clear()


class ExecutionStatusQueries:
    """Reads of the execution status view for the API and the engine's recovery."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def get(self, execution_id: UUID, user_id: str | None) -> ExecutionStatusRow | None:
        query = sa.select(execution_status).where(execution_status.c.execution_id == execution_id)
        if user_id is not None:
            query = query.where(execution_status.c.user_id == user_id)
        with self.engine.connect() as connection:
            record = connection.execute(query).first()
        return None if record is None else row_from_record(record)

    def list_rows(
        self,
        *,
        user_id: str | None,
        status: str | None = None,
        process: str | None = None,
        thread_id: str | None = None,
        limit: int = 50,
        before: tuple[datetime, UUID] | None = None,
    ) -> list[ExecutionStatusRow]:
        """Newest first; `before` is the (started_at, id) of the last row of the previous page."""
        t = execution_status
        query = sa.select(t).order_by(t.c.started_at.desc(), t.c.execution_id.desc()).limit(limit)
        for column, value in (
            (t.c.user_id, user_id),
            (t.c.status, status),
            (t.c.process_name, process),
            (t.c.thread_id, thread_id),
        ):
            if value is not None:
                query = query.where(column == value)
        if before is not None:
            started, execution_id = before
            query = query.where(
                sa.or_(
                    t.c.started_at < started,
                    sa.and_(t.c.started_at == started, t.c.execution_id < execution_id),
                )
            )
        with self.engine.connect() as connection:
            return [row_from_record(r) for r in connection.execute(query)]

    def unfinished_ids(self) -> list[UUID]:
        """Executions not yet in a terminal state, oldest first."""
        t = execution_status
        query = (
            sa.select(t.c.execution_id)
            .where(t.c.status.in_(("pending", "running")))
            .order_by(t.c.started_at)
        )
        with self.engine.connect() as connection:
            return [r[0] for r in connection.execute(query)]
