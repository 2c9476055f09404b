"""Per-user limits, fairness and cancellation on real PostgreSQL (per_user_limit=2)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from agent_ledger.application.agents import AgentContext, AgentError
from agent_ledger.domain.execution_state import ExecutionStatus
from tests.support.databases import fresh_database
from tests.support.engine_scenarios import (
    Engine,
    agent_step,
    always_failing,
    engine_settings,
    events_of,
    index_of,
    moment,
    of_step,
    process,
    running_engine,
    unique,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.postgres


class Holds:
    """An agent that holds each call until the test releases its input's `key`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.flags: dict[str, threading.Event] = {}
        self.running: set[str] = set()
        self.called: list[str] = []
        self.cancelled: list[str] = []
        self.everything = threading.Event()

    def flag(self, key: str) -> threading.Event:
        with self.lock:
            return self.flags.setdefault(key, threading.Event())

    def release(self, key: str) -> None:
        self.flag(key).set()

    def release_all(self) -> None:
        """Release every call, those that come later too."""
        self.everything.set()

    def is_running(self, *keys: str) -> bool:
        with self.lock:
            return set(keys) <= self.running

    async def __call__(self, context: AgentContext, data: Any) -> Any:
        key = data["key"]
        with self.lock:
            self.called.append(key)
            self.running.add(key)
        try:
            flag = self.flag(key)
            deadline = time.monotonic() + 15
            while not (flag.is_set() or self.everything.is_set()):
                if time.monotonic() > deadline:
                    raise AgentError(f"the test never released {key!r}", retryable=False)
                await asyncio.sleep(0.005)
        except asyncio.CancelledError:
            with self.lock:
                self.cancelled.append(key)
            raise
        finally:
            with self.lock:
                self.running.discard(key)
        return {"key": key}


@pytest.fixture(scope="module")
def engine(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    settings = engine_settings(
        postgres_url, tmp_path_factory.mktemp("limits"), engine_concurrency=16, per_user_limit=2
    )
    with running_engine(settings) as running:
        running.agent("failing", always_failing)
        yield running


@pytest.fixture
def holds() -> Iterator[Holds]:
    agent = Holds()
    yield agent
    agent.release_all()


@pytest.fixture
def held_process(engine: Engine, holds: Holds) -> str:
    """A process whose agent is this test's own: nothing left over from another test uses it."""
    name = unique("holds")
    engine.agent(name, holds)
    return engine.register(
        process("held", agent_step("work", name, input={"key": "{{ input.key }}"}))
    )


def position_of(engine: Engine, execution_id: UUID, event_type: str) -> int:
    messages = engine.history(execution_id)
    return int(messages[index_of(messages, event_type)]["position"])


def test_a_users_third_execution_waits_until_one_of_the_first_two_finishes(
    engine: Engine, holds: Holds, held_process: str
) -> None:
    first, second, third = (
        engine.start(held_process, {"key": f"limit-{n}"}, user="limited") for n in range(3)
    )
    wait_until(lambda: holds.is_running("limit-0", "limit-1"), what="the first two to run")
    # another user's execution, queued after the third, runs to its end meanwhile
    holds.release("other")
    other = engine.start(held_process, {"key": "other"}, user="someone-else")
    engine.finish(other)

    waiting = engine.execution(third)
    waiting_types = engine.types(third)
    assert engine.runtime.wait_for_projection(position_of(engine, other, "execution_completed"), 5)
    row = engine.runtime.statuses.get(third, "limited")
    holds.release("limit-0")
    engine.finish(first)
    wait_until(lambda: holds.is_running("limit-2"), what="the third execution to start")
    holds.release("limit-1")
    holds.release("limit-2")

    assert waiting.status is ExecutionStatus.PENDING
    assert waiting_types == ["execution_started"]
    assert row is not None
    assert row.status == "pending"
    assert engine.finish(third).status is ExecutionStatus.COMPLETED
    assert engine.finish(second).status is ExecutionStatus.COMPLETED
    assert position_of(engine, third, "step_scheduled") > position_of(
        engine, first, "execution_completed"
    )
    assert holds.called.index("limit-2") > holds.called.index("other")


def test_a_user_with_a_long_queue_does_not_hold_up_another_users_execution(
    engine: Engine, holds: Holds, held_process: str
) -> None:
    heavy = [engine.start(held_process, {"key": f"heavy-{n}"}, user="heavy") for n in range(6)]
    wait_until(lambda: holds.is_running("heavy-0", "heavy-1"), what="heavy's first two")
    holds.release("light")

    light = engine.start(held_process, {"key": "light"}, user="light")
    light_execution = engine.finish(light)

    assert light_execution.status is ExecutionStatus.COMPLETED
    assert [engine.execution(i).status for i in heavy[2:]] == [ExecutionStatus.PENDING] * 4
    assert sorted(holds.called[:2]) == ["heavy-0", "heavy-1"]  # admitted together
    assert holds.called[2:] == ["light"]
    holds.release_all()
    assert {engine.finish(i).status for i in heavy} == {ExecutionStatus.COMPLETED}


def test_a_users_waiting_executions_start_in_the_order_they_were_started(
    engine: Engine, holds: Holds, held_process: str
) -> None:
    queue = [engine.start(held_process, {"key": f"queued-{n}"}, user="patient") for n in range(5)]
    wait_until(lambda: holds.is_running("queued-0", "queued-1"), what="the first two")

    for n in range(3):  # each finished execution lets exactly the next one in
        holds.release(f"queued-{n}")
        engine.finish(queue[n])
        next_key = f"queued-{n + 2}"
        wait_until(lambda: holds.is_running(next_key), what=next_key)  # noqa: B023
        assert sorted(holds.called[:2]) == ["queued-0", "queued-1"]  # admitted together
        assert holds.called[2:] == [f"queued-{k}" for k in range(2, n + 3)]
    holds.release_all()

    assert {engine.finish(i).status for i in queue} == {ExecutionStatus.COMPLETED}


def test_cancelling_a_waiting_execution_records_who_and_why_and_runs_nothing(
    engine: Engine, holds: Holds, held_process: str
) -> None:
    running = [engine.start(held_process, {"key": f"busy-{n}"}, user="canceller") for n in range(2)]
    wait_until(lambda: holds.is_running("busy-0", "busy-1"), what="two running executions")
    waiting = engine.start(held_process, {"key": "never-run"}, user="canceller")

    engine.runtime.executions.request_cancellation(
        waiting, user_id="canceller", by="canceller", reason="not needed any more"
    )
    cancelled = engine.finish(waiting)

    messages = engine.history(waiting)
    assert cancelled.status is ExecutionStatus.CANCELLED
    assert [m["type"] for m in messages] == [
        "execution_started",
        "execution_cancellation_requested",
        "execution_cancelled",
    ]
    for message in messages[1:]:
        assert (message["data"]["by"], message["data"]["reason"]) == (
            "canceller",
            "not needed any more",
        )
    assert messages[1]["data"]["caused_by"] == "user:canceller"
    assert "never-run" not in holds.called
    assert holds.is_running("busy-0", "busy-1")  # the running ones were left alone
    holds.release_all()
    assert {engine.finish(i).status for i in running} == {ExecutionStatus.COMPLETED}


def test_cancelling_a_running_execution_stops_its_agent_and_frees_the_users_slot(
    engine: Engine, holds: Holds, held_process: str
) -> None:
    target, other = (
        engine.start(held_process, {"key": key}, user="stopper") for key in ("target", "other")
    )
    wait_until(lambda: holds.is_running("target", "other"), what="both executions to run")
    queued = engine.start(held_process, {"key": "queued"}, user="stopper")
    holds.release("queued")

    engine.runtime.executions.request_cancellation(
        target, user_id="stopper", by="operator-7", reason="runaway agent"
    )
    cancelled = engine.finish(target)
    completed = engine.finish(queued)

    messages = engine.history(target)
    assert cancelled.status is ExecutionStatus.CANCELLED
    assert holds.cancelled == ["target"]  # the agent call itself was cancelled
    assert of_step(messages, "work") == [
        "step_scheduled",
        "step_started",
        "agent_started",
        "step_cancelled",
    ]
    assert events_of(messages, "step_cancelled")[0]["data"]["reason"] == "execution cancelled"
    assert [m["type"] for m in messages[-2:]] == ["step_cancelled", "execution_cancelled"]
    requested, final = (
        events_of(messages, "execution_cancellation_requested")[0],
        messages[-1],
    )
    for message in (requested, final):
        assert (message["data"]["by"], message["data"]["reason"]) == (
            "operator-7",
            "runaway agent",
        )
    assert completed.status is ExecutionStatus.COMPLETED  # it took the freed slot
    assert holds.is_running("other")
    holds.release("other")
    assert engine.finish(other).status is ExecutionStatus.COMPLETED


def test_cancelling_an_execution_that_waits_on_a_long_timer_ends_it_at_once(
    engine: Engine,
) -> None:
    document = process(
        "long-timer",
        {"id": "pause", "type": "timer", "seconds": 600},
        agent_step("after", depends_on=["pause"]),
    )
    execution_id = engine.start(document, user="timer-user")
    engine.wait_for_event(execution_id, "timer_started")

    engine.runtime.executions.request_cancellation(
        execution_id, user_id="timer-user", by="timer-user", reason="too slow"
    )
    execution = engine.finish(execution_id)

    messages = engine.history(execution_id)
    assert execution.status is ExecutionStatus.CANCELLED
    requested = events_of(messages, "execution_cancellation_requested")[0]
    assert (moment(messages[-1]) - moment(requested)).total_seconds() < 5  # not at the timer
    assert of_step(messages, "pause") == [
        "step_scheduled",
        "step_started",
        "timer_started",
        "step_cancelled",
    ]
    assert of_step(messages, "after") == []
    assert messages[-1]["type"] == "execution_cancelled"


def test_cancelling_an_execution_during_its_retry_delay_stops_further_attempts(
    engine: Engine,
) -> None:
    document = process(
        "cancel-in-delay",
        agent_step("bad", "failing", retry={"max_attempts": 3, "initial_interval": 3.0}),
    )
    execution_id = engine.start(document, user="delayed")
    engine.wait_for_event(execution_id, "step_retrying")

    engine.runtime.executions.request_cancellation(
        execution_id, user_id="delayed", by="delayed", reason="give up"
    )
    execution = engine.finish(execution_id)

    messages = engine.history(execution_id)
    assert execution.status is ExecutionStatus.CANCELLED
    assert of_step(messages, "bad") == [
        "step_scheduled",
        "step_started",
        "agent_started",
        "agent_failed",
        "step_retrying",
        "step_cancelled",
    ]
    assert messages[-1]["type"] == "execution_cancelled"


def test_a_worker_drives_no_more_executions_at_once_than_its_capacity(
    postgres_admin: str, tmp_path: Path
) -> None:
    holds = Holds()
    with (
        fresh_database(postgres_admin) as database,
        running_engine(
            engine_settings(database, tmp_path, engine_concurrency=2, per_user_limit=10)
        ) as small,
    ):
        small.agent("holds", holds)
        name = small.register(
            process("capacity", agent_step("work", "holds", input={"key": "{{ input.key }}"}))
        )
        first, second = (small.start(name, {"key": k}, user=k) for k in ("one", "two"))
        wait_until(lambda: holds.is_running("one", "two"), what="the first two executions")
        third = small.start(name, {"key": "three"}, user="three")
        holds.release("three")
        waiting_types = small.types(third)

        holds.release("one")
        small.finish(first)
        assert small.finish(third).status is ExecutionStatus.COMPLETED
        holds.release("two")
        assert small.finish(second).status is ExecutionStatus.COMPLETED
        third_scheduled = position_of(small, third, "step_scheduled")
        first_completed = position_of(small, first, "execution_completed")

    assert waiting_types == ["execution_started"]
    assert third_scheduled > first_completed
    assert holds.called in (["one", "two", "three"], ["two", "one", "three"])
