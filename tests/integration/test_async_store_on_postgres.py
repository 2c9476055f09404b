"""The store's hot statements awaited on an event loop: the same writes, claims and errors
as the threaded path, and a connection that breaks is replaced."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import psycopg
import pytest
from eventsourcing.persistence import RecordConflictError

from agent_ledger.application.executions import Executions
from agent_ledger.application.processes import InMemoryProcessCatalog
from agent_ledger.application.starter import StartRequest, _new_execution
from agent_ledger.application.work import Enqueue, Fence, Finish, LeaseLostError
from agent_ledger.domain.execution_state import ExecutionStatus
from agent_ledger.infrastructure.store.async_store import AsyncStore
from agent_ledger.infrastructure.store.histories import HistoriesBySql
from agent_ledger.infrastructure.store.work_queue import SqlWorkQueue
from tests.support.databases import fresh_database
from tests.support.stores import postgres_store

pytestmark = pytest.mark.postgres

PROCESS = {
    "name": "one-step",
    "steps": [{"id": "talk", "type": "agent_task", "agent": "echo", "input": {}}],
}


@pytest.fixture
def database(postgres_admin: str) -> Iterator[str]:
    with fresh_database(postgres_admin) as url:
        yield url


@pytest.fixture
def executions(database: str, tmp_path: Path) -> Iterator[Executions]:
    with postgres_store(database, tmp_path) as opened:
        yield opened


def store_of(executions: Executions, database: str) -> AsyncStore:
    histories = executions.histories_reader
    assert isinstance(histories, HistoriesBySql)
    return AsyncStore(executions, database, histories, per_user_limit=100)


def request() -> StartRequest:
    process, _ = InMemoryProcessCatalog().register(PROCESS)
    return StartRequest(user_id="async", process=process, input={"n": 1})


def test_a_write_a_claim_and_the_next_write_land_as_the_threaded_path_would(
    executions: Executions, database: str
) -> None:
    async def scenario() -> UUID:
        store = store_of(executions, database)
        try:
            started = _new_execution(request())
            saved = await store.save(
                [(started, list(started.collect_events()))], [Enqueue(started.id, "async")]
            )
            assert [r.notification.id for r in saved] == [executions.last_position()]

            claims = await store.claim("loop-worker", 10, lease_seconds=30)
            assert [c.execution_id for c in claims] == [started.id]
            assert claims[0].history is not None
            claimed = executions.from_history(claims[0].history)
            assert claimed is not None
            assert claimed.version == executions.get_execution(started.id).version

            claimed.schedule_step("talk", 1)
            claimed.start_step("talk", 1)
            claimed.start_agent("talk", 1, "echo", {})
            claimed.complete_agent("talk", 1, {"n": 1}, 0.1, None)
            claimed.complete_step("talk", 1, {"n": 1})
            claimed.complete({"n": 1})
            await store.save(
                [(claimed, list(claimed.collect_events()))],
                [Fence(started.id, "loop-worker"), Finish(started.id)],
            )
            return started.id
        finally:
            await store.close()

    execution_id = asyncio.run(scenario())
    assert executions.get_execution(execution_id).status is ExecutionStatus.COMPLETED
    queue = SqlWorkQueue(executions.recorder, 100)  # type: ignore[arg-type]
    assert queue.claim("anyone", 10, 30) == []  # finished: out of the queue


def test_a_conflicting_write_and_a_lost_lease_raise_what_the_threaded_path_raises(
    executions: Executions, database: str
) -> None:
    async def scenario() -> None:
        store = store_of(executions, database)
        try:
            started = _new_execution(request())
            await store.save(
                [(started, list(started.collect_events()))], [Enqueue(started.id, "async")]
            )
            stale = executions.get_execution(started.id)
            fresh = executions.get_execution(started.id)
            fresh.request_cancellation(by="user:async", reason="changed my mind")
            await store.save([(fresh, list(fresh.collect_events()))], [])
            stale.schedule_step("talk", 1)
            with pytest.raises(RecordConflictError):
                await store.save([(stale, list(stale.collect_events()))], [])

            other = executions.get_execution(started.id)
            other.schedule_step("talk", 1)
            with pytest.raises(LeaseLostError):  # nobody leased it to "impostor"
                await store.save(
                    [(other, list(other.collect_events()))], [Fence(started.id, "impostor")]
                )
            # the failed statements left the connections usable
            claims = await store.claim("loop-worker", 10, lease_seconds=30)
            assert [c.execution_id for c in claims] == [started.id]
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_connection_the_server_ends_is_replaced_on_the_next_statement(
    executions: Executions, database: str
) -> None:
    async def scenario() -> None:
        store = store_of(executions, database)
        try:
            first = _new_execution(request())
            await store.save([(first, list(first.collect_events()))], [Enqueue(first.id, "a")])
            with psycopg.connect(database, autocommit=True) as admin:
                ended = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND application_name = ''"
                ).fetchone()
            assert ended is not None
            assert ended[0] >= 1  # the store's own connection among them
            second = _new_execution(request())
            saved = await store.save(
                [(second, list(second.collect_events()))], [Enqueue(second.id, "a")]
            )
            assert saved[-1].notification.id == executions.last_position()
        finally:
            await store.close()

    asyncio.run(scenario())
