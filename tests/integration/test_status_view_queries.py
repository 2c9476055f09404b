"""The status view's queries page and filter the same way on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_ledger.application.starter import StartRequest, start_execution
from agent_ledger.infrastructure.runtime import Runtime
from agent_ledger.infrastructure.settings import Settings


@pytest.fixture(params=["sqlite", "postgres"])
def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        settings = Settings(database_url=url, jwt_secret="x" * 40, data_dir=tmp_path)
    else:
        settings = Settings(data_dir=tmp_path)
    started = Runtime.start(settings, engine=False)
    try:
        yield started
    finally:
        started.stop()


def start(runtime: Runtime, user: str, process: str = "echo", thread: str | None = None) -> int:
    started = start_execution(
        runtime.executions,
        StartRequest(
            user_id=user, process=runtime.catalog.get(process), input={"n": 1}, thread_id=thread
        ),
    )
    return started.position


def test_pages_run_newest_first_without_gaps_or_repeats(runtime: Runtime) -> None:
    for _ in range(7):
        position = start(runtime, "pager")
    assert runtime.wait_for_projection(position, timeout=10)

    seen = []
    before = None
    while True:
        page = runtime.statuses.list_rows(user_id="pager", limit=3, before=before)
        seen.extend(page)
        if len(page) < 3:
            break
        before = (page[-1].started_at, page[-1].execution_id)

    assert len(seen) == 7
    assert len({row.execution_id for row in seen}) == 7
    started = [row.started_at for row in seen]
    assert started == sorted(started, reverse=True)


def test_filters_narrow_by_user_status_process_and_thread(runtime: Runtime) -> None:
    start(runtime, "alice", thread="t-1")
    start(runtime, "alice", process="cost_optimization")
    position = start(runtime, "bob", thread="t-1")
    assert runtime.wait_for_projection(position, timeout=10)

    assert len(runtime.statuses.list_rows(user_id="alice")) == 2
    assert [r.user_id for r in runtime.statuses.list_rows(user_id=None, thread_id="t-1")] == [
        "bob",
        "alice",
    ]
    assert len(runtime.statuses.list_rows(user_id="alice", process="echo")) == 1
    assert len(runtime.statuses.list_rows(user_id="alice", status="pending")) == 2
    assert runtime.statuses.list_rows(user_id="alice", status="completed") == []
