"""Workers on PostgreSQL are woken by work notices alone: queued work and cancellations."""

from __future__ import annotations

import queue
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest

from agent_ledger.application.executions import Executions
from agent_ledger.application.starter import StartRequest, start_execution
from agent_ledger.application.work import Fence, Finish
from agent_ledger.domain.event_names import event_type
from agent_ledger.infrastructure.catalog.sql import SqlProcessCatalog
from agent_ledger.infrastructure.feed.notices import StoreNotices
from agent_ledger.infrastructure.schema import initialize_schema
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.persistence import (
    libpq_dsn,
    open_executions,
    read_model_engine,
)
from agent_ledger.infrastructure.store.work_queue import SqlWorkQueue
from agent_ledger.infrastructure.work.notices import WorkNotices
from tests.support.stores import short_lease_settings
from tests.support.workers import worker_environment

pytestmark = pytest.mark.postgres

SECRET = "work-notices-secret-" + "x" * 30
WAITING = {
    "name": "waiting",
    "steps": [
        {"id": "first", "type": "agent_task", "agent": "echo", "input": {}},
        {"id": "pause", "type": "timer", "seconds": 4.0, "depends_on": ["first"]},
    ],
}


@pytest.fixture
def settings(postgres_url: str, tmp_path: Path) -> Settings:
    settings = short_lease_settings(postgres_url, SECRET, tmp_path)
    initialize_schema(settings)
    return settings


@pytest.fixture
def executions(settings: Settings) -> Iterator[Executions]:
    opened = open_executions(settings)
    try:
        yield opened
    finally:
        opened.close()


def registered(settings: Settings) -> object:
    engine = read_model_engine(settings)
    try:
        process, _ = SqlProcessCatalog(engine).register(WAITING)
    finally:
        engine.dispose()
    return process


def test_queued_and_cancelled_executions_are_noticed_on_commit(
    settings: Settings, executions: Executions
) -> None:
    notices: queue.Queue[UUID | str | None] = queue.Queue()
    listener = StoreNotices(libpq_dsn(settings))
    WorkNotices(listener, notices.put, lambda: notices.put("missed")).start()
    listener.start()
    try:
        assert notices.get(timeout=10) == "missed"  # connected: anything before may be lost
        started = start_execution(
            executions, StartRequest(user_id="notified", process=registered(settings), input={})
        )
        assert notices.get(timeout=5) is None  # queued work: claim
        executions.request_cancellation(
            started.execution_id, user_id="notified", by="notified", reason="test"
        )
        assert notices.get(timeout=5) == started.execution_id
        assert notices.empty()
    finally:
        listener.stop()


def test_an_ended_execution_is_noticed_when_its_user_has_another_waiting(
    settings: Settings, executions: Executions
) -> None:
    queue_ = SqlWorkQueue(executions.recorder, per_user_limit=1)  # type: ignore[arg-type]
    process = registered(settings)
    notices: queue.Queue[UUID | str | None] = queue.Queue()
    listener = StoreNotices(libpq_dsn(settings))
    WorkNotices(listener, notices.put, lambda: notices.put("missed")).start()
    listener.start()
    try:
        assert notices.get(timeout=10) == "missed"
        alone, first, second = (
            start_execution(
                executions, StartRequest(user_id=user, process=process, input={})
            ).execution_id
            for user in ("alone", "limited", "limited")
        )
        for _ in range(3):
            assert notices.get(timeout=5) is None  # each queued
        claimed = {c.execution_id for c in queue_.claim("w", 10, 30)}  # (and earlier tests')
        assert {alone, first} <= claimed
        assert second not in claimed

        end(executions, alone, "w")  # nobody of its user waits: no notice
        end(executions, first, "w")  # `second` waits for this slot: a worker should claim
        assert notices.get(timeout=5) is None
        assert second in {c.execution_id for c in queue_.claim("w", 10, 30)}
        assert notices.empty()
    finally:
        listener.stop()


def end(executions: Executions, execution_id: UUID, owner: str) -> None:
    execution = executions.get_execution(execution_id)
    execution.fail(error={"message": "ended by the test"})
    executions.save_and_position(execution, work=[Fence(execution_id, owner), Finish(execution_id)])


def test_a_worker_process_stops_a_held_execution_as_soon_as_it_is_cancelled(
    settings: Settings, executions: Executions, tmp_path: Path
) -> None:
    environment = worker_environment(settings) | {
        "AGENT_LEDGER_JWT_SECRET": SECRET,
        "AGENT_LEDGER_LEASE_SECONDS": "30",  # renewals (every 10 s) cannot be what stops it
    }
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [str(Path(sys.executable).parent / "agent-ledger"), "worker", "--log-level", "info"],
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        started = start_execution(
            executions, StartRequest(user_id="held", process=registered(settings), input={})
        ).execution_id
        deadline = time.monotonic() + 20
        while "timer_started" not in history_of(executions, started):
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)

        asked = time.monotonic()
        executions.request_cancellation(started, user_id="held", by="held", reason="no more")
        while "execution_cancelled" not in history_of(executions, started):
            assert time.monotonic() - asked < 3, "the cancellation waited for something else"
            time.sleep(0.05)
        assert "timer_fired" not in history_of(executions, started)
    finally:
        worker.terminate()
        worker.wait(20)


def history_of(executions: Executions, execution_id: UUID) -> list[str]:
    return [event_type(e.event) for e in executions.get_history(execution_id)]
