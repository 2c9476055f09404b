"""A worker that cannot drive an execution backs off, then records it as failed.

An execution written before the API refused NUL bytes has a thread id PostgreSQL cannot
compare: every attempt to read its thread's history fails. The worker used to release
it at once and claim it again, hundreds of times a second, logging each try.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_ledger.application.drive_failures import DriveFailures
from agent_ledger.application.event_log import to_message
from agent_ledger.application.starter import StartRequest, start_execution
from agent_ledger.infrastructure.runtime import Runtime
from agent_ledger.infrastructure.settings import Settings
from tests.support.waiting import wait_until

pytestmark = pytest.mark.postgres

SECRET = "drive-secret-" + "d" * 32


@pytest.fixture
def runtime(postgres_url: str, tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings(database_url=postgres_url, jwt_secret=SECRET, data_dir=tmp_path)
    running = Runtime.start(settings)
    try:
        yield running
    finally:
        running.stop()


def test_an_execution_the_worker_cannot_drive_is_retried_with_back_off_then_failed(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    assert runtime.worker_thread is not None
    runtime.worker_thread.worker.drive_failures = DriveFailures(first=0.05, cap=0.2, max_tries=5)
    caplog.set_level(logging.WARNING, logger="agent_ledger.application.worker")
    started = start_execution(
        runtime.executions,
        StartRequest(
            user_id="user-a", process=runtime.catalog.get("echo"), input={}, thread_id="t\x00"
        ),
    )

    def last_type() -> str:
        history = runtime.executions.get_history(started.execution_id)
        return str(to_message(history[-1])["type"])

    wait_until(lambda: last_type() == "execution_failed", 20, "the execution to be failed")
    failed = runtime.executions.get_execution(started.execution_id)
    assert failed.status.value == "failed"
    assert failed.error is not None
    assert failed.error["type"] == "EngineError"
    assert "5 tries in a row" in failed.error["message"]
    assert "\x00" not in failed.error["message"]
    tries = [r for r in caplog.records if "driving execution" in r.getMessage()]
    assert 1 <= len(tries) <= 4  # once per back-off step, then given up
    assert sum(r.exc_info is not None for r in tries) == 1
