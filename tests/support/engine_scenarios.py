"""Building blocks of the engine's integration tests: a running engine, processes, agents.

Agents run on the worker thread's event loop while the tests run on the main thread, so
test agents coordinate through thread-safe objects and wait in short, bounded steps.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from agent_ledger.application.agents import AgentContext, AgentError
from agent_ledger.application.event_log import to_message
from agent_ledger.application.starter import StartRequest, start_execution
from agent_ledger.domain.executions import Execution
from agent_ledger.infrastructure.runtime import Runtime
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.persistence import open_executions
from tests.support.waiting import wait_until

SECRET = "engine-integration-secret-" + "s" * 32
TERMINAL = frozenset({"completed", "failed", "cancelled", "timed_out"})
FINISHING_EVENTS = frozenset(
    {"execution_completed", "execution_failed", "execution_cancelled", "execution_timed_out"}
)

Message = dict[str, Any]


def engine_settings(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    """Settings with short intervals, so that nothing in a test waits long."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "jwt_secret": SECRET,
        "data_dir": data_dir,
        "poll_interval": 0.1,
        "lease_seconds": 30.0,
        "engine_concurrency": 32,
        "per_user_limit": 32,
        "shutdown_grace": 0.0,
        **overrides,
    }
    return Settings(**values)


def unique(prefix: str) -> str:
    """A process name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def agent_step(step_id: str, agent: Any = "echo", **options: Any) -> dict[str, Any]:
    """An agent task whose input names the step unless the test says otherwise."""
    return {
        "id": step_id,
        "type": "agent_task",
        "agent": agent,
        "input": options.pop("input", {"step": step_id}),
        **options,
    }


def process(
    name: str,
    *steps: dict[str, Any],
    parallel: bool = True,
    output: Any = None,
    **config: Any,
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": unique(name),
        "config": {"parallel_execution": parallel, **config},
        "steps": list(steps),
    }
    if output is not None:
        document["output"] = output
    return document


@dataclass
class Engine:
    """A Runtime (worker thread, projector, change feed) on a real PostgreSQL database."""

    runtime: Runtime

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    def agent(self, name: str, agent: Any) -> None:
        self.runtime.agents.register_agent(name, agent)

    def register(self, document: dict[str, Any]) -> str:
        registered, _ = self.runtime.catalog.register(document)
        return registered.name

    def start(
        self,
        document_or_name: dict[str, Any] | str,
        input: dict[str, Any] | None = None,
        *,
        user: str = "user-a",
        thread_id: str | None = None,
    ) -> UUID:
        name = (
            document_or_name
            if isinstance(document_or_name, str)
            else self.register(document_or_name)
        )
        started = start_execution(
            self.runtime.executions,
            StartRequest(
                user_id=user,
                process=self.runtime.catalog.get(name),
                input=input or {},
                thread_id=thread_id,
            ),
        )
        return started.execution_id

    def execution(self, execution_id: UUID) -> Execution:
        return self.runtime.executions.get_execution(execution_id)

    def finish(self, execution_id: UUID, timeout: float = 15.0) -> Execution:
        """Wait until the execution reaches a terminal state; return it."""
        return wait_until(
            lambda: self._if_terminal(execution_id),
            timeout=timeout,
            what=f"execution {execution_id} to finish",
        )

    def run(
        self,
        document: dict[str, Any],
        input: dict[str, Any] | None = None,
        *,
        user: str = "user-a",
        timeout: float = 15.0,
    ) -> tuple[UUID, Execution]:
        execution_id = self.start(document, input, user=user)
        return execution_id, self.finish(execution_id, timeout)

    def _if_terminal(self, execution_id: UUID) -> Execution | None:
        execution = self.execution(execution_id)
        return execution if execution.status.value in TERMINAL else None

    def history(self, execution_id: UUID) -> list[Message]:
        return [to_message(e) for e in self.runtime.executions.get_history(execution_id)]

    def types(self, execution_id: UUID) -> list[str]:
        return [m["type"] for m in self.history(execution_id)]

    def wait_for_event(
        self, execution_id: UUID, event_type: str, timeout: float = 10.0, **data: Any
    ) -> Message:
        """Wait until the execution records an event of this type (and data); return it."""

        def found() -> Message | None:
            for message in self.history(execution_id):
                if message["type"] == event_type and all(
                    message["data"].get(k) == v for k, v in data.items()
                ):
                    return message
            return None

        return wait_until(found, timeout=timeout, what=f"{event_type} {data or ''}")


@contextmanager
def running_engine(settings: Settings) -> Iterator[Engine]:
    runtime = Runtime.start(settings)
    try:
        yield Engine(runtime)
    finally:
        runtime.stop()


def reread_from_a_fresh_store(settings: Settings, execution_id: UUID) -> Execution:
    """The execution as another process would load it from PostgreSQL."""
    executions = open_executions(settings)
    try:
        return executions.get_execution(execution_id)
    finally:
        executions.close()


# -- reading events -------------------------------------------------------------------------


def of_step(messages: list[Message], step_id: str) -> list[str]:
    """The types of one step's events, in order."""
    return [m["type"] for m in messages if m["data"].get("step_id") == step_id]


def index_of(messages: list[Message], event_type: str, step_id: str | None = None) -> int:
    """The index of the first event of this type (of this step)."""
    for index, message in enumerate(messages):
        if message["type"] == event_type and (
            step_id is None or message["data"].get("step_id") == step_id
        ):
            return index
    raise AssertionError(f"no {event_type} for {step_id!r} in {[m['type'] for m in messages]}")


def events_of(
    messages: list[Message], event_type: str, step_id: str | None = None
) -> list[Message]:
    return [
        m
        for m in messages
        if m["type"] == event_type and (step_id is None or m["data"].get("step_id") == step_id)
    ]


def moment(message: Message, key: str = "timestamp") -> datetime:
    value = message[key] if key == "timestamp" else message["data"][key]
    return datetime.fromisoformat(value)


def step_started_ids(messages: list[Message]) -> list[str]:
    return [m["data"]["step_id"] for m in messages if m["type"] == "step_started"]


# -- agents ---------------------------------------------------------------------------------


async def wait_for_flag(flag: threading.Event, timeout: float = 15.0) -> None:
    """Wait on the agent's loop until the test sets `flag`, in small bounded steps."""
    deadline = time.monotonic() + timeout
    while not flag.is_set():
        if time.monotonic() > deadline:
            raise AgentError("the test never released the agent", retryable=False)
        await asyncio.sleep(0.005)


@dataclass
class Gate:
    """An agent that holds every caller until the test opens it; it counts who is inside."""

    name: str = field(default_factory=lambda: unique("gate"))
    opened: threading.Event = field(default_factory=threading.Event)
    inside: set[tuple[str, str]] = field(default_factory=set)
    entered: list[tuple[str, str]] = field(default_factory=list)
    most_at_once: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, context: AgentContext, data: Any) -> Any:
        key = (str(context.run.execution_id), context.run.step_id)
        with self.lock:
            self.inside.add(key)
            self.entered.append(key)
            self.most_at_once = max(self.most_at_once, len(self.inside))
        try:
            await wait_for_flag(self.opened)
        finally:
            with self.lock:
                self.inside.discard(key)
        return {"passed": context.run.step_id, "input": data}

    def count_inside(self) -> int:
        with self.lock:
            return len(self.inside)

    def count_entered(self) -> int:
        with self.lock:
            return len(self.entered)


@dataclass
class Hung:
    """An agent that never answers; it notes when it starts and when it is cancelled."""

    started: list[tuple[str, int]] = field(default_factory=list)
    cancelled: list[tuple[str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, context: AgentContext, data: Any) -> Any:
        key = (str(context.run.execution_id), context.run.attempt)
        with self.lock:
            self.started.append(key)
        try:
            await asyncio.get_running_loop().create_future()  # until cancelled
        except asyncio.CancelledError:
            with self.lock:
                self.cancelled.append(key)
            raise
        raise AssertionError("unreachable")

    def was_cancelled(self, execution_id: UUID) -> list[int]:
        with self.lock:
            return [a for e, a in self.cancelled if e == str(execution_id)]

    def starts_of(self, execution_id: UUID) -> list[int]:
        with self.lock:
            return [a for e, a in self.started if e == str(execution_id)]


async def flaky_until_third_attempt(context: AgentContext, data: Any) -> Any:
    """Fails its first two attempts, then succeeds."""
    if context.run.attempt < 3:
        raise AgentError(f"transient failure on attempt {context.run.attempt}")
    return {"succeeded_on": context.run.attempt, "input": data}


async def always_failing(context: AgentContext, data: Any) -> Any:
    raise AgentError("the model is overloaded", error_type="Overloaded")


@dataclass
class Calls:
    """An agent that answers with `answer(input)` and records when and with what it ran."""

    answer: Callable[[Any], Any] = lambda data: data
    seen: list[tuple[str, str, Any, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, context: AgentContext, data: Any) -> Any:
        with self.lock:
            self.seen.append(
                (str(context.run.execution_id), context.run.step_id, data, time.monotonic())
            )
        return self.answer(data)

    def of(self, execution_id: UUID) -> list[tuple[str, Any, float]]:
        with self.lock:
            return [(s, d, t) for e, s, d, t in self.seen if e == str(execution_id)]
