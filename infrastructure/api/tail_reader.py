"""Catch-up for the tail: a subscription's events from the store, through the event index."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import sqlalchemy as sa
from eventsourcing.persistence import Notification
from eventsourcing.postgres import PostgresApplicationRecorder

from agent_ledger.application.event_log import LoggedEvent
from agent_ledger.application.executions import Executions
from agent_ledger.application.tail_filter import TailFilter
from agent_ledger.infrastructure.read_models.event_index import indexed_positions
from agent_ledger.infrastructure.read_models.tracking import tracked_position
from agent_ledger.infrastructure.store.persistence import EVENTS_TABLE, SQLITE_EVENTS_TABLE
from agent_ledger.projections.event_index import EventIndexProjection


class TailReader:
    """Reads the next page of a subscription's events after a position.

    One user's events come from the index up to the position it has reached (index rows
    and that position are committed together, so nothing below it is missing), and from
    the log beyond it; one execution's from the store's index on the originator.
    """

    def __init__(self, executions: Executions, read_engine: sa.Engine, page_size: int = 500):
        self.executions = executions
        self.read_engine = read_engine
        self.page_size = page_size
        self.postgres = isinstance(executions.recorder, PostgresApplicationRecorder)

    def page(self, selection: TailFilter, after: int) -> tuple[list[LoggedEvent], int]:
        """Matching events after `after`, and the position read up to (`after`: the end)."""
        if selection.execution_id is not None:
            events = self.executions.get_history(
                selection.execution_id, after=after, limit=self.page_size
            )
            return self._matching(selection, events), _last(events, after)
        if selection.user_id is not None:
            with self.read_engine.connect() as connection:
                indexed = tracked_position(connection, EventIndexProjection.name)
                if after < indexed:
                    positions = indexed_positions(
                        connection,
                        user_id=selection.user_id,
                        after=after,
                        upto=indexed,
                        types=selection.types,
                        limit=self.page_size,
                    )
                    reached = positions[-1] if len(positions) == self.page_size else indexed
                    return self.events_at(positions), reached
        events = self.executions.read_log(after=after, limit=self.page_size)
        return self._matching(selection, events), _last(events, after)

    def events_at(self, positions: Sequence[int]) -> list[LoggedEvent]:
        """The stored events at these positions, in order."""
        if not positions:
            return []
        datastore = self.executions.recorder.datastore  # type: ignore[attr-defined]
        columns = "originator_id, originator_version, topic, state"
        if self.postgres:
            statement = (
                f"SELECT notification_id, {columns} FROM {datastore.schema}.{EVENTS_TABLE} "
                "WHERE notification_id = ANY(%b) ORDER BY notification_id"
            )
            params: tuple[object, ...] = (list(positions),)
        else:
            marks = ",".join("?" * len(positions))
            statement = (
                f"SELECT rowid AS notification_id, {columns} FROM {SQLITE_EVENTS_TABLE} "
                f"WHERE rowid IN ({marks}) ORDER BY rowid"
            )
            params = tuple(positions)
        with datastore.transaction(commit=False) as cursor:
            cursor.execute(statement, params)
            rows = cursor.fetchall()
        mapper = self.executions.mapper
        return [
            LoggedEvent(
                row["notification_id"],
                mapper.to_domain_event(
                    Notification(
                        id=row["notification_id"],
                        originator_id=UUID(str(row["originator_id"])),
                        originator_version=row["originator_version"],
                        topic=row["topic"],
                        state=bytes(row["state"]),
                    )
                ),
            )
            for row in rows
        ]

    @staticmethod
    def _matching(selection: TailFilter, events: list[LoggedEvent]) -> list[LoggedEvent]:
        return [e for e in events if selection.accepts_event(e.event)]


def _last(events: list[LoggedEvent], after: int) -> int:
    return events[-1].position if events else after
