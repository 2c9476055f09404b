"""The process engine (v1): drives executions step by step, recording every transition."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import timedelta
from functools import partial
from typing import Any
from uuid import UUID

from application.agents import AgentError, AgentRegistry, AgentRun
from application.clock import Clock, SystemClock
from application.execution_session import EngineAgentContext, ExecutionSession, error_details
from application.executions import Executions, LoggedEvent
from domain.errors import DomainError, ExpressionError
from domain.execution_state import StepStatus
from domain.executions import Execution
from domain.expressions import evaluate_condition, render
from domain.processes import HttpAgent, OnError, ProcessDefinition, StepDefinition, StepType

log = logging.getLogger(__name__)

ENGINE_ACTOR = "engine"


class StepTimeoutError(AgentError):
    """An attempt ran longer than its step's timeout."""

    def __init__(self, seconds: float):
        super().__init__(
            f"the attempt exceeded its timeout of {seconds:g}s", error_type="StepTimeout"
        )


class Engine:
    """Runs executions to completion; one asyncio task per execution.

    Feed it with `on_events` (thread-safe) from the store's change feed: it starts
    executions when `ExecutionStarted` appears and stops them on a cancellation request.
    """

    def __init__(
        self,
        executions: Executions,
        agents: AgentRegistry,
        *,
        clock: Clock | None = None,
        max_concurrent: int = 32,
    ):
        self.executions = executions
        self.agents = agents
        self.clock = clock or SystemClock()
        self._slots = asyncio.Semaphore(max_concurrent)
        self._tasks: dict[UUID, asyncio.Task[None]] = {}
        self._cancel_requested: set[UUID] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    # -- feeding the engine --------------------------------------------------------------------

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach to the event loop the engine's tasks run on."""
        self._loop = loop

    def on_events(self, events: Iterable[LoggedEvent]) -> None:
        """Thread-safe: react to newly stored events."""
        for logged in events:
            event = logged.event
            if isinstance(event, Execution.ExecutionStarted):
                self._call_soon(self.submit, event.originator_id)
            elif isinstance(event, Execution.ExecutionCancellationRequested):
                self._call_soon(self.cancel, event.originator_id)

    def submit(self, execution_id: UUID) -> None:
        """Start driving an execution unless it is already being driven (loop thread only)."""
        if execution_id in self._tasks:
            return
        task = asyncio.get_running_loop().create_task(self._drive_guarded(execution_id))
        self._tasks[execution_id] = task
        self._idle.clear()
        task.add_done_callback(lambda _: self._forget(execution_id))

    def cancel(self, execution_id: UUID) -> None:
        """Stop a running execution; it records the cancellation itself (loop thread only)."""
        task = self._tasks.get(execution_id)
        if task is None:
            self.submit(execution_id)  # not running here: driving it records the cancellation
            return
        self._cancel_requested.add(execution_id)
        task.cancel()

    async def wait_idle(self) -> None:
        """Wait until no execution is being driven."""
        await self._idle.wait()

    async def shutdown(self) -> None:
        """Stop driving; interrupted executions resume when an engine starts again."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _call_soon(self, function: Any, execution_id: UUID) -> None:
        if self._loop is None:
            raise RuntimeError("the engine is not bound to an event loop")
        self._loop.call_soon_threadsafe(function, execution_id)

    def _forget(self, execution_id: UUID) -> None:
        self._tasks.pop(execution_id, None)
        self._cancel_requested.discard(execution_id)
        if not self._tasks:
            self._idle.set()

    # -- driving one execution -----------------------------------------------------------------

    async def _drive_guarded(self, execution_id: UUID) -> None:
        try:
            async with self._slots:
                await self.drive(execution_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("engine stopped driving execution %s", execution_id)

    async def drive(self, execution_id: UUID) -> None:
        """Run an execution from wherever its events say it is, to a terminal state."""
        session = await ExecutionSession.load(self.executions, execution_id)
        execution = session.execution
        if execution.status.is_terminal:
            return
        if execution.cancellation_requested:
            await self._record_cancellation(session)
            return
        definition = ProcessDefinition.from_document(execution.definition)
        try:
            async with asyncio.timeout(definition.config.timeout_seconds):
                await self._run_steps(session, definition)
        except TimeoutError:
            await self._record_stop(
                session,
                "execution timed out",
                lambda e: e.time_out(definition.config.timeout_seconds or 0),
            )
        except asyncio.CancelledError:
            if execution_id not in self._cancel_requested:
                raise  # shutdown: leave the execution to be resumed
            await self._record_cancellation(session)

    async def _run_steps(self, session: ExecutionSession, definition: ProcessDefinition) -> None:
        for step_id in definition.topological_order():
            step = definition.step(step_id)
            state = session.execution.steps[step_id]
            if state.status in (StepStatus.COMPLETED, StepStatus.SKIPPED):
                continue
            if self._is_dead(session.execution, definition, step):
                await session.record(
                    partial(Execution.skip_step, step_id=step_id, reason="branch_not_taken")
                )
                continue
            status = await self._run_step(session, definition, step)
            if status is StepStatus.FAILED and definition.config.stop_on_failure:
                error = session.execution.steps[step_id].error or {}
                await session.record(partial(Execution.fail, error={**error, "step_id": step_id}))
                return
        failed = [s for s, st in session.execution.steps.items() if st.status is StepStatus.FAILED]
        if failed:
            await session.record(
                lambda e: e.fail({"type": "StepsFailed", "message": f"steps failed: {failed}"})
            )
            return
        try:
            output = self._process_output(session.execution, definition)
        except ExpressionError as error:
            await session.record(lambda e: e.fail(error_details(error)))
            return
        await session.record(lambda e: e.complete(output))

    async def _run_step(
        self, session: ExecutionSession, definition: ProcessDefinition, step: StepDefinition
    ) -> StepStatus:
        """Run attempts of one step until it completes, fails or is skipped."""
        state = session.execution.steps[step.id]
        if state.status is StepStatus.SCHEDULED:  # scheduled by an engine that stopped
            await session.record(lambda e: e.start_step(step.id, state.attempt))
        elif state.status in (StepStatus.RUNNING, StepStatus.TIMED_OUT):  # its runner is gone
            lost = AgentError("the engine running this attempt stopped", error_type="WorkerLost")
            if not await self._after_failure(session, step, state.attempt, lost):
                return session.execution.steps[step.id].status
        while True:
            attempt = session.execution.steps[step.id].attempt
            if session.execution.steps[step.id].status is not StepStatus.RUNNING:
                attempt += 1
                await session.record(
                    partial(Execution.schedule_step, step_id=step.id, attempt=attempt),
                    partial(Execution.start_step, step_id=step.id, attempt=attempt),
                )
            try:
                output = await self._attempt(session, definition, step, attempt)
            except (AgentError, DomainError) as error:
                if not await self._after_failure(session, step, attempt, error):
                    return session.execution.steps[step.id].status
                continue
            await session.record(
                partial(Execution.complete_step, step_id=step.id, attempt=attempt, output=output)
            )
            return StepStatus.COMPLETED

    async def _after_failure(
        self, session: ExecutionSession, step: StepDefinition, attempt: int, error: Exception
    ) -> bool:
        """Record a failed attempt; True when another attempt should follow."""
        details = error_details(error, attempt=attempt)
        retryable = getattr(error, "retryable", False)
        if retryable and step.retry.allows_another_attempt(attempt, details["type"]):
            delay = step.retry.delay_after(attempt)
            retry_at = self.clock.now() + timedelta(seconds=delay)
            await session.record(lambda e: e.retry_step(step.id, attempt, details, delay, retry_at))
            await self.clock.sleep(delay)
            return True
        if step.on_error is OnError.SKIP_STEP:
            await session.record(lambda e: e.skip_step(step.id, "error"))
        else:
            await session.record(lambda e: e.fail_step(step.id, attempt, details))
        return False

    async def _attempt(
        self,
        session: ExecutionSession,
        definition: ProcessDefinition,
        step: StepDefinition,
        attempt: int,
    ) -> Any:
        scope = _scope(session.execution)
        if step.type is StepType.TIMER:
            return await self._wait_timer(session, step, attempt)
        if step.type is StepType.GATEWAY:
            return await self._evaluate_gateway(session, step, attempt, scope)
        return await self._run_agent(session, step, attempt, render(step.input, scope))

    async def _run_agent(
        self, session: ExecutionSession, step: StepDefinition, attempt: int, agent_input: Any
    ) -> Any:
        if isinstance(step.agent, HttpAgent) or step.agent is None:
            raise AgentError(
                "HTTP agents are not supported by this engine yet",
                error_type="UnsupportedAgent",
                retryable=False,
            )
        name = step.agent
        await session.record(lambda e: e.start_agent(step.id, attempt, name, agent_input))
        execution = session.execution
        run = AgentRun(execution.user_id, execution.id, step.id, attempt, execution.thread_id)
        context = EngineAgentContext(session, run, self.agents, self.clock)
        started = self.clock.monotonic()
        try:
            agent = self.agents.agent(name)
            async with asyncio.timeout(step.timeout_seconds):
                output = await agent(context, agent_input)
        except TimeoutError:
            timeout = step.timeout_seconds or 0
            await session.record(lambda e: e.time_out_step(step.id, attempt, timeout))
            raise StepTimeoutError(timeout) from None
        except Exception as error:
            failure = (
                error
                if isinstance(error, AgentError)
                else AgentError(str(error), error_type=type(error).__name__)
            )
            elapsed = _ms(self.clock.monotonic() - started)
            details = error_details(failure)
            await session.record(lambda e: e.fail_agent(step.id, attempt, details, elapsed))
            raise failure from error
        elapsed = _ms(self.clock.monotonic() - started)
        await session.record(lambda e: e.complete_agent(step.id, attempt, output, elapsed))
        return output

    async def _wait_timer(
        self, session: ExecutionSession, step: StepDefinition, attempt: int
    ) -> Any:
        seconds = step.seconds or 0.0
        fire_at = self.clock.now() + timedelta(seconds=seconds)
        await session.record(lambda e: e.start_timer(step.id, attempt, seconds, fire_at))
        await self.clock.sleep(seconds)
        await session.record(lambda e: e.fire_timer(step.id, attempt))
        return None

    async def _evaluate_gateway(
        self, session: ExecutionSession, step: StepDefinition, attempt: int, scope: dict[str, Any]
    ) -> Any:
        chosen: int | None = None
        reason = "no route matched and there is no default"
        for index, route in enumerate(step.routes):
            if route.default:
                chosen, reason = index, "default route"
                break
            if route.when is not None and evaluate_condition(route.when, scope):
                chosen, reason = index, f"condition true: {route.when}"
                break
        next_steps = list(step.routes[chosen].next) if chosen is not None else []
        await session.record(
            lambda e: e.evaluate_gateway(step.id, attempt, chosen, next_steps, reason)
        )
        return {"route": chosen, "next": next_steps}

    # -- stopping ----------------------------------------------------------------------------

    async def _record_cancellation(self, session: ExecutionSession) -> None:
        execution = await session.reload()
        request = execution.cancellation or {"by": ENGINE_ACTOR, "reason": "cancelled"}
        await self._record_stop(
            session, "execution cancelled", lambda e: e.cancel(request["by"], request["reason"])
        )

    async def _record_stop(self, session: ExecutionSession, reason: str, final: Any) -> None:
        execution = await session.reload()
        if execution.status.is_terminal:
            return
        live = [
            s
            for s, st in execution.steps.items()
            if st.status not in (StepStatus.PENDING,) and not st.status.is_done
        ]
        commands = [partial(Execution.cancel_step, step_id=s, reason=reason) for s in live]
        await session.record(*commands, final)

    # -- flow rules --------------------------------------------------------------------------

    @staticmethod
    def _is_dead(execution: Execution, definition: ProcessDefinition, step: StepDefinition) -> bool:
        """A step only reachable through routes not taken is skipped (dead-path elimination)."""
        dependencies = definition.dependencies(step.id)
        if not dependencies:
            return False
        states = [execution.steps[d] for d in dependencies]
        for dependency, state in zip(dependencies, states, strict=True):
            gateway = definition.step(dependency)
            if gateway.type is StepType.GATEWAY and state.status is StepStatus.COMPLETED:
                chosen = (state.output or {}).get("next", [])
                if _named_by_routes(gateway, step.id) and step.id not in chosen:
                    return True
        return all(
            s.status is StepStatus.SKIPPED and s.skip_reason == "branch_not_taken" for s in states
        )

    @staticmethod
    def _process_output(execution: Execution, definition: ProcessDefinition) -> Any:
        if definition.output is not None:
            return render(definition.output, _scope(execution))
        return {
            s: st.output for s, st in execution.steps.items() if st.status is StepStatus.COMPLETED
        }


def _named_by_routes(gateway: StepDefinition, step_id: str) -> bool:
    return any(step_id in route.next for route in gateway.routes)


def _scope(execution: Execution) -> dict[str, Any]:
    return {
        "input": execution.input,
        "steps": {
            s: {"output": st.output, "status": st.status.value} for s, st in execution.steps.items()
        },
    }


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)
