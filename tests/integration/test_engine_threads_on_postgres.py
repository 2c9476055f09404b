"""Conversation threads on real PostgreSQL: an agent sees its thread's earlier executions."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from agent_ledger.application.agents import AgentContext
from agent_ledger.domain.execution_state import ExecutionStatus
from agent_ledger.infrastructure.runtime import Runtime
from tests.support.databases import fresh_database
from tests.support.engine_scenarios import (
    Engine,
    Gate,
    agent_step,
    engine_settings,
    process,
    running_engine,
)

pytestmark = pytest.mark.postgres


class Remembers:
    """Replies to a message and keeps the thread history each call was given."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.histories: dict[str, list[dict[str, Any]]] = {}
        self.threads: dict[str, str | None] = {}

    async def __call__(self, context: AgentContext, data: Any) -> Any:
        with self.lock:
            self.histories[str(context.run.execution_id)] = [
                dict(h) for h in context.run.thread_history
            ]
            self.threads[str(context.run.execution_id)] = context.run.thread_id
        return {"reply": f"re: {data['message']}"}

    def history_of(self, execution_id: UUID) -> list[dict[str, Any]]:
        with self.lock:
            return self.histories[str(execution_id)]


@pytest.fixture(scope="module")
def engine(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    with running_engine(engine_settings(postgres_url, tmp_path_factory.mktemp("threads"))) as e:
        yield e


@pytest.fixture(scope="module")
def chat(engine: Engine) -> tuple[str, Remembers]:
    agent = Remembers()
    engine.agent("remembers", agent)
    name = engine.register(
        process(
            "chat",
            agent_step("reply", "remembers", input={"message": "{{ input.message }}"}),
            output="{{ steps.reply.output }}",
        )
    )
    return name, agent


def say(engine: Engine, name: str, message: str, user: str, thread: str) -> UUID:
    """Run one turn of a conversation to its end and let the status view catch up."""
    execution_id = engine.start(name, {"message": message}, user=user, thread_id=thread)
    assert engine.finish(execution_id).status is ExecutionStatus.COMPLETED
    assert engine.runtime.wait_for_projection(engine.history(execution_id)[-1]["position"], 10)
    return execution_id


def test_the_second_execution_of_a_thread_gets_the_firsts_input_and_output(
    engine: Engine, chat: tuple[str, Remembers]
) -> None:
    name, agent = chat
    first = say(engine, name, "hello", "alice", "thread-1")

    second = say(engine, name, "and then?", "alice", "thread-1")

    assert agent.history_of(first) == []
    assert agent.history_of(second) == [
        {
            "execution_id": str(first),
            "process": name,
            "status": "completed",
            "input": {"message": "hello"},
            "output": {"reply": "re: hello"},
        }
    ]
    assert agent.threads[str(second)] == "thread-1"


def test_another_users_thread_with_the_same_id_is_not_part_of_the_history(
    engine: Engine, chat: tuple[str, Remembers]
) -> None:
    name, agent = chat
    mine = say(engine, name, "mine", "carol", "shared-id")
    say(engine, name, "theirs", "dave", "shared-id")
    say(engine, name, "elsewhere", "carol", "another-thread")

    latest = say(engine, name, "what did I say?", "carol", "shared-id")

    history = agent.history_of(latest)
    assert [h["execution_id"] for h in history] == [str(mine)]
    assert [h["input"] for h in history] == [{"message": "mine"}]


def test_a_thread_history_lists_every_earlier_execution_oldest_first(
    engine: Engine, chat: tuple[str, Remembers]
) -> None:
    name, agent = chat
    earlier = [say(engine, name, f"message {n}", "erin", "long-thread") for n in range(3)]

    latest = say(engine, name, "summary please", "erin", "long-thread")

    history = agent.history_of(latest)
    assert [h["execution_id"] for h in history] == [str(e) for e in earlier]
    assert [h["output"] for h in history] == [{"reply": f"re: message {n}"} for n in range(3)]


@pytest.fixture
def own_database(postgres_admin: str) -> Iterator[str]:
    """A database of this test's own: it runs a worker and a projector as separate roles."""
    with fresh_database(postgres_admin) as url:
        yield url


def test_a_turn_started_right_after_the_previous_one_completed_sees_its_output(
    own_database: str, tmp_path: Path
) -> None:
    settings = engine_settings(own_database, tmp_path)
    worker = Runtime.start(settings, engine=True, projector=False)  # `agent-ledger worker`
    projector = Runtime.start(settings, engine=False, projector=True)  # `agent-ledger projector`
    try:
        engine = Engine(worker)
        gate, agent = Gate(), Remembers()
        engine.agent(gate.name, gate)
        engine.agent("remembers", agent)
        name = engine.register(
            process(
                "lagging-chat",
                agent_step("hold", gate.name),
                agent_step(
                    "reply",
                    "remembers",
                    depends_on=["hold"],
                    input={"message": "{{ input.message }}"},
                ),
                output="{{ steps.reply.output }}",
            )
        )
        first = engine.start(name, {"message": "hello"}, user="frank", thread_id="t")
        started = engine.wait_for_event(first, "agent_started", step_id="hold")
        assert projector.wait_for_projection(started["position"], 10)
        projector.stop()  # the projector falls behind from here on
        gate.opened.set()
        assert engine.finish(first).status is ExecutionStatus.COMPLETED

        second = engine.start(name, {"message": "again"}, user="frank", thread_id="t")
        assert engine.finish(second).status is ExecutionStatus.COMPLETED
    finally:
        projector.stop()
        worker.stop()

    (turn,) = agent.history_of(second)
    assert (turn["status"], turn["output"]) == ("completed", {"reply": "re: hello"})
