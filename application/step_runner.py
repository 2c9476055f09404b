"""Runs one attempt of one step and records how it ended."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import timedelta
from functools import partial
from typing import Any, Protocol
from uuid import UUID

from agent_ledger.application.agents import (
    JSON,
    AgentError,
    AgentRegistry,
    AgentRun,
    RemoteAgentContext,
)
from agent_ledger.application.clock import Clock
from agent_ledger.application.execution_session import (
    EngineAgentContext,
    ExecutionSession,
    error_details,
    milliseconds,
)
from agent_ledger.application.model_agent import ModelAgent, model_input
from agent_ledger.domain.errors import ExpressionError
from agent_ledger.domain.execution_state import StepStatus
from agent_ledger.domain.executions import Execution
from agent_ledger.domain.expressions import evaluate_condition, render
from agent_ledger.domain.processes import (
    HttpAgent,
    LlmAgent,
    OnError,
    StepDefinition,
    StepType,
    agent_name,
)


class HttpAgentCaller(Protocol):
    """Calls an agent that lives behind a URL (an adapter in infrastructure)."""

    async def __call__(
        self, agent: HttpAgent, context: RemoteAgentContext, input: JSON
    ) -> JSON: ...


LOST_ATTEMPT_ALLOWANCE = 3

ThreadHistory = Callable[[str, str, UUID], Sequence[Mapping[str, Any]]]
"""(user_id, thread_id, execution_id) → earlier executions of the thread, oldest first."""


class StepTimeoutError(AgentError):
    """An attempt ran longer than its step's timeout."""

    def __init__(self, seconds: float):
        super().__init__(
            f"the attempt exceeded its timeout of {seconds:g}s", error_type="StepTimeout"
        )


class WorkerLostError(AgentError):
    """The worker running an attempt stopped before the attempt ended."""

    def __init__(self) -> None:
        super().__init__("the worker running this attempt stopped", error_type="WorkerLost")


def scope_of(execution: Execution) -> dict[str, Any]:
    """What templates and conditions can see: the input and every step's output."""
    return {
        "input": execution.input,
        "steps": {
            s: {"output": st.output, "status": st.status.value} for s, st in execution.steps.items()
        },
    }


async def within_timeout(call: Coroutine[Any, Any, Any], timeout: float | None) -> Any:
    """Await an agent call for at most `timeout` seconds.

    The call runs as a task of its own and is cancelled when time is up or when the
    attempt itself is cancelled; an agent that ignores its cancellation and answers
    late is not waited for, and its answer is dropped.
    """
    task = asyncio.ensure_future(call)
    task.add_done_callback(_forget_result)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
        # uvloop keeps time in whole milliseconds and may wake up to 1 ms early:
        # a step is never timed out before its timeout has passed.
        while not done and deadline is not None and (left := deadline - time.monotonic()) > 0:
            done, _ = await asyncio.wait({task}, timeout=left)
    finally:
        if not task.done():
            task.cancel()
    if not done:
        raise TimeoutError
    return task.result()


def _forget_result(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so an abandoned call's failure is not reported twice


def _not_enabled(what: str) -> AgentError:
    return AgentError(
        f"{what} are not enabled in this worker", error_type="UnsupportedAgent", retryable=False
    )


class StepRunner:
    """Runs attempts: agents (built-in or HTTP), gateways and timers."""

    def __init__(
        self,
        agents: AgentRegistry,
        clock: Clock,
        http_agents: HttpAgentCaller | None = None,
        thread_history: ThreadHistory | None = None,
        model_agent: ModelAgent | None = None,
    ):
        self.agents = agents
        self.clock = clock
        self.http_agents = http_agents
        self.thread_history = thread_history
        self.model_agent = model_agent

    async def aclose(self) -> None:
        """Close the connections the runner's agent clients keep open."""
        closing = getattr(self.http_agents, "aclose", None)
        if closing is not None:
            await closing()
        if self.model_agent is not None:
            await self.model_agent.aclose()

    def begin(
        self, session: ExecutionSession, step: StepDefinition, attempt: int
    ) -> tuple[list[Any], Any]:
        """Commands that open an attempt (and start its agent), with the agent's input.

        The input is rendered here so that the agent's start is recorded in the same write
        as the step's; a template that fails to render is returned in its place.
        """
        commands: list[Any] = [
            partial(Execution.schedule_step, step_id=step.id, attempt=attempt),
            partial(Execution.start_step, step_id=step.id, attempt=attempt),
        ]
        prepared: Any = None
        if step.type is StepType.AGENT_TASK:
            scope = scope_of(session.execution)
            try:
                if isinstance(step.agent, LlmAgent):
                    prepared = model_input(step.agent, step.input, scope)
                else:
                    prepared = render(step.input, scope)
            except ExpressionError as error:
                return commands, error
            commands.append(
                partial(
                    Execution.start_agent,
                    step_id=step.id,
                    attempt=attempt,
                    agent=agent_name(step.agent),
                    input=prepared,
                )
            )
        if step.type is StepType.WAIT_FOR_SIGNAL:
            timeout = step.timeout_seconds
            deadline = None if timeout is None else self.clock.now() + timedelta(seconds=timeout)
            commands.append(
                partial(
                    Execution.await_signal,
                    step_id=step.id,
                    attempt=attempt,
                    signal=step.signal or "",
                    deadline=deadline,
                )
            )
        if step.type is StepType.TIMER:
            seconds = step.seconds or 0.0
            fire_at = self.clock.now() + timedelta(seconds=seconds)
            commands.append(
                partial(
                    Execution.start_timer,
                    step_id=step.id,
                    attempt=attempt,
                    seconds=seconds,
                    fire_at=fire_at,
                )
            )
        return commands, prepared

    def gateway_commands(
        self, execution: Execution, step: StepDefinition, attempt: int
    ) -> list[Any]:
        """Evaluate an exclusive gateway: the first true condition wins, else the default."""
        chosen: int | None = None
        reason = "no route matched and there is no default"
        scope = scope_of(execution)
        for index, route in enumerate(step.routes):
            if route.default:
                chosen, reason = index, "no condition matched: default route"
                break
            if route.when is not None and evaluate_condition(route.when, scope):
                chosen, reason = index, f"condition true: {route.when}"
                break
        next_steps = list(step.routes[chosen].next) if chosen is not None else []
        return [
            partial(
                Execution.evaluate_gateway,
                step_id=step.id,
                attempt=attempt,
                route=chosen,
                next_steps=next_steps,
                reason=reason,
            ),
            partial(
                Execution.complete_step,
                step_id=step.id,
                attempt=attempt,
                output={"route": chosen, "next": next_steps},
            ),
        ]

    async def run_agent(
        self, session: ExecutionSession, step: StepDefinition, attempt: int, agent_input: Any
    ) -> None:
        """Run an agent attempt (opened by `begin`) to its end, recording how it ended."""
        if isinstance(agent_input, ExpressionError):
            await self.after_failure(session, step, attempt, agent_input)
            return
        context = EngineAgentContext(
            session, await self._run_of(session, step, attempt), self.agents, self.clock
        )
        started = self.clock.monotonic()
        try:
            output, usage = await within_timeout(
                self._call(step, context, agent_input), step.timeout_seconds
            )
            json.dumps(output, allow_nan=False)  # JSON only: no NaN, no objects
        except TimeoutError:
            timeout = step.timeout_seconds or 0.0
            await session.record(
                partial(
                    Execution.time_out_step,
                    step_id=step.id,
                    attempt=attempt,
                    timeout_seconds=timeout,
                )
            )
            await self.after_failure(session, step, attempt, StepTimeoutError(timeout))
            return
        except Exception as error:
            failure = (
                error
                if isinstance(error, AgentError)
                else AgentError(str(error), error_type=type(error).__name__)
            )
            await session.record(
                partial(
                    Execution.fail_agent,
                    step_id=step.id,
                    attempt=attempt,
                    error=error_details(failure),
                    duration_ms=self._elapsed(started),
                )
            )
            await self.after_failure(session, step, attempt, failure)
            return
        # saved with whatever the driver records next (the next step's start, the end)
        await session.stage(
            partial(
                Execution.complete_agent,
                step_id=step.id,
                attempt=attempt,
                output=output,
                duration_ms=self._elapsed(started),
                usage=usage,
            ),
            partial(Execution.complete_step, step_id=step.id, attempt=attempt, output=output),
        )

    async def after_failure(
        self, session: ExecutionSession, step: StepDefinition, attempt: int, error: Exception
    ) -> None:
        """Record a failed attempt: another attempt later, a skip, or the step's failure."""
        details = error_details(error, attempt=attempt)
        retryable = getattr(error, "retryable", False)
        # an attempt lost with its worker does not use up the step's own attempts
        allowance = LOST_ATTEMPT_ALLOWANCE if isinstance(error, WorkerLostError) else 0
        # a resumed execution's steps get their retry budget afresh
        counted = attempt - session.execution.steps[step.id].attempts_before
        if retryable and step.retry.allows_another_attempt(counted - allowance, details["type"]):
            delay = step.retry.delay_after(counted)
            retry_at = self.clock.now() + timedelta(seconds=delay)
            await session.record(
                partial(
                    Execution.retry_step,
                    step_id=step.id,
                    attempt=attempt,
                    error=details,
                    delay_seconds=delay,
                    retry_at=retry_at,
                )
            )
        elif step.on_error is OnError.SKIP_STEP:
            await session.record(partial(Execution.skip_step, step_id=step.id, reason="error"))
        else:
            state = session.execution.steps[step.id]
            if state.status in (StepStatus.RUNNING, StepStatus.TIMED_OUT):
                await session.record(
                    partial(Execution.fail_step, step_id=step.id, attempt=attempt, error=details)
                )

    async def _call(
        self, step: StepDefinition, context: EngineAgentContext, agent_input: Any
    ) -> tuple[Any, dict[str, Any] | None]:
        """The agent's output, and its usage when it is a model."""
        if isinstance(step.agent, LlmAgent):
            if self.model_agent is None:
                raise _not_enabled("model agents")
            answer = await self.model_agent(step.agent, context, agent_input)
            return answer.output, answer.usage
        if isinstance(step.agent, HttpAgent):
            if self.http_agents is None:
                raise _not_enabled("HTTP agents")
            return await self.http_agents(step.agent, context, agent_input), None
        return await self.agents.agent(str(step.agent))(context, agent_input), None

    async def _run_of(
        self, session: ExecutionSession, step: StepDefinition, attempt: int
    ) -> AgentRun:
        execution = session.execution
        history: tuple[Mapping[str, Any], ...] = ()
        if execution.thread_id is not None and self.thread_history is not None:
            history = tuple(
                await asyncio.to_thread(
                    self.thread_history, execution.user_id, execution.thread_id, execution.id
                )
            )
        return AgentRun(
            execution.user_id, execution.id, step.id, attempt, execution.thread_id, history
        )

    def _elapsed(self, started: float) -> float:
        return milliseconds(self.clock.monotonic() - started)
