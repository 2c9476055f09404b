"""What can happen to a started execution: the events `Execution` records.

They are declared on `ExecutionEvents`, a base of `Execution`, and the library redefines
each one on the aggregate as `Execution.<Name>`: same name, same explicit `TOPIC`, so stored
events decode by topic whatever module declares them. `ExecutionStarted` and the snapshot
stay on `Execution`, beside the `__init__` they feed.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from agent_ledger.domain.audited import AuditedEvent
from agent_ledger.domain.execution_state import ExecutionStatus, StepState, StepStatus

if TYPE_CHECKING:
    from agent_ledger.domain.executions import Execution


def execution_topic(name: str) -> str:
    """The stored topic of an execution's class or event: fixed, whatever the module."""
    return f"agent_ledger.execution.{name}"


class ExecutionEvent(AuditedEvent):
    """Every event of an execution after it started: whose, caused by whom, linked in the chain."""


class StepEvent(ExecutionEvent):
    """An event about one attempt of one step."""

    step_id: str
    attempt: int


class ExecutionEvents:
    """The events of a started execution, each with the state change it makes.

    Name them as `Execution.<Name>`: those are the classes registered under the topics.
    """

    class ExecutionCompleted(ExecutionEvent):
        TOPIC = execution_topic("ExecutionCompleted")
        output: Any

        def apply(self, execution: Execution) -> None:
            execution.status = ExecutionStatus.COMPLETED
            execution.output = self.output

    class ExecutionFailed(ExecutionEvent):
        TOPIC = execution_topic("ExecutionFailed")
        error: dict[str, Any]

        def apply(self, execution: Execution) -> None:
            execution.status = ExecutionStatus.FAILED
            execution.error = self.error

    class ExecutionCancellationRequested(ExecutionEvent):
        TOPIC = execution_topic("ExecutionCancellationRequested")
        by: str
        reason: str

        def apply(self, execution: Execution) -> None:
            execution.cancellation = {"by": self.by, "reason": self.reason}

    class ExecutionCancelled(ExecutionEvent):
        TOPIC = execution_topic("ExecutionCancelled")
        by: str
        reason: str

        def apply(self, execution: Execution) -> None:
            execution.status = ExecutionStatus.CANCELLED

    class ExecutionTimedOut(ExecutionEvent):
        TOPIC = execution_topic("ExecutionTimedOut")
        timeout_seconds: float

        def apply(self, execution: Execution) -> None:
            execution.status = ExecutionStatus.TIMED_OUT

    class ExecutionResumed(ExecutionEvent):
        """A failed, timed-out or cancelled execution runs again: its completed steps keep
        their outputs, `steps` start afresh (their retry budget too), its timeout restarts."""

        TOPIC = execution_topic("ExecutionResumed")
        actor: str
        reason: str
        steps: list[str]

        def apply(self, execution: Execution) -> None:
            execution.status = ExecutionStatus.PENDING
            execution.output, execution.error, execution.cancellation = None, None, None
            execution.resumed_at = self.timestamp
            for step_id in self.steps:
                old = execution.steps[step_id]
                execution.steps[step_id] = StepState(
                    step_id,
                    attempt=old.attempt,
                    attempts_before=old.attempt,
                    finished_tool_calls=old.finished_tool_calls,
                )

    class ExecutionForked(ExecutionEvent):
        """This execution is a fork of `parent_id` (at `parent_version`, whose chain head was
        `parent_chain_head`) from `from_step`: `copied` holds the outputs of the parent's
        steps it does not run again."""

        TOPIC = execution_topic("ExecutionForked")
        parent_id: UUID
        parent_version: int
        parent_chain_head: str
        from_step: str
        copied: dict[str, Any]

        def apply(self, execution: Execution) -> None:
            execution.forked_from = {
                "parent_id": str(self.parent_id),
                "parent_version": self.parent_version,
                "from_step": self.from_step,
            }
            for step_id, output in self.copied.items():
                step = execution.steps[step_id]
                step.status, step.output, step.copied = StepStatus.COMPLETED, output, True

    class SignalReceived(ExecutionEvent):
        """A signal sent to the execution: kept until a step waiting for it takes it."""

        TOPIC = execution_topic("SignalReceived")
        signal: str
        payload: dict[str, Any]
        actor: str
        roles: list[str]
        idempotency_key: str | None

        def apply(self, execution: Execution) -> None:
            execution.inbox.append(
                {"signal": self.signal, "payload": self.payload, "version": self.originator_version}
            )

    class SignalAwaited(StepEvent):
        """A `wait_for_signal` step's attempt waits for `signal`, until `deadline` if any."""

        TOPIC = execution_topic("SignalAwaited")
        signal: str
        deadline: datetime | None

        def apply(self, execution: Execution) -> None:
            step = execution.steps[self.step_id]
            step.awaiting, step.due_at = self.signal, self.deadline
            execution.settle_status()

    class StepScheduled(StepEvent):
        TOPIC = execution_topic("StepScheduled")

        def apply(self, execution: Execution) -> None:
            step = execution.steps[self.step_id]
            step.status, step.attempt = StepStatus.SCHEDULED, self.attempt
            step.agent_started, step.agent_finished, step.open_tool_calls = False, False, {}
            step.due_at, step.timer_fired, step.output_pieces = None, False, 0
            step.awaiting = None
            execution.status = ExecutionStatus.RUNNING

    class StepStarted(StepEvent):
        TOPIC = execution_topic("StepStarted")

        def apply(self, execution: Execution) -> None:
            execution.steps[self.step_id].status = StepStatus.RUNNING

    class StepCompleted(StepEvent):
        TOPIC = execution_topic("StepCompleted")
        output: Any

        def apply(self, execution: Execution) -> None:
            step = execution.steps[self.step_id]
            step.status, step.output = StepStatus.COMPLETED, self.output
            if step.awaiting is not None:  # the step took the oldest signal of its name
                execution.take_signal(step.awaiting)
                step.awaiting, step.due_at = None, None
            execution.settle_status()

    class StepFailed(StepEvent):
        TOPIC = execution_topic("StepFailed")
        error: dict[str, Any]

        def apply(self, execution: Execution) -> None:
            step = execution.steps[self.step_id]
            step.status, step.error, step.awaiting = StepStatus.FAILED, self.error, None
            execution.settle_status()

    class StepRetrying(StepEvent):
        TOPIC = execution_topic("StepRetrying")
        error: dict[str, Any]
        delay_seconds: float
        retry_at: datetime

        def apply(self, execution: Execution) -> None:
            step = execution.steps[self.step_id]
            step.status, step.error, step.due_at = StepStatus.RETRYING, self.error, self.retry_at
            step.awaiting = None
            execution.settle_status()

    class StepSkipped(StepEvent):
        TOPIC = execution_topic("StepSkipped")
        reason: str

        def apply(self, execution: Execution) -> None:
            step = execution.steps[self.step_id]
            step.status, step.skip_reason, step.awaiting = StepStatus.SKIPPED, self.reason, None
            execution.settle_status()

    class StepTimedOut(StepEvent):
        TOPIC = execution_topic("StepTimedOut")
        timeout_seconds: float

        def apply(self, execution: Execution) -> None:
            step = execution.steps[self.step_id]
            step.status, step.awaiting = StepStatus.TIMED_OUT, None
            execution.settle_status()

    class StepCancelled(StepEvent):
        TOPIC = execution_topic("StepCancelled")
        reason: str

        def apply(self, execution: Execution) -> None:
            step = execution.steps[self.step_id]
            step.status, step.awaiting = StepStatus.CANCELLED, None
            execution.settle_status()

    class AgentStarted(StepEvent):
        TOPIC = execution_topic("AgentStarted")
        agent: str
        input: Any

        def apply(self, execution: Execution) -> None:
            execution.steps[self.step_id].agent_started = True

    class AgentThinking(StepEvent):
        TOPIC = execution_topic("AgentThinking")
        message: str

    class ToolExecuting(StepEvent):
        TOPIC = execution_topic("ToolExecuting")
        call_id: str
        tool: str
        args: Any

        def apply(self, execution: Execution) -> None:
            execution.steps[self.step_id].open_tool_calls[self.call_id] = self.tool

    class ToolCompleted(StepEvent):
        TOPIC = execution_topic("ToolCompleted")
        call_id: str
        tool: str
        result: Any
        duration_ms: float

        def apply(self, execution: Execution) -> None:
            execution.steps[self.step_id].close_tool_call(self.call_id)

    class ToolFailed(StepEvent):
        TOPIC = execution_topic("ToolFailed")
        call_id: str
        tool: str
        error: dict[str, Any]
        duration_ms: float

        def apply(self, execution: Execution) -> None:
            execution.steps[self.step_id].close_tool_call(self.call_id)

    class AgentOutputDelta(StepEvent):
        """A piece of an agent's answer as it streams; an attempt's pieces, in `index`
        order, concatenate to its final text."""

        TOPIC = execution_topic("AgentOutputDelta")
        text: str
        index: int

        def apply(self, execution: Execution) -> None:
            execution.steps[self.step_id].output_pieces = self.index + 1

    class LlmCallCompleted(StepEvent):
        """One call to a language model ended: its token usage, time and price."""

        TOPIC = execution_topic("LlmCallCompleted")
        model: str
        prompt_tokens: int | None
        completion_tokens: int | None
        duration_ms: float
        cost_usd: float | None

    class AgentCompleted(StepEvent):
        TOPIC = execution_topic("AgentCompleted")
        output: Any
        duration_ms: float
        usage: dict[str, Any] | None = None  # a model agent's totals; absent before 2026-12

        def apply(self, execution: Execution) -> None:
            execution.steps[self.step_id].agent_finished = True

    class AgentFailed(StepEvent):
        TOPIC = execution_topic("AgentFailed")
        error: dict[str, Any]
        duration_ms: float

        def apply(self, execution: Execution) -> None:
            execution.steps[self.step_id].agent_finished = True

    class GatewayEvaluated(StepEvent):
        TOPIC = execution_topic("GatewayEvaluated")
        route: int | None
        next: list[str]
        reason: str

    class TimerStarted(StepEvent):
        TOPIC = execution_topic("TimerStarted")
        seconds: float
        fire_at: datetime

        def apply(self, execution: Execution) -> None:
            execution.steps[self.step_id].due_at = self.fire_at

    class TimerFired(StepEvent):
        TOPIC = execution_topic("TimerFired")

        def apply(self, execution: Execution) -> None:
            step = execution.steps[self.step_id]
            step.due_at, step.timer_fired = None, True

    class ExecutionTakenOver(ExecutionEvent):
        TOPIC = execution_topic("ExecutionTakenOver")
        previous_worker: str
        worker: str
