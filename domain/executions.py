"""The Execution aggregate: one run of a process for one user, as a sequence of events."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate, CanMutateAggregate
from eventsourcing.domain import Snapshot as BaseSnapshot
from eventsourcing.utils import get_topic

from domain.execution_state import (
    AttemptOrderError,
    CancellationAlreadyRequestedError,
    ExecutionFinishedError,
    ExecutionStatus,
    StaleAttemptError,
    StepState,
    StepStatus,
    StepTransitionError,
    ToolCallError,
    UnknownStepError,
    bounded,
    execution_id_for,
)
from domain.hash_chain import GENESIS, recorded_hash

SYSTEM = "system"
"""Who caused an event when no command said otherwise."""


class ExecutionEvent(Aggregate.Event):
    """Every event of an execution says whose it is, who caused it, and links the hash chain."""

    user_id: str
    caused_by: str
    correlation_id: str | None
    previous_hash: str
    hash: str

    def mutate(self, aggregate: Any) -> Any:
        execution: Any = super().mutate(aggregate)
        execution.chain_head = self.__dict__.get("hash", "")  # events from before the chain
        return execution


class StepEvent(ExecutionEvent):
    """An event about one attempt of one step."""

    step_id: str
    attempt: int


def _topic(name: str) -> str:
    return f"agent_ledger.execution.{name}"


class Execution(Aggregate):
    """One execution of a process definition, owned by one user."""

    TOPIC = _topic("Execution")

    class Created(Aggregate.Created):
        TOPIC = _topic("Created")  # required by the library; never recorded

    class ExecutionStarted(Aggregate.Created):
        TOPIC = _topic("ExecutionStarted")
        user_id: str
        process_name: str
        process_version: int
        definition: dict[str, Any]
        input: dict[str, Any]
        thread_id: str | None
        request_id: str | None
        idempotency_key: str | None
        step_ids: list[str]
        caused_by: str
        correlation_id: str | None
        previous_hash: str
        hash: str

        def mutate(self, aggregate: Any) -> Any:
            execution: Any = super().mutate(aggregate)
            execution.chain_head = self.__dict__.get("hash", "")
            return execution

    class Snapshot(BaseSnapshot):
        """A snapshot whose state is plain JSON: steps as dicts, statuses as strings."""

        TOPIC = _topic("Snapshot")

        @classmethod
        def take(cls, aggregate: Any) -> Any:
            snapshot = super().take(aggregate)
            state = dict(snapshot.state)
            state.pop("_acting", None)  # who acts now is not state
            state["steps"] = {k: asdict(v) for k, v in state["steps"].items()}
            object.__setattr__(snapshot, "state", state)
            return snapshot

        def mutate(self, _: None) -> Any:
            execution: Any = super().mutate(_)
            execution.status = ExecutionStatus(execution.status)
            execution.steps = {
                k: StepState(**{**v, "status": StepStatus(v["status"])})
                for k, v in execution.steps.items()
            }
            return execution

    class ExecutionCompleted(ExecutionEvent):
        TOPIC = _topic("ExecutionCompleted")
        output: Any

        def apply(self, execution: Execution) -> None:
            execution.status = ExecutionStatus.COMPLETED
            execution.output = self.output

    class ExecutionFailed(ExecutionEvent):
        TOPIC = _topic("ExecutionFailed")
        error: dict[str, Any]

        def apply(self, execution: Execution) -> None:
            execution.status = ExecutionStatus.FAILED
            execution.error = self.error

    class ExecutionCancellationRequested(ExecutionEvent):
        TOPIC = _topic("ExecutionCancellationRequested")
        by: str
        reason: str

        def apply(self, execution: Execution) -> None:
            execution.cancellation = {"by": self.by, "reason": self.reason}

    class ExecutionCancelled(ExecutionEvent):
        TOPIC = _topic("ExecutionCancelled")
        by: str
        reason: str

        def apply(self, execution: Execution) -> None:
            execution.status = ExecutionStatus.CANCELLED

    class ExecutionTimedOut(ExecutionEvent):
        TOPIC = _topic("ExecutionTimedOut")
        timeout_seconds: float

        def apply(self, execution: Execution) -> None:
            execution.status = ExecutionStatus.TIMED_OUT

    class StepScheduled(StepEvent):
        TOPIC = _topic("StepScheduled")

        def apply(self, execution: Execution) -> None:
            step = execution.steps[self.step_id]
            step.status, step.attempt = StepStatus.SCHEDULED, self.attempt
            step.agent_started, step.agent_finished, step.open_tool_calls = False, False, {}
            step.due_at, step.timer_fired = None, False
            execution.status = ExecutionStatus.RUNNING

    class StepStarted(StepEvent):
        TOPIC = _topic("StepStarted")

        def apply(self, execution: Execution) -> None:
            execution.steps[self.step_id].status = StepStatus.RUNNING

    class StepCompleted(StepEvent):
        TOPIC = _topic("StepCompleted")
        output: Any

        def apply(self, execution: Execution) -> None:
            step = execution.steps[self.step_id]
            step.status, step.output = StepStatus.COMPLETED, self.output

    class StepFailed(StepEvent):
        TOPIC = _topic("StepFailed")
        error: dict[str, Any]

        def apply(self, execution: Execution) -> None:
            step = execution.steps[self.step_id]
            step.status, step.error = StepStatus.FAILED, self.error

    class StepRetrying(StepEvent):
        TOPIC = _topic("StepRetrying")
        error: dict[str, Any]
        delay_seconds: float
        retry_at: datetime

        def apply(self, execution: Execution) -> None:
            step = execution.steps[self.step_id]
            step.status, step.error, step.due_at = StepStatus.RETRYING, self.error, self.retry_at

    class StepSkipped(StepEvent):
        TOPIC = _topic("StepSkipped")
        reason: str

        def apply(self, execution: Execution) -> None:
            step = execution.steps[self.step_id]
            step.status, step.skip_reason = StepStatus.SKIPPED, self.reason

    class StepTimedOut(StepEvent):
        TOPIC = _topic("StepTimedOut")
        timeout_seconds: float

        def apply(self, execution: Execution) -> None:
            execution.steps[self.step_id].status = StepStatus.TIMED_OUT

    class StepCancelled(StepEvent):
        TOPIC = _topic("StepCancelled")
        reason: str

        def apply(self, execution: Execution) -> None:
            execution.steps[self.step_id].status = StepStatus.CANCELLED

    class AgentStarted(StepEvent):
        TOPIC = _topic("AgentStarted")
        agent: str
        input: Any

        def apply(self, execution: Execution) -> None:
            execution.steps[self.step_id].agent_started = True

    class AgentThinking(StepEvent):
        TOPIC = _topic("AgentThinking")
        message: str

    class ToolExecuting(StepEvent):
        TOPIC = _topic("ToolExecuting")
        call_id: str
        tool: str
        args: Any

        def apply(self, execution: Execution) -> None:
            execution.steps[self.step_id].open_tool_calls[self.call_id] = self.tool

    class ToolCompleted(StepEvent):
        TOPIC = _topic("ToolCompleted")
        call_id: str
        tool: str
        result: Any
        duration_ms: float

        def apply(self, execution: Execution) -> None:
            execution._close_tool_call(self.step_id, self.call_id)

    class ToolFailed(StepEvent):
        TOPIC = _topic("ToolFailed")
        call_id: str
        tool: str
        error: dict[str, Any]
        duration_ms: float

        def apply(self, execution: Execution) -> None:
            execution._close_tool_call(self.step_id, self.call_id)

    class AgentCompleted(StepEvent):
        TOPIC = _topic("AgentCompleted")
        output: Any
        duration_ms: float

        def apply(self, execution: Execution) -> None:
            execution.steps[self.step_id].agent_finished = True

    class AgentFailed(StepEvent):
        TOPIC = _topic("AgentFailed")
        error: dict[str, Any]
        duration_ms: float

        def apply(self, execution: Execution) -> None:
            execution.steps[self.step_id].agent_finished = True

    class GatewayEvaluated(StepEvent):
        TOPIC = _topic("GatewayEvaluated")
        route: int | None
        next: list[str]
        reason: str

    class TimerStarted(StepEvent):
        TOPIC = _topic("TimerStarted")
        seconds: float
        fire_at: datetime

        def apply(self, execution: Execution) -> None:
            execution.steps[self.step_id].due_at = self.fire_at

    class TimerFired(StepEvent):
        TOPIC = _topic("TimerFired")

        def apply(self, execution: Execution) -> None:
            step = execution.steps[self.step_id]
            step.due_at, step.timer_fired = None, True

    class ExecutionTakenOver(ExecutionEvent):
        TOPIC = _topic("ExecutionTakenOver")
        previous_worker: str
        worker: str

    def __init__(
        self,
        user_id: str,
        process_name: str,
        process_version: int,
        definition: dict[str, Any],
        input: dict[str, Any],
        thread_id: str | None,
        request_id: str | None,
        idempotency_key: str | None,
        step_ids: list[str],
    ) -> None:
        self.user_id = user_id
        self.process_name = process_name
        self.process_version = process_version
        self.definition = definition
        self.input = input
        self.thread_id = thread_id
        self.request_id = request_id
        self.idempotency_key = idempotency_key
        self.status = ExecutionStatus.PENDING
        self.steps: dict[str, StepState] = {s: StepState(s) for s in step_ids}
        self.output: Any = None
        self.error: dict[str, Any] | None = None
        self.cancellation: dict[str, str] | None = None
        self.chain_head = GENESIS

    _acting: tuple[str, str | None] | None = None

    def act_as(self, caused_by: str, correlation_id: str | None = None) -> None:
        """Attribute the events this copy triggers from now on (who acts is not state)."""
        self._acting = (caused_by, correlation_id)

    @classmethod
    def start(
        cls,
        *,
        user_id: str,
        process_name: str,
        process_version: int,
        definition: dict[str, Any],
        step_ids: list[str],
        input: dict[str, Any],
        thread_id: str | None = None,
        request_id: str | None = None,
        idempotency_key: str | None = None,
        caused_by: str = SYSTEM,
        correlation_id: str | None = None,
    ) -> Execution:
        """Start an execution; an idempotency key makes its id a function of user and key."""
        execution_id = (
            execution_id_for(user_id, idempotency_key) if idempotency_key is not None else uuid4()
        )
        fields = dict(
            originator_topic=get_topic(cls),
            originator_id=execution_id,
            originator_version=cls.INITIAL_VERSION,
            timestamp=cls.ExecutionStarted.create_timestamp(),
            user_id=user_id,
            process_name=process_name,
            process_version=process_version,
            definition=definition,
            input=input,
            thread_id=thread_id,
            request_id=request_id,
            idempotency_key=idempotency_key,
            step_ids=list(step_ids),
            caused_by=caused_by,
            correlation_id=correlation_id,
            previous_hash=GENESIS,
        )
        fields["hash"] = recorded_hash(get_topic(cls.ExecutionStarted), fields)
        del fields["originator_topic"], fields["originator_version"], fields["originator_id"]
        return cls._create(cls.ExecutionStarted, id=execution_id, **fields)

    def trigger_event(self, event_class: type[CanMutateAggregate[UUID]], **kwargs: Any) -> None:
        """Refuse every event once the execution has finished; stamp owner, cause and chain."""
        if self.status.is_terminal:
            raise ExecutionFinishedError(self.id, self.status)
        caused_by, correlation_id = self._acting or (SYSTEM, None)
        fields = dict(
            kwargs,
            originator_id=self.id,
            originator_version=self.version + 1,
            timestamp=event_class.create_timestamp(),
            user_id=self.user_id,
            caused_by=caused_by,
            correlation_id=correlation_id,
            previous_hash=self.chain_head,
        )
        fields["hash"] = recorded_hash(get_topic(event_class), fields)
        del fields["originator_id"], fields["originator_version"]
        super().trigger_event(event_class, **fields)

    # -- execution-level commands ---------------------------------------------------------

    @property
    def cancellation_requested(self) -> bool:
        return self.cancellation is not None

    def complete(self, output: Any) -> None:
        self.trigger_event(self.ExecutionCompleted, output=output)

    def fail(self, error: dict[str, Any]) -> None:
        self.trigger_event(self.ExecutionFailed, error=error)

    def request_cancellation(self, by: str, reason: str) -> None:
        if self.cancellation_requested and not self.status.is_terminal:
            raise CancellationAlreadyRequestedError(self.id)  # a finished one says so instead
        self.trigger_event(self.ExecutionCancellationRequested, by=by, reason=reason)

    def cancel(self, by: str, reason: str) -> None:
        self.trigger_event(self.ExecutionCancelled, by=by, reason=reason)

    def time_out(self, timeout_seconds: float) -> None:
        self.trigger_event(self.ExecutionTimedOut, timeout_seconds=timeout_seconds)

    def take_over(self, previous_worker: str, worker: str) -> None:
        """Record that `worker` continues what `previous_worker` held when its lease expired."""
        self.trigger_event(self.ExecutionTakenOver, previous_worker=previous_worker, worker=worker)

    # -- step lifecycle ---------------------------------------------------------------------

    def step(self, step_id: str) -> StepState:
        try:
            return self.steps[step_id]
        except KeyError:
            raise UnknownStepError(step_id) from None

    def schedule_step(self, step_id: str, attempt: int) -> None:
        step = self.step(step_id)
        if step.status not in (StepStatus.PENDING, StepStatus.RETRYING):
            raise StepTransitionError(step, "be scheduled")
        if attempt <= step.attempt:
            raise AttemptOrderError(step_id, step.attempt, attempt)
        self.trigger_event(self.StepScheduled, step_id=step_id, attempt=attempt)

    def start_step(self, step_id: str, attempt: int) -> None:
        step = self._current(step_id, attempt, StepStatus.SCHEDULED, "start")
        self.trigger_event(self.StepStarted, step_id=step.step_id, attempt=attempt)

    def complete_step(self, step_id: str, attempt: int, output: Any) -> None:
        self._running(step_id, attempt, "complete")
        self.trigger_event(self.StepCompleted, step_id=step_id, attempt=attempt, output=output)

    def fail_step(self, step_id: str, attempt: int, error: dict[str, Any]) -> None:
        self._current(step_id, attempt, (StepStatus.RUNNING, StepStatus.TIMED_OUT), "fail")
        self.trigger_event(self.StepFailed, step_id=step_id, attempt=attempt, error=error)

    def retry_step(
        self,
        step_id: str,
        attempt: int,
        error: dict[str, Any],
        delay_seconds: float,
        retry_at: datetime,
    ) -> None:
        self._current(step_id, attempt, (StepStatus.RUNNING, StepStatus.TIMED_OUT), "retry")
        self.trigger_event(
            self.StepRetrying,
            step_id=step_id,
            attempt=attempt,
            error=error,
            delay_seconds=delay_seconds,
            retry_at=retry_at,
        )

    def time_out_step(self, step_id: str, attempt: int, timeout_seconds: float) -> None:
        self._running(step_id, attempt, "time out")
        self.trigger_event(
            self.StepTimedOut, step_id=step_id, attempt=attempt, timeout_seconds=timeout_seconds
        )

    def skip_step(self, step_id: str, reason: str) -> None:
        step = self.step(step_id)
        if step.status.is_done:
            raise StepTransitionError(step, "be skipped")
        self.trigger_event(self.StepSkipped, step_id=step_id, attempt=step.attempt, reason=reason)

    def cancel_step(self, step_id: str, reason: str) -> None:
        step = self.step(step_id)
        if step.status in (StepStatus.PENDING,) or step.status.is_done:
            raise StepTransitionError(step, "be cancelled")
        self.trigger_event(self.StepCancelled, step_id=step_id, attempt=step.attempt, reason=reason)

    # -- what happens inside a running attempt -----------------------------------------------

    def start_agent(self, step_id: str, attempt: int, agent: str, input: Any) -> None:
        step = self._running(step_id, attempt, "start its agent")
        if step.agent_started:
            raise StepTransitionError(step, "start its agent twice")
        self.trigger_event(
            self.AgentStarted, step_id=step_id, attempt=attempt, agent=agent, input=input
        )

    def record_thinking(self, step_id: str, attempt: int, message: str) -> None:
        self._agent_running(step_id, attempt, "think")
        self.trigger_event(self.AgentThinking, step_id=step_id, attempt=attempt, message=message)

    def start_tool(self, step_id: str, attempt: int, call_id: str, tool: str, args: Any) -> None:
        step = self._agent_running(step_id, attempt, "call a tool")
        if call_id in step.open_tool_calls or call_id in step.finished_tool_calls:
            raise ToolCallError(f"tool call {call_id!r} of step {step_id!r} was already started")
        self.trigger_event(
            self.ToolExecuting,
            step_id=step_id,
            attempt=attempt,
            call_id=call_id,
            tool=tool,
            args=bounded(args),
        )

    def complete_tool(
        self, step_id: str, attempt: int, call_id: str, result: Any, duration_ms: float
    ) -> None:
        tool = self._open_call(step_id, attempt, call_id)
        self.trigger_event(
            self.ToolCompleted,
            step_id=step_id,
            attempt=attempt,
            call_id=call_id,
            tool=tool,
            result=bounded(result),
            duration_ms=duration_ms,
        )

    def fail_tool(
        self, step_id: str, attempt: int, call_id: str, error: dict[str, Any], duration_ms: float
    ) -> None:
        tool = self._open_call(step_id, attempt, call_id)
        self.trigger_event(
            self.ToolFailed,
            step_id=step_id,
            attempt=attempt,
            call_id=call_id,
            tool=tool,
            error=error,
            duration_ms=duration_ms,
        )

    def complete_agent(self, step_id: str, attempt: int, output: Any, duration_ms: float) -> None:
        self._agent_running(step_id, attempt, "complete its agent")
        self.trigger_event(
            self.AgentCompleted,
            step_id=step_id,
            attempt=attempt,
            output=output,
            duration_ms=duration_ms,
        )

    def fail_agent(
        self, step_id: str, attempt: int, error: dict[str, Any], duration_ms: float
    ) -> None:
        self._agent_running(step_id, attempt, "fail its agent")
        self.trigger_event(
            self.AgentFailed, step_id=step_id, attempt=attempt, error=error, duration_ms=duration_ms
        )

    def evaluate_gateway(
        self, step_id: str, attempt: int, route: int | None, next_steps: list[str], reason: str
    ) -> None:
        self._running(step_id, attempt, "evaluate a gateway")
        self.trigger_event(
            self.GatewayEvaluated,
            step_id=step_id,
            attempt=attempt,
            route=route,
            next=next_steps,
            reason=reason,
        )

    def start_timer(self, step_id: str, attempt: int, seconds: float, fire_at: datetime) -> None:
        self._running(step_id, attempt, "start a timer")
        self.trigger_event(
            self.TimerStarted, step_id=step_id, attempt=attempt, seconds=seconds, fire_at=fire_at
        )

    def fire_timer(self, step_id: str, attempt: int) -> None:
        step = self._running(step_id, attempt, "fire a timer")
        if step.due_at is None:
            raise StepTransitionError(step, "fire a timer that was not started")
        self.trigger_event(self.TimerFired, step_id=step_id, attempt=attempt)

    # -- rules shared by the commands above ------------------------------------------------------

    def _current(
        self,
        step_id: str,
        attempt: int,
        allowed: StepStatus | tuple[StepStatus, ...],
        action: str,
    ) -> StepState:
        step = self.step(step_id)
        allowed = allowed if isinstance(allowed, tuple) else (allowed,)
        if step.status is StepStatus.PENDING:
            raise StepTransitionError(step, action)
        if attempt != step.attempt:
            raise StaleAttemptError(step, attempt)
        if step.status not in allowed:
            raise StepTransitionError(step, action)
        return step

    def _running(self, step_id: str, attempt: int, action: str) -> StepState:
        step = self.step(step_id)
        if attempt == step.attempt and step.status is StepStatus.SCHEDULED:
            raise StepTransitionError(step, action)
        if attempt != step.attempt or step.status is not StepStatus.RUNNING:
            raise StaleAttemptError(step, attempt)  # e.g. a late result of a timed-out attempt
        return step

    def _agent_running(self, step_id: str, attempt: int, action: str) -> StepState:
        step = self._running(step_id, attempt, action)
        if not step.agent_started:
            raise StepTransitionError(step, f"{action} before its agent started")
        if step.agent_finished:
            raise StepTransitionError(step, f"{action} after its agent finished")
        return step

    def _open_call(self, step_id: str, attempt: int, call_id: str) -> str:
        step = self._running(step_id, attempt, "finish a tool call")
        try:
            return step.open_tool_calls[call_id]
        except KeyError:
            raise ToolCallError(
                f"tool call {call_id!r} of step {step_id!r} attempt {attempt} was never started"
            ) from None

    def _close_tool_call(self, step_id: str, call_id: str) -> None:
        step = self.steps[step_id]
        step.open_tool_calls.pop(call_id, None)
        step.finished_tool_calls.append(call_id)
