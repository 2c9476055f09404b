"""The library's PostgreSQL recorder with its hot statements composed once.

The library composes `psycopg.sql` objects for every read of the log and every table
lock and NOTIFY, and psycopg turns each into bytes again on every call: a few percent
of the API's and the worker's CPU. Here each statement is bytes from the start (and so
prepared by the driver); what the statements do is unchanged.

A write whose pipeline fails (a lost lease, a version conflict) closes its connection:
after such a failure psycopg's record of the statements the session has prepared can
disagree with the server's, and every later write on that connection then failed with
`prepared statement "_pg3_N" does not exist` (seen in CI while workers were taken over).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import Notification, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import retry
from psycopg import InterfaceError, OperationalError
from psycopg.sql import SQL, Composable, Identifier


class PostgresStoreRecorder(PostgresApplicationRecorder):
    """Stores events as the library does (table lock, NOTIFY, insert in commit order)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        table = SQL("{schema}.{table}").format(
            schema=Identifier(self.datastore.schema), table=Identifier(self.events_table_name)
        )
        self._lock_statements = [_bytes(s) for s in self.lock_table_statements]
        self._notify_statement = _bytes(SQL("NOTIFY {0}").format(Identifier(self.channel_name)))
        self._max_id_statement = _bytes(SQL("SELECT MAX(notification_id) FROM {0}").format(table))
        self._select_statements = {
            (exclusive, bounded, filtered): _bytes(
                SQL("SELECT * FROM {0} WHERE notification_id {1} %s{2}{3} ").format(
                    table,
                    SQL(">" if exclusive else ">="),
                    SQL(" AND notification_id <= %s" if bounded else ""),
                    SQL(" AND topic = ANY(%s)" if filtered else ""),
                )
                + SQL("ORDER BY notification_id LIMIT %s")
            )
            for exclusive in (False, True)
            for bounded in (False, True)
            for filtered in (False, True)
        }
        # one array per column, sent in binary: no composite values to quote as text
        self._insert_statement = _bytes(
            SQL(
                "INSERT INTO {0} (originator_id, originator_version, topic, state) "
                "SELECT * FROM unnest(%b::uuid[], %b::bigint[], %b::text[], %b::bytea[]) "
                "RETURNING notification_id"
            ).format(table)
        )

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

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """As the library's (one pipelined transaction), but a failed write's connection is
        closed, so the pool replaces it."""
        exc: Exception | None = None
        ids: Sequence[int] | None = None
        with self.datastore.get_connection() as conn:
            with conn.pipeline() as pipeline, conn.transaction(), conn.cursor() as curs:
                try:
                    self._insert_events(curs, stored_events, **kwargs)
                    if stored_events:
                        self._insert_stored_events(curs, stored_events, **kwargs)
                    pipeline.sync()
                    if stored_events:
                        ids = self._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
                except (
                    Exception
                ) as error:  # raised once the pipeline has ended, as the library does
                    exc = error
            if exc is not None:
                conn.close()
                raise exc
        return ids

    def _lock_table(self, curs: Any) -> None:
        for statement in self._lock_statements:
            curs.execute(statement, prepare=True)

    def _notify_channel(self, curs: Any) -> None:
        curs.execute(self._notify_statement, prepare=True)

    def _insert_stored_events(
        self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        """As the library's (table lock, notify, insert in order), with a cheaper insert."""
        self._lock_table(curs)
        self._notify_channel(curs)
        curs.execute(
            self._insert_statement,
            (
                [e.originator_id for e in stored_events],
                [e.originator_version for e in stored_events],
                [e.topic for e in stored_events],
                [e.state for e in stored_events],
            ),
            prepare=True,
        )


def _bytes(statement: object) -> bytes:
    if isinstance(statement, Composable):
        return statement.as_bytes(None)
    if isinstance(statement, str):
        return statement.encode()
    if isinstance(statement, bytes):
        return statement
    raise TypeError(f"not a plain statement: {statement!r}")
