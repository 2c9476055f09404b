"""The start command: one path, done in place (tests, tools) or on the API's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from agent_ledger.application.executions import Executions
from agent_ledger.application.group_commit import GroupCommitter, _Write
from agent_ledger.application.processes import InMemoryProcessCatalog, RegisteredProcess
from agent_ledger.application.starter import (
    ExecutionStarter,
    IdempotencyKeyReusedError,
    StartedExecution,
    StartRequest,
    start_execution,
)
from agent_ledger.application.work_memory import IN_MEMORY_ENV

PROCESS = {"name": "one", "steps": [{"id": "a", "type": "agent_task", "agent": "echo"}]}

Start = Callable[[Executions, StartRequest], StartedExecution]


def in_place(executions: Executions, request: StartRequest) -> StartedExecution:
    return start_execution(executions, request)


def on_an_event_loop(executions: Executions, request: StartRequest) -> StartedExecution:
    async def start() -> StartedExecution:
        return await ExecutionStarter(executions, GroupCommitter(executions)).start(request)

    return asyncio.run(start())


@pytest.fixture
def process() -> RegisteredProcess:
    return InMemoryProcessCatalog().register(PROCESS)[0]


@pytest.mark.parametrize("start", [in_place, on_an_event_loop])
def test_a_start_records_execution_started_and_returns_its_position(
    start: Start, process: RegisteredProcess
) -> None:
    executions = Executions(env=IN_MEMORY_ENV)
    started = start(executions, StartRequest(user_id="u", process=process, input={"q": 1}))
    assert started.created
    assert started.position == executions.last_position() == 1
    assert [e.type for e in executions.get_history(started.execution_id)] == ["execution_started"]


@pytest.mark.parametrize("start", [in_place, on_an_event_loop])
def test_a_repeated_start_with_the_same_key_replays_the_first_execution(
    start: Start, process: RegisteredProcess
) -> None:
    executions = Executions(env=IN_MEMORY_ENV)
    request = StartRequest(user_id="u", process=process, input={}, idempotency_key="k")
    first, again = start(executions, request), start(executions, request)
    assert (again.execution_id, again.created) == (first.execution_id, False)
    assert executions.last_position() == 1


@pytest.mark.parametrize("start", [in_place, on_an_event_loop])
def test_the_same_key_with_another_input_is_refused(
    start: Start, process: RegisteredProcess
) -> None:
    executions = Executions(env=IN_MEMORY_ENV)
    start(executions, StartRequest(user_id="u", process=process, input={}, idempotency_key="k"))
    with pytest.raises(IdempotencyKeyReusedError):
        start(
            executions,
            StartRequest(user_id="u", process=process, input={"x": 1}, idempotency_key="k"),
        )


class LateStarter(ExecutionStarter):
    """Sees no earlier start with its key until its own save has lost, as a racing request."""

    looks = 0

    def _replay(self, request: StartRequest, key: str) -> StartedExecution | None:
        self.looks += 1
        return None if self.looks == 1 else super()._replay(request, key)


def test_a_start_that_loses_a_race_for_its_key_gets_the_winners_execution(
    process: RegisteredProcess,
) -> None:
    executions = Executions(env=IN_MEMORY_ENV)
    request = StartRequest(user_id="u", process=process, input={}, idempotency_key="k")
    winner = start_execution(executions, request)

    async def race() -> StartedExecution:
        return await LateStarter(executions, GroupCommitter(executions)).start(request)

    loser = asyncio.run(race())
    assert (loser.execution_id, loser.created) == (winner.execution_id, False)
    assert executions.last_position() == 1


class CountedCommitter(GroupCommitter):
    """Counts the transactions it writes."""

    batches: list[int]

    def _save(self, batch: list[_Write]) -> list[int]:
        self.batches.append(len(batch))
        return super()._save(batch)


def test_starts_that_arrive_together_on_the_event_loop_share_transactions(
    process: RegisteredProcess,
) -> None:
    executions = Executions(env=IN_MEMORY_ENV)

    async def burst() -> list[StartedExecution]:
        committer = CountedCommitter(executions, max_in_flight=1)
        committer.batches = []
        starter = ExecutionStarter(executions, committer)
        requests = [StartRequest(user_id=f"u{n}", process=process, input={}) for n in range(20)]
        started = await asyncio.gather(*(starter.start(r) for r in requests))
        assert committer.batches == [20]
        return started

    started = asyncio.run(burst())
    assert sorted(s.position for s in started) == list(range(1, 21))
