"""The engine under load on real PostgreSQL: many users and agents at once, hung agents."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest

from agent_ledger.application.agents import AgentContext
from agent_ledger.domain.execution_state import ExecutionStatus, StepStatus
from tests.support.engine_scenarios import (
    Engine,
    Gate,
    Hung,
    agent_step,
    always_failing,
    engine_settings,
    events_of,
    moment,
    of_step,
    process,
    running_engine,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.postgres

USERS = [f"tenant-{n}" for n in range(6)]


@pytest.fixture(scope="module")
def engine(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    settings = engine_settings(
        postgres_url, tmp_path_factory.mktemp("load"), engine_concurrency=24, per_user_limit=12
    )
    with running_engine(settings) as running:
        running.agent("failing", always_failing)
        yield running


@pytest.fixture
def gate(engine: Engine) -> Iterator[Gate]:
    opened = Gate()
    engine.agent(opened.name, opened)
    yield opened
    opened.opened.set()


@pytest.fixture
def hung(engine: Engine) -> Hung:
    agent = Hung()
    engine.agent("hung", agent)
    return agent


# -- many users, many agents -----------------------------------------------------------------------


class WhoAmI:
    """Answers with the user its context names and the secret of its input."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.lock = threading.Lock()
        self.seen: dict[str, set[str]] = {}

    async def __call__(self, context: AgentContext, data: Any) -> Any:
        with self.lock:
            self.seen.setdefault(context.run.user_id, set()).add(data["secret"])
        await context.think(f"working for {context.run.user_id}")
        await self.gate(context, data)
        return {"user": context.run.user_id, "secret": data["secret"]}


def test_six_users_running_at_once_never_see_each_others_executions_or_events(
    engine: Engine, gate: Gate
) -> None:
    who = WhoAmI(gate)
    engine.agent("who-am-i", who)
    name = engine.register(
        process(
            "tenants",
            agent_step("work", "who-am-i", input={"secret": "{{ input.secret }}"}),
            agent_step("check", depends_on=["work"]),
        )
    )
    started: dict[str, list[UUID]] = {
        user: [engine.start(name, {"secret": f"{user}/{n}"}, user=user) for n in range(2)]
        for user in USERS
    }
    wait_until(lambda: gate.count_inside() == 12, what="every user's executions to run at once")
    gate.opened.set()

    for user, ids in started.items():
        for n, execution_id in enumerate(ids):
            execution = engine.finish(execution_id)
            messages = engine.history(execution_id)
            assert execution.status is ExecutionStatus.COMPLETED
            assert execution.user_id == user
            assert execution.output["work"] == {"user": user, "secret": f"{user}/{n}"}
            assert {m["user_id"] for m in messages} == {user}
            assert {m["execution_id"] for m in messages} == {str(execution_id)}
            thinking = events_of(messages, "agent_thinking")
            assert [m["data"]["message"] for m in thinking] == [f"working for {user}"]
    assert gate.most_at_once == 12
    assert who.seen == {user: {f"{user}/0", f"{user}/1"} for user in USERS}
    last = max(engine.history(i)[-1]["position"] for ids in started.values() for i in ids)
    assert engine.runtime.wait_for_projection(last, 10)
    for user, ids in started.items():
        rows = engine.runtime.statuses.list_rows(user_id=user, process=name)
        assert sorted(r.execution_id for r in rows) == sorted(ids)
        assert {r.status for r in rows} == {"completed"}


def test_twelve_agents_run_at_the_same_time_when_the_limits_allow_it(
    engine: Engine, gate: Gate
) -> None:
    name = engine.register(process("crowd", agent_step("work", gate.name)))
    ids = [engine.start(name, {"n": n}, user="crowd-user") for n in range(12)]

    wait_until(lambda: gate.count_inside() == 12, what="twelve agents inside at once")
    # an attempt's start is saved within the engine's flush window of its agent starting
    wait_until(
        lambda: all(engine.execution(i).steps["work"].status is StepStatus.RUNNING for i in ids),
        what="twelve steps recorded running",
    )
    running = [engine.execution(i).steps["work"].status for i in ids]
    gate.opened.set()
    finished = [engine.finish(i) for i in ids]

    assert running == [StepStatus.RUNNING] * 12
    assert gate.most_at_once == 12
    assert [e.status for e in finished] == [ExecutionStatus.COMPLETED] * 12
    assert sorted(e.output["work"]["input"]["step"] for e in finished) == ["work"] * 12


def test_twelve_parallel_steps_of_one_execution_run_at_the_same_time(
    engine: Engine, gate: Gate
) -> None:
    branches = [agent_step(f"b{n}", gate.name) for n in range(12)]
    document = process(
        "wide", *branches, agent_step("join", depends_on=[b["id"] for b in branches])
    )
    execution_id = engine.start(document)

    wait_until(lambda: gate.count_inside() == 12, what="twelve branches inside at once")
    gate.opened.set()
    execution = engine.finish(execution_id)

    assert gate.most_at_once == 12
    assert execution.status is ExecutionStatus.COMPLETED
    assert execution.steps["join"].status is StepStatus.COMPLETED


# -- hung agents ----------------------------------------------------------------------------------


def test_a_hung_agent_is_cancelled_at_its_step_timeout_and_retried_then_failed(
    engine: Engine, hung: Hung
) -> None:
    document = process(
        "hung",
        agent_step(
            "stuck",
            "hung",
            timeout_seconds=0.2,
            retry={"max_attempts": 2, "initial_interval": 0.05},
        ),
    )

    execution_id, execution = engine.run(document)

    messages = engine.history(execution_id)
    assert execution.status is ExecutionStatus.FAILED
    assert of_step(messages, "stuck") == [
        "step_scheduled",
        "step_started",
        "agent_started",
        "step_timed_out",
        "step_retrying",
        "step_scheduled",
        "step_started",
        "agent_started",
        "step_timed_out",
        "step_failed",
    ]
    assert hung.was_cancelled(execution_id) == [1, 2]  # each hung call was really cancelled
    for timed_out in events_of(messages, "step_timed_out"):
        assert timed_out["data"]["timeout_seconds"] == 0.2
    agent_starts = events_of(messages, "agent_started")
    timeouts = events_of(messages, "step_timed_out")
    for began, ended in zip(agent_starts, timeouts, strict=True):
        assert 0.2 <= (moment(ended) - moment(began)).total_seconds() < 2
    (retrying,) = events_of(messages, "step_retrying")
    assert retrying["data"]["error"]["type"] == "StepTimeout"
    assert execution.error is not None
    assert (execution.error["type"], execution.error["attempt"]) == ("StepTimeout", 2)


def test_a_step_that_hangs_once_times_out_and_succeeds_on_its_retry(engine: Engine) -> None:
    cancelled = threading.Event()

    async def hangs_first(context: AgentContext, data: Any) -> Any:
        if context.run.attempt == 1:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return {"attempt": context.run.attempt}

    engine.agent("hangs-first", hangs_first)
    document = process(
        "hangs-once",
        agent_step(
            "stuck",
            "hangs-first",
            timeout_seconds=0.2,
            retry={"max_attempts": 3, "initial_interval": 0.05},
        ),
    )

    execution_id, execution = engine.run(document)

    assert execution.status is ExecutionStatus.COMPLETED
    assert execution.output == {"stuck": {"attempt": 2}}
    assert cancelled.is_set()
    types = engine.types(execution_id)
    assert types.count("step_timed_out") == 1
    assert types.count("step_completed") == 1


def test_an_agent_that_ignores_its_cancellation_still_times_out_and_its_late_result_is_dropped(
    engine: Engine,
) -> None:
    async def stubborn(context: AgentContext, data: Any) -> Any:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(0.1)  # finishes its work anyway, then answers
        return {"late": True}

    engine.agent("stubborn", stubborn)
    document = process("stubborn", agent_step("stuck", "stubborn", timeout_seconds=0.2))

    execution_id, execution = engine.run(document)

    types = engine.types(execution_id)
    assert "step_timed_out" in types
    assert "step_completed" not in types
    assert execution.status is ExecutionStatus.FAILED


def test_an_execution_past_its_own_timeout_is_timed_out_and_its_agents_cancelled(
    engine: Engine, hung: Hung
) -> None:
    document = process(
        "slow-execution",
        agent_step("quick"),
        agent_step("stuck", "hung", depends_on=["quick"]),
        agent_step("never", depends_on=["stuck"]),
        timeout_seconds=0.4,
    )

    execution_id, execution = engine.run(document)

    messages = engine.history(execution_id)
    assert execution.status is ExecutionStatus.TIMED_OUT
    assert [m["type"] for m in messages[-2:]] == ["step_cancelled", "execution_timed_out"]
    assert messages[-1]["data"]["timeout_seconds"] == 0.4
    assert of_step(messages, "never") == []
    assert hung.was_cancelled(execution_id) == [1]
    elapsed = moment(messages[-1]) - moment(messages[0])
    assert 0.4 <= elapsed.total_seconds() < 3


def test_an_execution_timeout_also_ends_an_execution_waiting_for_a_retry(
    engine: Engine,
) -> None:
    document = process(
        "timeout-in-delay",
        agent_step("bad", "failing", retry={"max_attempts": 3, "initial_interval": 4.0}),
        timeout_seconds=0.4,
    )

    execution_id, execution = engine.run(document)

    messages = engine.history(execution_id)
    assert execution.status is ExecutionStatus.TIMED_OUT
    assert of_step(messages, "bad")[-2:] == ["step_retrying", "step_cancelled"]
    assert messages[-1]["type"] == "execution_timed_out"
    assert (moment(messages[-1]) - moment(messages[0])).total_seconds() < 3.5  # before the retry


def test_an_execution_timeout_ends_an_execution_waiting_on_a_long_timer_in_time(
    engine: Engine,
) -> None:
    document = process(
        "timeout-in-timer",
        {"id": "pause", "type": "timer", "seconds": 60},
        agent_step("after", depends_on=["pause"]),
        timeout_seconds=0.5,
    )

    execution_id, execution = engine.run(document, timeout=4)

    assert execution.status is ExecutionStatus.TIMED_OUT
    assert engine.types(execution_id)[-2:] == ["step_cancelled", "execution_timed_out"]


def test_a_hung_optional_step_times_out_and_is_skipped_so_the_execution_completes(
    engine: Engine, hung: Hung
) -> None:
    document = process(
        "hung-optional",
        agent_step("optional", "hung", timeout_seconds=0.2, on_error="skip_step"),
        agent_step("after", depends_on=["optional"]),
    )

    execution_id, execution = engine.run(document)

    messages = engine.history(execution_id)
    assert execution.status is ExecutionStatus.COMPLETED
    assert of_step(messages, "optional") == [
        "step_scheduled",
        "step_started",
        "agent_started",
        "step_timed_out",
        "step_skipped",
    ]
    assert events_of(messages, "step_skipped")[0]["data"]["reason"] == "error"
    assert hung.was_cancelled(execution_id) == [1]
    assert execution.output == {"after": {"step": "after"}}


def test_cancelling_an_execution_whose_agent_ignores_the_cancellation_records_no_completion(
    engine: Engine,
) -> None:
    inside = threading.Event()

    async def stubborn(context: AgentContext, data: Any) -> Any:
        inside.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(0.1)  # finishes its work anyway, then answers
        return {"late": True}

    engine.agent("stubborn-to-cancel", stubborn)
    execution_id = engine.start(
        process("stubborn-cancel", agent_step("work", "stubborn-to-cancel"))
    )
    wait_until(inside.is_set, what="the agent to run")

    engine.runtime.executions.request_cancellation(
        execution_id, user_id="user-a", by="user-a", reason="stop"
    )
    execution = engine.finish(execution_id)

    types = engine.types(execution_id)
    assert execution.status is ExecutionStatus.CANCELLED
    assert "step_completed" not in types
    assert types[-2:] == ["step_cancelled", "execution_cancelled"]
