"""The two statements on every execution's path, awaited on the caller's event loop.

A write (`agent_ledger_append`) and a worker's claim with its load otherwise go to a
thread and back: on these machines each hand-off costs a wake-up of a sleeping thread and
of the loop (0.2 to 0.5 ms each way, measured by `bench/breakdown.py`), and on a busy loop a
quarter of its CPU went to handing work to the pool. Over an asyncio connection the loop
waits for the socket itself. Same SQL, same arguments, same errors as the threaded path
(`PostgresWorkRecorder.insert_events`, `HistoriesBySql.claim_and_load`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from uuid import UUID

import psycopg
from eventsourcing import persistence
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Recording
from psycopg.rows import DictRow, dict_row

from agent_ledger.application.executions import Executions
from agent_ledger.application.work import Claim, LeaseLostError, WorkChange
from agent_ledger.domain.executions import Execution
from agent_ledger.infrastructure.store.append_sql import CALL, append_arguments
from agent_ledger.infrastructure.store.histories import HistoriesBySql
from agent_ledger.infrastructure.store.work_queue import (
    CLAIM,
    LEASE_LOST,
    claim_arguments,
    claims_of,
    to_read,
)

CONNECT_TIMEOUT = 5
WRITE_ATTEMPTS, WRITE_RETRY_WAIT = 10, 0.45
"""A write that finds the database away is tried again for about as long as the threaded
recorder tries (`insert_events`: 10 attempts 0.2 s apart, each waiting up to 0.25 s for a
connection from its pool); one that did land conflicts, and its writer reloads."""

_ERRORS: tuple[tuple[type[psycopg.Error], type[persistence.PersistenceError]], ...] = (
    (psycopg.InterfaceError, persistence.InterfaceError),
    (psycopg.OperationalError, persistence.OperationalError),
    (psycopg.DataError, persistence.DataError),
    (psycopg.IntegrityError, persistence.IntegrityError),
    (psycopg.InternalError, persistence.InternalError),
    (psycopg.ProgrammingError, persistence.ProgrammingError),
    (psycopg.NotSupportedError, persistence.NotSupportedError),
    (psycopg.DatabaseError, persistence.DatabaseError),
    (psycopg.Error, persistence.PersistenceError),
)
"""psycopg's errors as the library's recorder raises them (a conflict is a RecordConflictError)."""


class AsyncStore:
    """Appends and claims over up to `size` asyncio connections of one event loop, opened
    on first use; a connection that breaks is dropped and the next use opens another."""

    def __init__(
        self,
        executions: Executions,
        conninfo: str,
        histories: HistoriesBySql | None = None,
        *,
        per_user_limit: int = 0,
        size: int = 2,
    ):
        self.executions = executions
        self.conninfo = conninfo
        self.histories = histories
        self.per_user_limit = per_user_limit
        self.size = size
        self._idle: list[psycopg.AsyncConnection[DictRow]] = []
        self._open: set[psycopg.AsyncConnection[DictRow]] = set()  # idle or in use
        self._closed = False
        self._slots: asyncio.Semaphore | None = None

    async def save(
        self,
        changes: Sequence[tuple[Execution, Sequence[DomainEventProtocol[UUID]]]],
        work: Sequence[WorkChange],
    ) -> list[Recording[UUID]]:
        """`Executions.save_collected`, with the statement awaited here."""
        prepared = self.executions.prepare_save(changes, work)
        arguments = append_arguments(prepared.work, prepared.stored, time.time())
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                async with self._connection() as connection:
                    cursor = await connection.execute(CALL, arguments, prepare=True)
                    ids = [row["agent_ledger_append"] for row in await cursor.fetchall()]
                break
            except (persistence.OperationalError, persistence.InterfaceError):
                if attempt == WRITE_ATTEMPTS:
                    raise
                await asyncio.sleep(WRITE_RETRY_WAIT)
            except persistence.PersistenceError as error:
                if LEASE_LOST in str(error):
                    raise LeaseLostError() from error
                raise
        if self.executions.snapshots_due(prepared):  # once every 100 events: a blocking write
            return await asyncio.to_thread(self.executions.finish_save, prepared, ids)
        return self.executions.finish_save(prepared, ids)

    async def claim(self, owner: str, limit: int, lease_seconds: float) -> list[Claim]:
        """`SqlWorkQueue.claim` with its histories, the statement awaited here."""
        if self.histories is None:
            raise RuntimeError("claims need the store's histories reader")
        if limit <= 0:
            return []
        arguments = claim_arguments(owner, limit, lease_seconds, self.per_user_limit)
        histories = {}
        # two statements, not one pipeline: psycopg waits on a pipeline by polling the
        # socket, busy, which took a fifth of the worker loop's CPU
        async with self._connection() as connection:
            cursor = await connection.execute(CLAIM, arguments, prepare=True)
            claimed = await cursor.fetchall()
            ids = to_read(owner, claimed)
            if ids:
                cursor = await connection.execute(
                    self.histories.statement, {"ids": ids}, prepare=True
                )
                histories = self.histories.histories_of(await cursor.fetchall())
        return claims_of(owner, claimed, histories)

    async def close(self) -> None:
        """Close every connection, those a statement still uses included (at shutdown);
        nothing opens another afterwards."""
        self._closed = True
        self._idle = []
        opened, self._open = self._open, set()
        for connection in opened:
            with contextlib.suppress(psycopg.Error):
                await connection.close()

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[DictRow]]:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.size)
        async with self._slots:
            with _translated():
                connection = self._idle.pop() if self._idle else await self._connect()
            try:
                with _translated():
                    yield connection
            finally:
                # a failed statement leaves an autocommit connection idle and usable; one
                # cancelled mid-statement or broken is in an unknown state
                if connection.closed or connection.broken or connection.info.transaction_status:
                    self._open.discard(connection)
                    with contextlib.suppress(psycopg.Error):
                        await connection.close()
                elif connection in self._open:  # not closed by close() meanwhile
                    self._idle.append(connection)

    async def _connect(self) -> psycopg.AsyncConnection[DictRow]:
        connection = await psycopg.AsyncConnection.connect(
            self.conninfo,
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=CONNECT_TIMEOUT,
        )
        if self._closed:  # closed while this one was being opened
            await connection.close()
            raise persistence.PersistenceError("the store's connections are closed")
        self._open.add(connection)
        return connection


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except psycopg.Error as error:
        for theirs, ours in _ERRORS:
            if isinstance(error, theirs):
                raise ours(str(error)) from error
        raise
