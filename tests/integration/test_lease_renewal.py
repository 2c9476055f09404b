"""Renewing leases never waits for a write that holds some of the same rows."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from agent_ledger.application.executions import Executions
from agent_ledger.application.processes import InMemoryProcessCatalog
from agent_ledger.application.starter import StartRequest, start_execution
from agent_ledger.infrastructure.store.work_queue import WORK_TABLE, SqlWorkQueue
from tests.support.stores import postgres_store

pytestmark = pytest.mark.postgres

PROCESS = {"name": "held", "steps": [{"id": "a", "type": "agent_task", "agent": "echo"}]}


@pytest.fixture
def executions(postgres_url: str, tmp_path: Path) -> Iterator[Executions]:
    with postgres_store(postgres_url, tmp_path) as opened:
        yield opened


def test_a_renewal_skips_rows_a_write_has_locked_and_so_cannot_deadlock_with_it(
    executions: Executions, postgres_url: str
) -> None:
    process, _ = InMemoryProcessCatalog().register(PROCESS)
    first, second = (
        start_execution(
            executions, StartRequest(user_id="renewer", process=process, input={})
        ).execution_id
        for _ in range(2)
    )
    queue = SqlWorkQueue(executions.recorder, per_user_limit=10)  # type: ignore[arg-type]
    assert {c.execution_id for c in queue.claim("me", 10, 30)} == {first, second}

    with psycopg.connect(postgres_url) as write:  # a group commit of the same worker, under way
        write.execute(
            f"UPDATE {WORK_TABLE} SET ready_at = ready_at WHERE execution_id = %s", (first,)
        )
        write.execute("SET lock_timeout = '2s'")
        before = lease_expiry(postgres_url, first)
        renewed: list[object] = []
        renewer = threading.Thread(
            target=lambda: renewed.append(queue.renew("me", [first, second], 60))
        )
        began = time.monotonic()
        renewer.start()
        renewer.join(5)
        assert time.monotonic() - began < 1.0, "the renewal waited for the write's row"
        # the write goes on to the other row: no deadlock, no wait for a lock timeout
        write.execute(
            f"UPDATE {WORK_TABLE} SET ready_at = ready_at WHERE execution_id = %s", (second,)
        )
        write.commit()

    (renewal,) = renewed
    assert renewal.held == {first, second}  # type: ignore[attr-defined]
    assert lease_expiry(postgres_url, first) == before  # skipped: renewed next time
    assert lease_expiry(postgres_url, second) > before + 20


def lease_expiry(url: str, execution_id: object) -> float:
    with psycopg.connect(url) as connection:
        row = connection.execute(
            f"SELECT lease_expires_at FROM {WORK_TABLE} WHERE execution_id = %s", (execution_id,)
        ).fetchone()
    assert row is not None
    return float(row[0])
