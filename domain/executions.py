"""The Execution aggregate: one run of a process for one user, as a sequence of events.

Here: how an execution starts and the commands that check its rules. Its events are in
`execution_events`, the rules of one step on `StepState`, and attribution, the hash chain
and snapshots in the `AuditedAggregate` base.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate, CanMutateAggregate

from agent_ledger.domain.audited import SYSTEM, AuditedAggregate, AuditedCreated
from agent_ledger.domain.execution_events import (
    ExecutionEvent,
    ExecutionEvents,
    StepEvent,
    execution_topic,
)
from agent_ledger.domain.execution_state import (
    AttemptOrderError,
    CancellationAlreadyRequestedError,
    ExecutionFinishedError,
    ExecutionRuleError,
    ExecutionStatus,
    StepState,
    StepStatus,
    StepTransitionError,
    ToolCallError,
    UnknownStepError,
    bounded,
    execution_id_for,
)
from agent_ledger.domain.hash_chain import GENESIS

__all__ = ["SYSTEM", "Execution", "ExecutionEvent", "StepEvent"]

_AFTER_RUNNING = (StepStatus.RUNNING, StepStatus.TIMED_OUT)
RESUMABLE = (ExecutionStatus.FAILED, ExecutionStatus.TIMED_OUT, ExecutionStatus.CANCELLED)
_SKIPPED_BY_FAILURE = ("dependency_failed", "error")


def _runs_again(step: StepState) -> bool:
    """Whether a resumed execution runs this step again: all but the completed, the never
    started and those skipped because their branch was not taken."""
    if step.status is StepStatus.COMPLETED or step.status is StepStatus.PENDING:
        return False
    if step.status is StepStatus.SKIPPED:
        return step.skip_reason in _SKIPPED_BY_FAILURE
    return True


class NotResumableError(ExecutionRuleError):
    """Only a failed, timed-out or cancelled execution can be resumed."""

    def __init__(self, execution_id: UUID, status: ExecutionStatus):
        super().__init__(
            f"execution {execution_id} is {status.value}: only a failed, timed-out or "
            "cancelled execution can be resumed"
        )


_UNDER_WAY = (StepStatus.SCHEDULED, StepStatus.RUNNING, StepStatus.RETRYING, StepStatus.TIMED_OUT)
"""Where an attempt may fail or be retried from: it ran, or it ran out of time."""


class Execution(AuditedAggregate, ExecutionEvents):
    """One execution of a process definition, owned by one user."""

    TOPIC = execution_topic("Execution")

    class Created(Aggregate.Created):
        TOPIC = execution_topic("Created")  # required by the library; never recorded

    class ExecutionStarted(AuditedCreated):
        TOPIC = execution_topic("ExecutionStarted")
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

    class Snapshot(AuditedAggregate.Snapshot):
        """A snapshot whose state is plain JSON: steps as dicts, statuses as strings."""

        TOPIC = execution_topic("Snapshot")

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
        self.inbox: list[dict[str, Any]] = []
        """Signals received and not yet taken by a step, oldest first."""
        self.resumed_at: datetime | None = None
        self.forked_from: dict[str, Any] | None = None
        self.chain_head = GENESIS

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
        return cls._create_audited(
            cls.ExecutionStarted,
            id=execution_id,
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
        )

    def trigger_event(self, event_class: type[CanMutateAggregate[UUID]], **kwargs: Any) -> None:
        """Refuse every event once the execution has finished (but its resumption); the base
        stamps the rest."""
        if self.status.is_terminal and event_class is not self.ExecutionResumed:
            raise ExecutionFinishedError(self.id, self.status)
        super().trigger_event(event_class, **kwargs)

    def _plain_state(self, state: dict[str, Any]) -> dict[str, Any]:
        state["steps"] = {k: asdict(v) for k, v in state["steps"].items()}
        return state

    def _restore_state(self) -> None:
        plain: dict[str, Any] = dict(self.steps)  # a snapshot holds them as dicts
        self.status = ExecutionStatus(self.status)
        self.steps = {k: StepState.from_plain(v) for k, v in plain.items()}
        self.__dict__.setdefault("inbox", [])  # snapshots from before signals
        self.__dict__.setdefault("resumed_at", None)  # ... and before resume and fork
        self.__dict__.setdefault("forked_from", None)
        if isinstance(self.resumed_at, str):
            self.resumed_at = datetime.fromisoformat(self.resumed_at)

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

    @property
    def started_at(self) -> datetime:
        """When the execution (last) started running: its timeout counts from here."""
        return self.resumed_at or self.created_on

    def resume(self, actor: str, reason: str) -> None:
        """Run a failed, timed-out or cancelled execution again from where it stopped."""
        if self.status not in RESUMABLE:
            raise NotResumableError(self.id, self.status)
        again = [step_id for step_id, step in self.steps.items() if _runs_again(step)]
        self.trigger_event(self.ExecutionResumed, actor=actor, reason=reason, steps=again)

    def record_fork(
        self,
        parent: Execution,
        from_step: str,
        copied: dict[str, Any],
    ) -> None:
        """Record, first thing, that this execution forks `parent` from `from_step`."""
        if self.version != 1:
            raise StepTransitionError(self.step(from_step), "be forked from after the start")
        for step_id in (from_step, *copied):
            self.step(step_id)
        self.trigger_event(
            self.ExecutionForked,
            parent_id=parent.id,
            parent_version=parent.version,
            parent_chain_head=parent.chain_head,
            from_step=from_step,
            copied=copied,
        )

    def take_over(self, previous_worker: str, worker: str) -> None:
        """Record that `worker` continues what `previous_worker` held when its lease expired."""
        self.trigger_event(self.ExecutionTakenOver, previous_worker=previous_worker, worker=worker)

    # -- signals ----------------------------------------------------------------------------

    def receive_signal(
        self,
        signal: str,
        payload: dict[str, Any],
        actor: str,
        roles: list[str],
        idempotency_key: str | None = None,
    ) -> None:
        """Record a signal sent to the execution; a step waiting for its name takes it."""
        self.trigger_event(
            self.SignalReceived,
            signal=signal,
            payload=payload,
            actor=actor,
            roles=list(roles),
            idempotency_key=idempotency_key,
        )

    def await_signal(
        self, step_id: str, attempt: int, signal: str, deadline: datetime | None
    ) -> None:
        step = self.step(step_id)
        step.require_running(attempt, "wait for a signal")
        if step.awaiting is not None or step.agent_started:
            raise StepTransitionError(step, "wait for a signal twice")
        self.trigger_event(
            self.SignalAwaited, step_id=step_id, attempt=attempt, signal=signal, deadline=deadline
        )

    def next_signal(self, signal: str) -> dict[str, Any] | None:
        """The oldest received signal of this name not taken yet."""
        return next((s for s in self.inbox if s["signal"] == signal), None)

    def take_signal_for(self, step_id: str, attempt: int) -> None:
        """Complete a waiting step with the oldest signal of its name (its payload is the
        step's output)."""
        step = self.step(step_id)
        step.require_running(attempt, "take a signal")
        waited = self.next_signal(step.awaiting) if step.awaiting is not None else None
        if waited is None:
            raise StepTransitionError(step, "take a signal it has not received")
        self.trigger_event(
            self.StepCompleted, step_id=step_id, attempt=attempt, output=waited["payload"]
        )

    def take_signal(self, signal: str) -> None:
        """Drop the oldest signal of this name from the inbox (applying a waiting step's end)."""
        waited = self.next_signal(signal)
        if waited is not None:
            self.inbox.remove(waited)

    def settle_status(self) -> None:
        """`waiting` while the only attempts under way wait for signals, else `running`."""
        if self.status not in (ExecutionStatus.RUNNING, ExecutionStatus.WAITING):
            return
        waiting = busy = False
        for step in self.steps.values():
            if step.status is StepStatus.RUNNING and step.awaiting is not None:
                waiting = True
            elif step.status in _UNDER_WAY:
                busy = True
        self.status = ExecutionStatus.WAITING if waiting and not busy else ExecutionStatus.RUNNING

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
        self.step(step_id).require_current(attempt, "start", StepStatus.SCHEDULED)
        self.trigger_event(self.StepStarted, step_id=step_id, attempt=attempt)

    def complete_step(self, step_id: str, attempt: int, output: Any) -> None:
        self.step(step_id).require_running(attempt, "complete")
        self.trigger_event(self.StepCompleted, step_id=step_id, attempt=attempt, output=output)

    def fail_step(self, step_id: str, attempt: int, error: dict[str, Any]) -> None:
        self.step(step_id).require_current(attempt, "fail", *_AFTER_RUNNING)
        self.trigger_event(self.StepFailed, step_id=step_id, attempt=attempt, error=error)

    def retry_step(
        self,
        step_id: str,
        attempt: int,
        error: dict[str, Any],
        delay_seconds: float,
        retry_at: datetime,
    ) -> None:
        self.step(step_id).require_current(attempt, "retry", *_AFTER_RUNNING)
        self.trigger_event(
            self.StepRetrying,
            step_id=step_id,
            attempt=attempt,
            error=error,
            delay_seconds=delay_seconds,
            retry_at=retry_at,
        )

    def time_out_step(self, step_id: str, attempt: int, timeout_seconds: float) -> None:
        self.step(step_id).require_running(attempt, "time out")
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
        step = self.step(step_id)
        step.require_running(attempt, "start its agent")
        if step.agent_started:
            raise StepTransitionError(step, "start its agent twice")
        self.trigger_event(
            self.AgentStarted, step_id=step_id, attempt=attempt, agent=agent, input=input
        )

    def record_thinking(self, step_id: str, attempt: int, message: str) -> None:
        self.step(step_id).require_agent_running(attempt, "think")
        self.trigger_event(self.AgentThinking, step_id=step_id, attempt=attempt, message=message)

    def start_tool(self, step_id: str, attempt: int, call_id: str, tool: str, args: Any) -> None:
        step = self.step(step_id)
        step.require_agent_running(attempt, "call a tool")
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
        tool = self.step(step_id).open_call(attempt, call_id)
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
        tool = self.step(step_id).open_call(attempt, call_id)
        self.trigger_event(
            self.ToolFailed,
            step_id=step_id,
            attempt=attempt,
            call_id=call_id,
            tool=tool,
            error=error,
            duration_ms=duration_ms,
        )

    def record_output_delta(self, step_id: str, attempt: int, text: str, index: int) -> None:
        step = self.step(step_id)
        step.require_agent_running(attempt, "stream output")
        if index != step.output_pieces:
            raise StepTransitionError(step, f"stream piece {index} after {step.output_pieces}")
        self.trigger_event(
            self.AgentOutputDelta, step_id=step_id, attempt=attempt, text=text, index=index
        )

    def complete_llm_call(
        self,
        step_id: str,
        attempt: int,
        model: str,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        duration_ms: float,
        cost_usd: float | None,
    ) -> None:
        self.step(step_id).require_agent_running(attempt, "record a model call")
        self.trigger_event(
            self.LlmCallCompleted,
            step_id=step_id,
            attempt=attempt,
            model=model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            duration_ms=duration_ms,
            cost_usd=cost_usd,
        )

    def complete_agent(
        self,
        step_id: str,
        attempt: int,
        output: Any,
        duration_ms: float,
        usage: dict[str, Any] | None = None,
    ) -> None:
        self.step(step_id).require_agent_running(attempt, "complete its agent")
        self.trigger_event(
            self.AgentCompleted,
            step_id=step_id,
            attempt=attempt,
            output=output,
            duration_ms=duration_ms,
            usage=usage,  # always given: a field left to its default would not be hashed
        )

    def fail_agent(
        self, step_id: str, attempt: int, error: dict[str, Any], duration_ms: float
    ) -> None:
        self.step(step_id).require_agent_running(attempt, "fail its agent")
        self.trigger_event(
            self.AgentFailed, step_id=step_id, attempt=attempt, error=error, duration_ms=duration_ms
        )

    def evaluate_gateway(
        self, step_id: str, attempt: int, route: int | None, next_steps: list[str], reason: str
    ) -> None:
        self.step(step_id).require_running(attempt, "evaluate a gateway")
        self.trigger_event(
            self.GatewayEvaluated,
            step_id=step_id,
            attempt=attempt,
            route=route,
            next=next_steps,
            reason=reason,
        )

    def start_timer(self, step_id: str, attempt: int, seconds: float, fire_at: datetime) -> None:
        self.step(step_id).require_running(attempt, "start a timer")
        self.trigger_event(
            self.TimerStarted, step_id=step_id, attempt=attempt, seconds=seconds, fire_at=fire_at
        )

    def fire_timer(self, step_id: str, attempt: int) -> None:
        step = self.step(step_id)
        step.require_running(attempt, "fire a timer")
        if step.due_at is None:
            raise StepTransitionError(step, "fire a timer that was not started")
        self.trigger_event(self.TimerFired, step_id=step_id, attempt=attempt)
