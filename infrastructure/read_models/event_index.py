"""The event index in SQL: written in the projector's batches, read by the tail's catch-up."""

from __future__ import annotations

from collections.abc import Collection

import sqlalchemy as sa

from agent_ledger.infrastructure.read_models.tables import event_index
from agent_ledger.infrastructure.store.bulk_sql import insert_rows
from agent_ledger.projections.event_index import EventIndexProjection, IndexEntry


class SqlEventIndexView:
    """Collects a batch's entries and inserts them in one statement."""

    def __init__(self, connection: sa.Connection):
        self.connection = connection  # the writes of a round (see `deferred_writes`) or not
        self._rows: list[dict[str, object]] = []

    def add(self, entry: IndexEntry) -> None:
        self._rows.append(
            {
                "position": entry.position,
                "user_id": entry.user_id,
                "execution_id": entry.execution_id,
                "type": entry.type,
            }
        )

    def flush(self) -> None:
        insert_rows(self.connection, event_index, self._rows)
        self._rows = []


class EventIndexBatch:
    """The index projection bound to one projector transaction."""

    def __init__(self, connection: sa.Connection, writes: sa.Connection | None = None):
        self.view = SqlEventIndexView(writes if writes is not None else connection)
        self.projection = EventIndexProjection(self.view)

    def process(self, event: object, position: int) -> None:
        self.projection.process(event, position)

    def flush(self) -> None:
        self.view.flush()


def indexed_positions(
    connection: sa.Connection,
    *,
    user_id: str,
    after: int,
    upto: int,
    types: Collection[str] = (),
    limit: int = 500,
) -> list[int]:
    """A user's positions in (after, upto], oldest first, optionally of some event types."""
    query = (
        sa.select(event_index.c.position)
        .where(
            event_index.c.user_id == user_id,
            event_index.c.position > after,
            event_index.c.position <= upto,
        )
        .order_by(event_index.c.position)
        .limit(limit)
    )
    if types:
        query = query.where(event_index.c.type.in_(sorted(types)))
    return [int(p) for p in connection.execute(query).scalars()]
