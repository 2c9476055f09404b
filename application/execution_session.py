"""An engine's working copy of one execution, and the agent context built on it."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import RecordConflictError

from agent_ledger.application.agents import JSON, AgentRegistry, AgentRun, ToolError
from agent_ledger.application.clock import Clock
from agent_ledger.application.executions import Executions
from agent_ledger.application.group_commit import GroupCommitter
from agent_ledger.application.work import Fence, Finish, WorkChange
from agent_ledger.domain.executions import Execution

Command = Callable[[Execution], None]

MAX_CONFLICT_RETRIES = 10


class ExecutionSession:
    """Applies commands to one execution and saves them, resolving concurrent writers.

    A save that loses the optimistic-concurrency race (the API recorded a cancellation
    request meanwhile, say) reloads the execution and applies the commands again, so
    the aggregate's rules decide on the newest state, never last-writer-wins.
    """

    def __init__(
        self,
        executions: Executions,
        execution: Execution,
        owner: str | None = None,
        committer: GroupCommitter | None = None,
    ):
        self.executions = executions
        self.execution = execution
        self.owner = owner
        self.committer = committer
        self._attribute()
        self._stale = False
        self._staged: list[Command] = []
        self._writing = asyncio.Lock()
        self.position = 0

    @classmethod
    async def load(
        cls,
        executions: Executions,
        execution_id: UUID,
        owner: str | None = None,
        committer: GroupCommitter | None = None,
    ) -> ExecutionSession:
        execution = await asyncio.to_thread(executions.get_execution, execution_id)
        return cls(executions, execution, owner, committer)

    @property
    def id(self) -> UUID:
        return self.execution.id

    @property
    def staged(self) -> bool:
        """Whether commands were applied that are not saved yet."""
        return bool(self._staged)

    async def reload(self) -> Execution:
        """The execution as stored; anything staged and not yet saved is dropped."""
        self._staged.clear()
        return await self._refresh()

    async def _refresh(self) -> Execution:
        """Reload, then apply again what is staged (after a lost race with another writer)."""
        self.execution = await asyncio.to_thread(self.executions.get_execution, self.id)
        self._attribute()
        self._stale = False
        try:
            for command in self._staged:
                command(self.execution)
        except BaseException:
            self._staged.clear()
            self._stale = True
            raise
        return self.execution

    async def stage(self, *commands: Command) -> None:
        """Apply now, save with the next write: a step's end travels with what follows it."""
        async with self._writing:
            if self._stale:
                await self._refresh()
            for command in commands:
                try:
                    command(self.execution)
                except BaseException:
                    self._stale = True
                    raise
            self._staged.extend(commands)

    async def flush(self) -> None:
        """Save whatever is staged, or wait for a write under way to end."""
        if self._staged:
            await self.record()
            return
        async with self._writing:
            pass

    def _attribute(self) -> None:
        """Events the engine records are caused by this worker, correlated to the start request."""
        correlation = self.execution.request_id or str(self.execution.id)
        self.execution.act_as(f"worker:{self.owner or 'engine'}", correlation)

    async def record(self, *commands: Command, work: Sequence[WorkChange] = ()) -> None:
        """Apply the commands and save their events in one write, fenced by the lease."""
        async with self._writing:
            for _ in range(MAX_CONFLICT_RETRIES):
                if self._stale:
                    await self._refresh()
                for command in commands:
                    try:
                        command(self.execution)
                    except BaseException:
                        self._stale = True  # drop whatever earlier commands left pending
                        raise
                self._stale = True  # until the save is known to have happened
                try:
                    self.position = await _outlive_cancellation(self._save(self._work(work)))
                except RecordConflictError:
                    continue
                self._stale = False
                self._staged.clear()
                return
        raise RecordConflictError(f"execution {self.id} kept changing under the engine")

    def _save(self, work: list[WorkChange]) -> asyncio.Future[int]:
        if self.committer is not None:
            return self.committer.submit(self.execution, work)
        return asyncio.ensure_future(
            asyncio.to_thread(self.executions.save_and_position, self.execution, work=work)
        )

    def _work(self, extra: Sequence[WorkChange]) -> list[WorkChange]:
        changes: list[WorkChange] = []
        if self.owner is not None:
            changes.append(Fence(self.id, self.owner))
        changes.extend(extra)
        if self.execution.status.is_terminal:
            changes.append(Finish(self.id))
        return changes


async def _outlive_cancellation(write: asyncio.Future[int]) -> int:
    """Await a write that goes on if the caller is cancelled; a cancelled caller first waits
    for the write to end (holding the session), so that whoever cancelled it and reloads
    the execution reads it with that write, not while it is still being saved."""
    try:
        return await asyncio.shield(write)
    except asyncio.CancelledError:
        while not write.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([write])
        if not write.cancelled():
            write.exception()  # retrieved: the caller is gone, the next holder reloads
        raise


class EngineAgentContext:
    """The context a built-in agent runs with: its thoughts and tool calls become events."""

    def __init__(
        self,
        session: ExecutionSession,
        run: AgentRun,
        registry: AgentRegistry,
        clock: Clock,
    ):
        self._session = session
        self._run = run
        self._registry = registry
        self._clock = clock
        self._calls = 0
        self._remote_calls: dict[str, float] = {}

    @property
    def run(self) -> AgentRun:
        return self._run

    async def think(self, message: str) -> None:
        step_id, attempt = self._run.step_id, self._run.attempt
        await self._session.record(lambda e: e.record_thinking(step_id, attempt, str(message)))

    async def call_tool(self, tool: str, **args: JSON) -> JSON:
        step_id, attempt = self._run.step_id, self._run.attempt
        self._calls += 1
        call_id = f"{step_id}.{attempt}.{self._calls}"
        await self._session.record(lambda e: e.start_tool(step_id, attempt, call_id, tool, args))
        started = self._clock.monotonic()
        try:
            function = self._registry.tool(tool)
            result = await asyncio.to_thread(function, **args)
            json.dumps(result, allow_nan=False)
        except Exception as error:
            failure = error if isinstance(error, ToolError) else ToolError(f"{error}")
            details = {"type": type(error).__name__, "message": str(error)}
            elapsed = milliseconds(self._clock.monotonic() - started)
            await self._session.record(
                lambda e: e.fail_tool(step_id, attempt, call_id, details, elapsed)
            )
            raise failure from error
        elapsed = milliseconds(self._clock.monotonic() - started)
        await self._session.record(
            lambda e: e.complete_tool(step_id, attempt, call_id, result, elapsed)
        )
        return result

    def tool_call_id(self, proposed: str) -> str:
        """`proposed` unless a call of this step (any attempt) used it; then one made unique."""
        step = self._session.execution.steps[self._run.step_id]
        taken = set(step.finished_tool_calls) | set(step.open_tool_calls)
        candidate, number = proposed, 1
        while candidate in taken:
            number += 1
            candidate = f"{proposed}#{self._run.attempt}.{number}"
        return candidate

    async def stream_output(self, text: str, index: int) -> None:
        step_id, attempt = self._run.step_id, self._run.attempt
        await self._session.record(lambda e: e.record_output_delta(step_id, attempt, text, index))

    async def report_model_call(
        self,
        model: str,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        duration_ms: float,
        cost_usd: float | None,
    ) -> None:
        step_id, attempt = self._run.step_id, self._run.attempt
        await self._session.record(
            lambda e: e.complete_llm_call(
                step_id, attempt, model, prompt_tokens, completion_tokens, duration_ms, cost_usd
            )
        )

    async def report_tool_started(self, call_id: str, tool: str, args: JSON) -> None:
        """Record a tool call an agent made elsewhere (an HTTP agent's own tools)."""
        step_id, attempt = self._run.step_id, self._run.attempt
        self._remote_calls[call_id] = self._clock.monotonic()
        await self._session.record(lambda e: e.start_tool(step_id, attempt, call_id, tool, args))

    async def report_tool_finished(
        self,
        call_id: str,
        result: JSON = None,
        error: str | None = None,
        error_type: str = "ToolError",
    ) -> None:
        """Record the end of a tool call reported with `report_tool_started`."""
        step_id, attempt = self._run.step_id, self._run.attempt
        started = self._remote_calls.pop(call_id, self._clock.monotonic())
        elapsed = milliseconds(self._clock.monotonic() - started)
        if error is None:
            await self._session.record(
                lambda e: e.complete_tool(step_id, attempt, call_id, result, elapsed)
            )
        else:
            details = {"type": error_type, "message": error}
            await self._session.record(
                lambda e: e.fail_tool(step_id, attempt, call_id, details, elapsed)
            )


def milliseconds(seconds: float) -> float:
    """A duration as recorded in events: milliseconds, to the microsecond."""
    return round(seconds * 1000, 3)


def error_details(error: BaseException, **extra: Any) -> dict[str, Any]:
    """How an error is recorded in events: its type and message."""
    error_type = getattr(error, "error_type", None) or type(error).__name__
    return {"type": error_type, "message": str(error) or error_type, **extra}
