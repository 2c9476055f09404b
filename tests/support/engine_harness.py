"""Runs the engine over an in-memory store, with a clock whose sleeps return at once."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from agent_ledger.application.agents import Agent, AgentRegistry
from agent_ledger.application.builtin_agents import register_builtin_agents
from agent_ledger.application.executions import Executions
from agent_ledger.application.processes import InMemoryProcessCatalog
from agent_ledger.application.sample_processes import COST_OPTIMIZATION
from agent_ledger.application.starter import StartRequest, start_execution
from agent_ledger.application.step_runner import StepRunner
from agent_ledger.application.work_memory import (
    IN_MEMORY_ENV,
    InMemoryWorkQueue,
    InMemoryWorkRecorder,
)
from agent_ledger.application.worker import Worker
from agent_ledger.domain.event_names import event_type
from agent_ledger.domain.executions import Execution


class InstantClock:
    """Records every sleep and returns at once, so retry delays cost no time."""

    def __init__(self) -> None:
        self.slept: list[float] = []
        self._now = 0.0
        self._start = datetime.now(UTC)

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._now)

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self._now += seconds
        await asyncio.sleep(0)


class EngineHarness:
    """An engine, its store and catalog, and helpers to run processes to the end."""

    def __init__(self) -> None:
        self.executions = Executions(env=IN_MEMORY_ENV)
        self.catalog = InMemoryProcessCatalog()
        self.catalog.register(COST_OPTIMIZATION)
        self.agents = AgentRegistry()
        register_builtin_agents(self.agents)
        self.clock = InstantClock()
        assert isinstance(self.executions.recorder, InMemoryWorkRecorder)
        self.executions.recorder.now = lambda: self.clock.now().timestamp()
        self.queue = InMemoryWorkQueue(self.executions.recorder, now=self.executions.recorder.now)
        self.runner = StepRunner(self.agents, self.clock)
        self.worker = Worker(
            self.executions, self.queue, self.runner, clock=self.clock, name="worker-1"
        )

    def agent(self, name: str, agent: Agent) -> None:
        self.agents.register_agent(name, agent)

    def process(self, document: Mapping[str, Any]) -> str:
        registered, _ = self.catalog.register(document)
        return registered.name

    def start(self, process: str, input: dict[str, Any] | None = None) -> UUID:
        started = start_execution(
            self.executions,
            StartRequest(user_id="user-a", process=self.catalog.get(process), input=input or {}),
        )
        return started.execution_id

    async def run(self, execution_id: UUID) -> Execution:
        """Let the worker drain the queue, then return the execution as it ended."""
        await self.worker.drain(timeout=10)
        return self.executions.get_execution(execution_id)

    def types(self, execution_id: UUID) -> list[str]:
        return [event_type(e.event) for e in self.executions.get_history(execution_id)]

    def events(self, execution_id: UUID, kind: str) -> list[Any]:
        return [
            e.event
            for e in self.executions.get_history(execution_id)
            if event_type(e.event) == kind
        ]


def one_step(agent: str, **step: Any) -> dict[str, Any]:
    """A process of one agent step, with step options such as retry or timeout."""
    return {
        "name": f"only-{agent}",
        "config": {"parallel_execution": False},
        "steps": [{"id": "work", "type": "agent_task", "agent": agent, "input": {}, **step}],
    }
