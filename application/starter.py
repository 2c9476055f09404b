"""The start command: one path for the API, where starts that arrive together share a
transaction (group commit), and for callers without an event loop (tests, tools)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.persistence import RecordConflictError

from agent_ledger.application.executions import ExecutionNotFoundError, Executions
from agent_ledger.application.group_commit import GroupCommitter
from agent_ledger.application.path_timing import mark
from agent_ledger.application.processes import RegisteredProcess
from agent_ledger.application.work import Enqueue, WorkChange
from agent_ledger.domain.errors import DomainError
from agent_ledger.domain.execution_state import execution_id_for
from agent_ledger.domain.executions import Execution

T = TypeVar("T")


class IdempotencyKeyReusedError(DomainError):
    """The idempotency key was already used for a different request."""

    def __init__(self, key: str):
        super().__init__(
            f"the Idempotency-Key {key!r} was already used with a different request; "
            "use a new key for a new request"
        )


@dataclass(frozen=True)
class StartRequest:
    """What starting an execution needs: who, which process, with what input."""

    user_id: str
    process: RegisteredProcess
    input: dict[str, Any]
    thread_id: str | None = None
    idempotency_key: str | None = None
    request_id: str | None = None
    caused_by: str | None = None
    correlation_id: str | None = None


@dataclass(frozen=True)
class StartedExecution:
    """The outcome of a start command."""

    execution_id: UUID
    position: int
    created: bool


class ExecutionStarter:
    """Records `ExecutionStarted` and queues the execution; with an idempotency key, a
    repeated request starts nothing and gets the first one's execution.

    With a committer (the API, on its event loop), reads of the store run in a thread and
    saves are group-committed; without one, every step is done on the caller's thread.
    `on_started` is given each execution once it is saved (a worker in the same process
    takes it from there, without waiting for a notice or loading it).
    """

    def __init__(
        self,
        executions: Executions,
        committer: GroupCommitter | None = None,
        on_started: Callable[[Execution], None] | None = None,
    ):
        self.executions = executions
        self.committer = committer
        self.on_started = on_started
        self.thread_turns = ThreadTurns()

    async def start(
        self,
        request: StartRequest,
        before_save: Callable[[UUID], Awaitable[None]] | None = None,
    ) -> StartedExecution:
        """Start the execution; `before_save` is given its id before anything is saved (and
        is not called when the request replays an earlier start)."""
        existing = await self.replayed(request)
        if existing is not None:
            return existing
        key = request.idempotency_key
        execution = _new_execution(request)
        mark("api.created", execution.id)
        if before_save is not None:
            await before_save(execution.id)
        try:
            position = await self._save(execution, [Enqueue(execution.id, request.user_id)])
        except RecordConflictError:
            # random ids do not collide: this start lost a race to a request with its key
            existing = None if key is None else await self.blocking(self._replay, request, key)
            if existing is None:
                raise
            return existing
        if self.on_started is not None:
            self.on_started(execution)
        return StartedExecution(execution.id, position, created=True)

    async def replayed(self, request: StartRequest) -> StartedExecution | None:
        """The start an earlier request with the same idempotency key made, if any."""
        key = request.idempotency_key
        return None if key is None else await self.blocking(self._replay, request, key)

    async def blocking(self, call: Callable[..., T], *args: Any) -> T:
        """Run a blocking read or write of the store: in a thread when this starter serves an
        event loop (it has a committer), else in place."""
        if self.committer is None:
            return call(*args)
        return await asyncio.to_thread(call, *args)

    async def _save(self, execution: Execution, work: Sequence[WorkChange]) -> int:
        if self.committer is None:
            return self.executions.save_and_position(execution, work=work)
        return await self.committer.save(execution, work)

    def _replay(self, request: StartRequest, key: str) -> StartedExecution | None:
        """The execution an earlier request with the same idempotency key started, if any."""
        execution_id = execution_id_for(request.user_id, key)
        try:
            execution = self.executions.get_execution(execution_id, user_id=request.user_id)
        except ExecutionNotFoundError:
            return None
        if (execution.process_name, execution.input, execution.thread_id) != (
            request.process.name,
            request.input,
            request.thread_id,
        ):
            raise IdempotencyKeyReusedError(key)
        return StartedExecution(execution.id, self.executions.last_position(), created=False)


class ThreadTurns:
    """Starts that look at their thread first take turns, per user and thread, in this
    process: of two requests together, the second sees the first's execution."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._holders: dict[tuple[str, str], int] = {}

    @asynccontextmanager
    async def turn(self, user_id: str, thread_id: str) -> AsyncIterator[None]:
        key = (user_id, thread_id)
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._holders[key] = self._holders.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._holders[key] -= 1
            if not self._holders[key]:  # nobody holds or waits: forget the thread
                del self._holders[key], self._locks[key]


def start_execution(executions: Executions, request: StartRequest) -> StartedExecution:
    """Start an execution on this thread, by the API's path with every step done in place."""
    return _done_in_place(ExecutionStarter(executions).start(request))


def _new_execution(request: StartRequest) -> Execution:
    return Execution.start(
        user_id=request.user_id,
        process_name=request.process.name,
        process_version=request.process.version,
        definition=request.process.document,
        step_ids=list(request.process.definition.topological_order()),
        input=request.input,
        thread_id=request.thread_id,
        request_id=request.request_id,
        idempotency_key=request.idempotency_key,
        caused_by=request.caused_by or f"user:{request.user_id}",
        correlation_id=request.correlation_id or request.request_id,
    )


def _done_in_place(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never waits (each step it awaits is done in place)."""
    try:
        coroutine.send(None)
    except StopIteration as finished:
        result: T = finished.value
        return result
    coroutine.close()
    raise RuntimeError("a start done in place waited for something")
