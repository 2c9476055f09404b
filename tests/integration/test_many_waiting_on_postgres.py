"""1,000 executions waiting for a signal at once cost no worker slot (asserted on the queue).

One user, a per-user limit of 3 and a worker of 4 slots: the executions park one after
another; parked, they hold no lease, no slot of the worker and none of the user's limit,
so that user's next ordinary execution runs at once. Then every one is signalled and
completes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from psycopg.rows import dict_row

from agent_ledger.application.group_commit import GroupCommitter
from agent_ledger.application.signals import SignalRequest, send_signal
from agent_ledger.application.starter import ExecutionStarter, StartRequest
from agent_ledger.application.work_memory import PARKED_FOREVER
from agent_ledger.domain.execution_state import ExecutionStatus
from agent_ledger.infrastructure.store.work_queue import WORK_TABLE
from tests.support.databases import fresh_database
from tests.support.engine_scenarios import (
    Engine,
    agent_step,
    engine_settings,
    process,
    running_engine,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.postgres

WAITERS = 1000
USER = "patient"
PER_USER_LIMIT = 3
WORKER_SLOTS = 4


@pytest.fixture
def database(postgres_admin: str) -> Iterator[str]:
    """A database of this test's own: the queue holds only its executions."""
    with fresh_database(postgres_admin) as url:
        yield url


@pytest.fixture
def engine(database: str, tmp_path: Path) -> Iterator[Engine]:
    settings = engine_settings(
        database, tmp_path, engine_concurrency=WORKER_SLOTS, per_user_limit=PER_USER_LIMIT
    )
    with running_engine(settings) as running:
        yield running


def start_many(engine: Engine, name: str, count: int) -> list[UUID]:
    """Start `count` executions by the API's path: concurrent starts, group-committed."""
    executions = engine.runtime.executions
    registered = engine.runtime.catalog.get(name)

    async def start_all() -> list[UUID]:
        starter = ExecutionStarter(executions, GroupCommitter(executions))
        started = await asyncio.gather(
            *(
                starter.start(StartRequest(user_id=USER, process=registered, input={"n": n}))
                for n in range(count)
            )
        )
        return [s.execution_id for s in started]

    return asyncio.run(start_all())


def queue(database: str) -> dict[str, Any]:
    """What the work queue holds, counted."""
    with psycopg.connect(database, row_factory=dict_row) as connection:
        row = connection.execute(
            f"""SELECT count(*) AS rows,
                  count(*) FILTER (WHERE waiting) AS waiting,
                  count(*) FILTER (WHERE lease_owner IS NOT NULL
                                   OR lease_expires_at IS NOT NULL) AS leased,
                  count(*) FILTER (WHERE admitted AND NOT waiting) AS running,
                  count(*) FILTER (WHERE ready_at >= %s) AS parked_forever
                FROM {WORK_TABLE}""",
            (PARKED_FOREVER,),
        ).fetchone()
    assert row is not None
    return dict(row)


def test_a_thousand_waiting_executions_hold_no_worker_slot_and_none_of_the_users_limit(
    engine: Engine, database: str
) -> None:
    waits = engine.register(
        process(
            "many-waiting",
            {"id": "review", "type": "wait_for_signal", "signal": "approval"},
            output="{{ steps.review.output }}",
        )
    )
    ordinary = engine.register(process("ordinary", agent_step("work")))
    worker = engine.runtime.worker_thread.worker  # type: ignore[union-attr]

    waiting_ids = start_many(engine, waits, WAITERS)
    wait_until(
        lambda: queue(database)["waiting"] == WAITERS,
        timeout=60,
        what=f"{WAITERS} executions to wait",
    )
    wait_until(lambda: not worker.tasks, timeout=5, what="the worker to let the last one go")
    parked = queue(database)
    held_while_parked = len(worker.tasks)

    quick = engine.start(ordinary, user=USER)
    quick_execution = engine.finish(quick, timeout=5)

    assert parked == {
        "rows": WAITERS,
        "waiting": WAITERS,
        "leased": 0,
        "running": 0,
        "parked_forever": WAITERS,
    }
    assert held_while_parked == 0
    assert quick_execution.status is ExecutionStatus.COMPLETED  # the limit was all free
    assert queue(database)["waiting"] == WAITERS  # and the waiting ones still wait

    for n, execution_id in enumerate(waiting_ids):
        send_signal(
            engine.runtime.executions,
            SignalRequest(
                execution_id=execution_id,
                name="approval",
                payload={"approved": True, "n": n},
                caller=USER,
                roles=frozenset({"user"}),
            ),
        )
    wait_until(lambda: queue(database)["rows"] == 0, timeout=60, what="every execution to complete")

    finished = engine.runtime.executions.get_executions(waiting_ids)
    assert {e.status for e in finished.values()} == {ExecutionStatus.COMPLETED}
    assert [finished[i].output for i in waiting_ids] == [
        {"approved": True, "n": n} for n in range(WAITERS)
    ]
    assert not worker.tasks
