"""The `schedules` table: the application's `ScheduleIndex` on SQLite and PostgreSQL.

A row is replaced only by a newer version of its schedule. Every write tells the
schedulers to look again: on PostgreSQL with a notice on `SCHEDULES_CHANNEL`, sent in the
row's transaction (so delivered once it is committed, to every process); and, in this
process, by calling its listeners.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from agent_ledger.application.schedules import ScheduleRow
from agent_ledger.domain.schedules import Overlap, ScheduleDefinition
from agent_ledger.infrastructure.read_models.tables import schedules as table

SCHEDULES_CHANNEL = "agent_ledger_schedules"
"""Notified on every write of a schedule's row (PostgreSQL)."""

_KEY_COLUMNS = ("schedule_id", "created_at")


class SqlScheduleIndex:
    """Schedule rows in the read-model database."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self._listeners: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener` after every write of a row in this process."""
        with self._lock:
            self._listeners.append(listener)

    def put(self, row: ScheduleRow) -> None:
        values = _values(row)
        postgres = self.engine.dialect.name == "postgresql"
        insert = (postgresql.insert if postgres else sqlite.insert)(table).values(**values)
        statement = insert.on_conflict_do_update(
            index_elements=[table.c.schedule_id],
            set_={k: insert.excluded[k] for k in values if k not in _KEY_COLUMNS},
            where=table.c.version < insert.excluded.version,
        )
        with self.engine.begin() as connection:
            connection.execute(statement)
            if postgres:
                connection.execute(sa.select(sa.func.pg_notify(SCHEDULES_CHANNEL, "")))
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            listener()

    def get(self, user_id: str, name: str) -> ScheduleRow | None:
        query = sa.select(table).where(table.c.user_id == user_id, table.c.name == name)
        with self.engine.connect() as connection:
            found = connection.execute(query).first()
        return None if found is None else _row(found._mapping)

    def owned_by(self, user_id: str | None) -> list[ScheduleRow]:
        query = (
            sa.select(table).where(sa.not_(table.c.deleted)).order_by(table.c.user_id, table.c.name)
        )
        if user_id is not None:
            query = query.where(table.c.user_id == user_id)
        with self.engine.connect() as connection:
            return [_row(found._mapping) for found in connection.execute(query)]

    def running(self) -> list[ScheduleRow]:
        query = sa.select(table).where(sa.not_(table.c.deleted), sa.not_(table.c.paused))
        with self.engine.connect() as connection:
            return [_row(found._mapping) for found in connection.execute(query)]


def _values(row: ScheduleRow) -> dict[str, Any]:
    definition = row.definition
    return {
        "schedule_id": row.schedule_id,
        "user_id": row.user_id,
        "name": row.name,
        "process": definition.process,
        "process_version": definition.version,
        "input": definition.input,
        "cron": definition.cron,
        "timezone": definition.timezone,
        "paused": definition.paused,
        "overlap": definition.overlap.value,
        "deleted": row.deleted,
        "version": row.version,
        "ticks_from": row.ticks_from.astimezone(UTC),
        "last_tick": None if row.last_tick is None else row.last_tick.astimezone(UTC),
        "last_execution_id": row.last_execution_id,
        "created_at": row.created_at.astimezone(UTC),
        "updated_at": row.updated_at.astimezone(UTC),
        "updated_by": row.updated_by,
    }


def _row(found: Any) -> ScheduleRow:
    return ScheduleRow(
        schedule_id=found["schedule_id"],
        user_id=found["user_id"],
        name=found["name"],
        definition=ScheduleDefinition(
            process=found["process"],
            version=found["process_version"],
            input=found["input"],
            cron=found["cron"],
            timezone=found["timezone"],
            paused=found["paused"],
            overlap=Overlap(found["overlap"]),
        ),
        version=found["version"],
        deleted=found["deleted"],
        ticks_from=_utc(found["ticks_from"]),
        last_tick=_utc(found["last_tick"]) if found["last_tick"] is not None else None,
        last_execution_id=found["last_execution_id"],
        created_at=_utc(found["created_at"]),
        updated_at=_utc(found["updated_at"]),
        updated_by=found["updated_by"],
    )


def _utc(value: datetime) -> datetime:
    """SQLite keeps no offset: what was written as UTC comes back naive."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
