"""Drives one execution while its worker holds the lease: decide, act, record, repeat."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from agent_ledger.application.clock import Clock
from agent_ledger.application.execution_session import ExecutionSession
from agent_ledger.application.path_timing import mark
from agent_ledger.application.step_runner import (
    StepRunner,
    StepTimeoutError,
    WorkerLostError,
    scope_of,
)
from agent_ledger.application.work import Park, Reschedule, Wake
from agent_ledger.domain.errors import DomainError, ExpressionError
from agent_ledger.domain.execution_state import StepStatus
from agent_ledger.domain.executions import Execution
from agent_ledger.domain.expressions import render
from agent_ledger.domain.flow import decide
from agent_ledger.domain.processes import ProcessDefinition, StepType

_DEFINITIONS: dict[tuple[str, int], tuple[dict[str, Any], ProcessDefinition]] = {}
_MAX_CACHED = 512


def definition_of(execution: Execution) -> ProcessDefinition:
    """The execution's recorded definition, parsed once per process version and worker."""
    key = (execution.process_name, execution.process_version)
    cached = _DEFINITIONS.get(key)
    if cached is not None and cached[0] == execution.definition:
        return cached[1]
    definition = ProcessDefinition.from_document(execution.definition)
    if len(_DEFINITIONS) >= _MAX_CACHED:
        _DEFINITIONS.clear()
    _DEFINITIONS[key] = (execution.definition, definition)
    return definition


FLUSH_WINDOW = 0.01
"""Seconds the start of an attempt may stay unsaved while its agent runs (see `_wait`)."""

LOCAL_WAIT = timedelta(seconds=5)
"""Waits shorter than this are slept in the worker; longer ones let the lease go."""


_STUCK = {"type": "NothingToRun", "message": "no step can run and none is running or waiting"}
_EARLY_WAKE_UP = 0.01  # at most this is waited out after a timer that fired early


class ExecutionDriver:
    """Runs the steps of one execution to a terminal state, or until it must wait long."""

    def __init__(
        self,
        session: ExecutionSession,
        runner: StepRunner,
        clock: Clock,
        *,
        taken_over_from: str | None = None,
    ):
        self.session = session
        self.runner = runner
        self.clock = clock
        self.taken_over_from = taken_over_from
        self.definition = definition_of(session.execution)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.cancel_requested = False

    @property
    def execution(self) -> Execution:
        return self.session.execution

    async def run(self) -> None:
        """Drive until terminal, or until the next thing to do is far enough away to let go."""
        if self.execution.status.is_terminal:
            return
        await self._recover()
        try:
            async with asyncio.timeout_at(self._deadline()):
                await self._loop()
        except TimeoutError:
            await self._until_deadline()
            await self._stop(
                partial(
                    Execution.time_out, timeout_seconds=self.definition.config.timeout_seconds or 0
                ),
                "execution timed out",
            )
        except asyncio.CancelledError:
            if not self.cancel_requested:
                await self._abandon()
                raise  # shutdown or a lost lease: the next holder carries on
            await self.record_cancellation()

    async def _loop(self) -> None:
        while True:
            if self.execution.cancellation_requested:
                await self.record_cancellation()
                return
            now = self.clock.now()
            decision = decide(self.execution, self.definition, now, set(self.tasks))
            if decision.failed and self.definition.config.stop_on_failure:
                await self._stop_after_failure(decision.failed[0])
                return
            if decision.skip or decision.fire_timers or decision.take_signals:
                await self.session.record(
                    *self._skips_and_timers(decision.skip, decision.fire_timers),
                    *self._signals_taken(decision.take_signals),
                )
                continue
            if decision.time_out_waits:
                await self._time_out_waits(decision.time_out_waits)
                continue
            if decision.start:
                await self._start(decision.start)
                continue
            if not self.tasks:
                if decision.finished:
                    await self._finish()
                    return
                if decision.awaiting and not decision.start:
                    # only signals (or a deadline) can move it on: hold no lease, no slot
                    due = min(filter(None, (decision.wake_at, self._deadline_at())), default=None)
                    await self.session.record(work=[Park(self.execution.id, due)])
                    await self._wake_if_written_since()
                    return
                if decision.wake_at is None:
                    await self._stop(partial(Execution.fail, error=_STUCK), "nothing can run")
                    return
                # the execution's own deadline may come before the step's due time
                due = min(filter(None, (decision.wake_at, self._deadline_at())))
                if due - now > LOCAL_WAIT:
                    await self.session.record(
                        work=[Reschedule(self.execution.id, due, release=True)]
                    )
                    return
            await self._wait(decision.wake_at, now)

    async def _wait(self, wake_at: datetime | None, now: datetime) -> None:
        """Until a running attempt ends or the next due time comes.

        What is staged (attempts just opened, results just in) is saved once the running
        agents have had `FLUSH_WINDOW` to finish: an agent that answers at once has its
        start and its end saved in one write, and a slow one is seen running soon after.
        """
        timeout = None if wake_at is None else max(0.0, (wake_at - now).total_seconds())
        if not self.tasks:
            await self.session.flush()
            await self.clock.sleep(timeout or 0.0)
            return
        window = timeout
        if self.session.staged:
            window = FLUSH_WINDOW if timeout is None else min(timeout, FLUSH_WINDOW)
        done, _ = await asyncio.wait(
            set(self.tasks.values()), timeout=window, return_when=asyncio.FIRST_COMPLETED
        )
        if not done:
            await self.session.flush()
        for step_id, task in list(self.tasks.items()):
            if task in done:
                del self.tasks[step_id]
                task.result()  # a lost lease or a broken store stops the driver

    def _skips_and_timers(self, skip: list[tuple[str, str]], fire: list[str]) -> list[Any]:
        commands: list[Any] = [partial(Execution.skip_step, step_id=s, reason=r) for s, r in skip]
        for step_id in fire:
            attempt = self.execution.steps[step_id].attempt
            waited = {"waited_seconds": self.definition.step(step_id).seconds}
            commands += [
                partial(Execution.fire_timer, step_id=step_id, attempt=attempt),
                partial(Execution.complete_step, step_id=step_id, attempt=attempt, output=waited),
            ]
        return commands

    def _signals_taken(self, step_ids: list[str]) -> list[Any]:
        return [
            partial(
                Execution.take_signal_for,
                step_id=step_id,
                attempt=self.execution.steps[step_id].attempt,
            )
            for step_id in step_ids
        ]

    async def _wake_if_written_since(self) -> None:
        """A signal saved after this worker read the execution and before its parking
        committed was woken while still held, so the parking put it back to sleep: look,
        and wake it again (a parking with no event of its own has no conflict to lose)."""
        seen = self.execution.version
        latest = await self.session.reload()
        if latest.version > seen:
            await asyncio.to_thread(
                self.session.executions.save_and_position, latest, work=[Wake(latest.id)]
            )

    async def _time_out_waits(self, step_ids: list[str]) -> None:
        """Waits whose deadline passed time out like any attempt: retry, skip or fail."""
        for step_id in step_ids:
            step = self.definition.step(step_id)
            attempt = self.execution.steps[step_id].attempt
            timeout = step.timeout_seconds or 0.0
            await self.session.record(
                partial(
                    Execution.time_out_step,
                    step_id=step_id,
                    attempt=attempt,
                    timeout_seconds=timeout,
                )
            )
            await self.runner.after_failure(self.session, step, attempt, StepTimeoutError(timeout))

    async def _start(self, step_ids: list[str]) -> None:
        """Open the next attempt of each step in one write, then run the agents."""
        commands: list[Any] = []
        attempts = {}
        inputs: dict[str, Any] = {}
        broken_gateways: list[tuple[str, ExpressionError]] = []
        for step_id in step_ids:
            step = self.definition.step(step_id)
            attempts[step_id] = self.execution.steps[step_id].attempt + 1
            opening, inputs[step_id] = self.runner.begin(self.session, step, attempts[step_id])
            commands += opening
            if step.type is StepType.GATEWAY:  # decided in the same write as its start
                try:
                    commands += self.runner.gateway_commands(
                        self.execution, step, attempts[step_id]
                    )
                except ExpressionError as problem:
                    broken_gateways.append((step_id, problem))
        # saved with the attempt's end if the agent answers within FLUSH_WINDOW, else then
        await self.session.stage(*commands)
        for step_id, broken in broken_gateways:
            await self.runner.after_failure(
                self.session, self.definition.step(step_id), attempts[step_id], broken
            )
        for step_id in step_ids:
            step = self.definition.step(step_id)
            if step.type is StepType.AGENT_TASK:
                self.tasks[step_id] = asyncio.create_task(
                    self.runner.run_agent(self.session, step, attempts[step_id], inputs[step_id])
                )

    async def _recover(self) -> None:
        """Attempts that a previous holder left running are lost: retry or fail them."""
        lost = [
            s
            for s, st in self.execution.steps.items()
            if st.status in (StepStatus.SCHEDULED, StepStatus.TIMED_OUT)
            or (
                st.status is StepStatus.RUNNING
                and st.due_at is None
                and not st.timer_fired
                and st.awaiting is None  # a wait is durable: it goes on under the next holder
            )
        ]
        if self.taken_over_from is not None:
            await self.session.record(
                partial(
                    Execution.take_over,
                    previous_worker=self.taken_over_from,
                    worker=self.session.owner or "engine",
                )
            )
        for step_id in lost:
            state = self.execution.steps[step_id]
            if state.status is StepStatus.SCHEDULED:
                await self.session.record(
                    partial(Execution.start_step, step_id=step_id, attempt=state.attempt)
                )
            await self.runner.after_failure(
                self.session, self.definition.step(step_id), state.attempt, WorkerLostError()
            )

    async def _finish(self) -> None:
        mark("worker.finishing", self.execution.id)
        failed = [s for s, st in self.execution.steps.items() if st.status is StepStatus.FAILED]
        if failed:
            error = dict(self.execution.steps[failed[0]].error or {})
            await self.session.record(
                partial(Execution.fail, error={**error, "step_id": failed[0]})
            )
            return
        try:
            output = self._output()
        except ExpressionError as error:
            await self.session.record(
                partial(Execution.fail, error={"type": "ExpressionError", "message": str(error)})
            )
            return
        await self.session.record(partial(Execution.complete, output=output))

    def _output(self) -> Any:
        if self.definition.output is not None:
            return render(self.definition.output, scope_of(self.execution))
        return {
            s: st.output
            for s, st in self.execution.steps.items()
            if st.status is StepStatus.COMPLETED
        }

    async def _stop_after_failure(self, step_id: str) -> None:
        error = dict(self.execution.steps[step_id].error or {})
        await self._stop(
            partial(Execution.fail, error={**error, "step_id": step_id}), f"step {step_id} failed"
        )

    async def record_cancellation(self) -> None:
        """Stop everything and record who cancelled the execution and why."""
        with contextlib.suppress(DomainError):
            await self.session.flush()  # attempts already under way are recorded, then cancelled
        execution = await self.session.reload()
        request = execution.cancellation or {"by": "engine", "reason": "cancelled"}
        await self._stop(
            partial(Execution.cancel, by=request["by"], reason=request["reason"]),
            "execution cancelled",
        )

    async def give_up(self, error: dict[str, Any]) -> None:
        """Record the execution as failed with `error`: the engine cannot drive it."""
        await self._stop(partial(Execution.fail, error=error), "the engine gave up")

    async def _stop(self, final: Any, reason: str) -> None:
        """Stop every running attempt, record them cancelled, then the final event."""
        await self._abandon()
        await self.session.flush()  # steps that did finish keep their results
        execution = await self.session.reload()
        if execution.status.is_terminal:
            return
        live = [
            s
            for s, st in execution.steps.items()
            if st.status is not StepStatus.PENDING and not st.status.is_done
        ]
        await self.session.record(
            *[partial(Execution.cancel_step, step_id=s, reason=reason) for s in live], final
        )

    async def _abandon(self) -> None:
        tasks = list(self.tasks.values())
        self.tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _deadline_at(self) -> datetime | None:
        """When the execution times out as a whole, if its process sets a timeout."""
        timeout = self.definition.config.timeout_seconds
        if timeout is None:
            return None
        return self.execution.started_at + timedelta(seconds=timeout)

    async def _until_deadline(self) -> None:
        """Wait out what is left of the deadline: uvloop may wake up to 1 ms early."""
        deadline = self._deadline_at()
        if deadline is not None:
            left = (deadline - self.clock.now()).total_seconds()
            if left > 0:
                await asyncio.sleep(min(left, _EARLY_WAKE_UP))

    def _deadline(self) -> float | None:
        deadline = self._deadline_at()
        if deadline is None:
            return None
        remaining = (deadline - self.clock.now()).total_seconds()
        return asyncio.get_running_loop().time() + remaining
