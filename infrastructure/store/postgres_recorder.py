"""The library's PostgreSQL recorder with its reads of the log composed once.

The library composes `psycopg.sql` objects for every read of the log, and psycopg turns
each into bytes again on every call: a few percent of the API's and the worker's CPU.
Here each statement is bytes from the start (and so prepared by the driver); what the
statements do is unchanged. Writes are `PostgresWorkRecorder`'s (one statement each).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import InterfaceError, Notification, OperationalError
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import retry
from psycopg.sql import SQL, Identifier


class PostgresStoreRecorder(PostgresApplicationRecorder):
    """Reads the log as the library does, with statements composed once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        table = SQL("{schema}.{table}").format(
            schema=Identifier(self.datastore.schema), table=Identifier(self.events_table_name)
        )
        self._max_id_statement = (
            SQL("SELECT MAX(notification_id) FROM {0}").format(table).as_bytes(None)
        )
        self._select_statements = {
            (exclusive, bounded, filtered): (
                SQL("SELECT * FROM {0} WHERE notification_id {1} %s{2}{3} ").format(
                    table,
                    SQL(">" if exclusive else ">="),
                    SQL(" AND notification_id <= %s" if bounded else ""),
                    SQL(" AND topic = ANY(%s)" if filtered else ""),
                )
                + SQL("ORDER BY notification_id LIMIT %s")
            ).as_bytes(None)
            for exclusive in (False, True)
            for bounded in (False, True)
            for filtered in (False, True)
        }

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        """Notifications from `start` (0 when None), up to `stop`, of these topics only."""
        params: list[Any] = [start or 0]
        if stop is not None:
            params.append(stop)
        if topics:
            params.append(list(topics))
        params.append(limit)
        exclusive = start is not None and not inclusive_of_start
        statement = self._select_statements[exclusive, stop is not None, bool(topics)]
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, params, prepare=True)
            return [
                Notification(
                    id=row["notification_id"],
                    originator_id=row["originator_id"],
                    originator_version=row["originator_version"],
                    topic=row["topic"],
                    state=bytes(row["state"]),
                )
                for row in curs.fetchall()
            ]

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def max_notification_id(self) -> int | None:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._max_id_statement, prepare=True)
            row = curs.fetchone()
            return None if row is None else row["max"]
