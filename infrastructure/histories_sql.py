"""Loads many executions at once: their latest snapshots and later events in two queries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresAggregateRecorder


class HistoriesBySql:
    """PostgreSQL: for each execution, its latest snapshot (if any) and the events after it,
    read in one transaction however many executions a worker has just claimed."""

    def __init__(self, events: PostgresAggregateRecorder, snapshots: PostgresAggregateRecorder):
        self.datastore = events.datastore
        schema = events.datastore.schema
        self._snapshots = (
            f"SELECT DISTINCT ON (originator_id) originator_id, originator_version, topic, state "
            f"FROM {schema}.{snapshots.events_table_name} WHERE originator_id = ANY(%s) "
            f"ORDER BY originator_id, originator_version DESC"
        )
        # one index range scan per execution (a join may scan the whole table instead)
        self._events = (
            f"SELECT e.originator_id, e.originator_version, e.topic, e.state "
            f"FROM unnest(%s::uuid[], %s::bigint[]) AS s(id, after) "
            f"CROSS JOIN LATERAL (SELECT * FROM {schema}.{events.events_table_name} "
            f"WHERE originator_id = s.id AND originator_version > s.after "
            f"ORDER BY originator_version) AS e"
        )

    def __call__(self, execution_ids: Sequence[UUID]) -> dict[UUID, list[StoredEvent]]:
        histories: dict[UUID, list[StoredEvent]] = {i: [] for i in execution_ids}
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(self._snapshots, (list(execution_ids),), prepare=True)
            for row in cursor.fetchall():
                histories[row["originator_id"]].append(_stored(row))
            after = [h[0].originator_version if h else 0 for h in histories.values()]
            cursor.execute(self._events, (list(histories), after), prepare=True)
            for row in cursor.fetchall():
                histories[row["originator_id"]].append(_stored(row))
        return histories


def _stored(row: Any) -> StoredEvent:
    return StoredEvent(
        originator_id=row["originator_id"],
        originator_version=row["originator_version"],
        topic=row["topic"],
        state=bytes(row["state"]),
    )
