"""What can happen to a started execution: the events `Execution` records.

They are declared on `ExecutionEvents`, a base of `Execution`, and the library redefines
each one on the aggregate as `Execution.<Name>`: same name, same explicit `TOPIC`, so stored
events decode by topic whatever module declares them. `ExecutionStarted` and the snapshot
stay on `Execution`, beside the `__init__` they feed.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from agent_ledger.domain.audited import AuditedEvent
from agent_ledger.domain.execution_state import ExecutionStatus, StepStatus

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

    class StepScheduled(StepEvent):
        TOPIC = execution_topic("StepScheduled")

        def apply(self, execution: Execution) -> None:
            step = execution.steps[self.step_id]
            step.status, step.attempt = StepStatus.SCHEDULED, self.attempt
            step.agent_started, step.agent_finished, step.open_tool_calls = False, False, {}
            step.due_at, step.timer_fired, step.output_pieces = None, False, 0
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

    class StepFailed(StepEvent):
        TOPIC = execution_topic("StepFailed")
        error: dict[str, Any]

        def apply(self, execution: Execution) -> None:
            step = execution.steps[self.step_id]
            step.status, step.error = StepStatus.FAILED, self.error

    class StepRetrying(StepEvent):
        TOPIC = execution_topic("StepRetrying")
        error: dict[str, Any]
        delay_seconds: float
        retry_at: datetime

        def apply(self, execution: Execution) -> None:
            step = execution.steps[self.step_id]
            step.status, step.error, step.due_at = StepStatus.RETRYING, self.error, self.retry_at

    class StepSkipped(StepEvent):
        TOPIC = execution_topic("StepSkipped")
        reason: str

        def apply(self, execution: Execution) -> None:
            step = execution.steps[self.step_id]
            step.status, step.skip_reason = StepStatus.SKIPPED, self.reason

    class StepTimedOut(StepEvent):
        TOPIC = execution_topic("StepTimedOut")
        timeout_seconds: float

        def apply(self, execution: Execution) -> None:
            execution.steps[self.step_id].status = StepStatus.TIMED_OUT

    class StepCancelled(StepEvent):
        TOPIC = execution_topic("StepCancelled")
        reason: str

        def apply(self, execution: Execution) -> None:
            execution.steps[self.step_id].status = StepStatus.CANCELLED

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
