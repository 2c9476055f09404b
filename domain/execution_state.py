"""Value objects of an execution's state: statuses, steps, errors of the execution rules."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from agent_ledger.domain.errors import DomainError

MAX_PAYLOAD_BYTES = 16 * 1024
"""Tool arguments and results larger than this are recorded as a bounded preview."""


class ExecutionStatus(StrEnum):
    """Where an execution is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL_EXECUTION


_TERMINAL_EXECUTION = {
    ExecutionStatus.COMPLETED,
    ExecutionStatus.FAILED,
    ExecutionStatus.CANCELLED,
    ExecutionStatus.TIMED_OUT,
}


class StepStatus(StrEnum):
    """Where one step is in its life."""

    PENDING = "pending"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    RETRYING = "retrying"
    TIMED_OUT = "timed_out"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def is_done(self) -> bool:
        return self in _DONE_STEP


_DONE_STEP = {StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED}


@dataclass
class StepState:
    """Mutable state of one step inside the aggregate."""

    step_id: str
    status: StepStatus = StepStatus.PENDING
    attempt: int = 0
    output: Any = None
    error: dict[str, Any] | None = None
    skip_reason: str | None = None
    due_at: datetime | None = None
    timer_fired: bool = False
    agent_started: bool = False
    agent_finished: bool = False
    open_tool_calls: dict[str, str] = field(default_factory=dict)
    finished_tool_calls: list[str] = field(default_factory=list)
    output_pieces: int = 0
    awaiting: str | None = None
    """The signal the running attempt waits for (a `wait_for_signal` step)."""
    attempts_before: int = 0
    """Attempts made before the execution was last resumed: its retry budget starts after."""
    copied: bool = False
    """Completed in the execution this one was forked from: its output is copied, not run."""

    @classmethod
    def from_plain(cls, plain: dict[str, Any]) -> StepState:
        """The step state a snapshot holds as a plain dict (`dataclasses.asdict`)."""
        return cls(**{**plain, "status": StepStatus(plain["status"])})

    # -- rules the execution's step commands share --------------------------------------------

    def require_current(self, attempt: int, action: str, *allowed: StepStatus) -> None:
        """Refuse unless `attempt` is the step's current attempt and its status is `allowed`."""
        if self.status is StepStatus.PENDING:
            raise StepTransitionError(self, action)
        if attempt != self.attempt:
            raise StaleAttemptError(self, attempt)
        if self.status not in allowed:
            raise StepTransitionError(self, action)

    def require_running(self, attempt: int, action: str) -> None:
        """Refuse unless `attempt` is the step's current attempt and it is running."""
        if attempt == self.attempt and self.status is StepStatus.SCHEDULED:
            raise StepTransitionError(self, action)
        if attempt != self.attempt or self.status is not StepStatus.RUNNING:
            raise StaleAttemptError(self, attempt)  # e.g. a late result of a timed-out attempt

    def require_agent_running(self, attempt: int, action: str) -> None:
        """Refuse unless the attempt is running and its agent has started and not finished."""
        self.require_running(attempt, action)
        if not self.agent_started:
            raise StepTransitionError(self, f"{action} before its agent started")
        if self.agent_finished:
            raise StepTransitionError(self, f"{action} after its agent finished")

    def open_call(self, attempt: int, call_id: str) -> str:
        """The tool of a call the running attempt started and has not finished."""
        self.require_running(attempt, "finish a tool call")
        try:
            return self.open_tool_calls[call_id]
        except KeyError:
            raise ToolCallError(
                f"tool call {call_id!r} of step {self.step_id!r} attempt {attempt} "
                "was never started"
            ) from None

    def close_tool_call(self, call_id: str) -> None:
        self.open_tool_calls.pop(call_id, None)
        self.finished_tool_calls.append(call_id)


class ExecutionRuleError(DomainError):
    """A command on an execution was refused."""


class ExecutionFinishedError(ExecutionRuleError):
    """Nothing may happen to an execution after it completed, failed, was cancelled or timed out."""

    def __init__(self, execution_id: UUID, status: ExecutionStatus):
        super().__init__(f"execution {execution_id} is already {status.value}")


class UnknownStepError(ExecutionRuleError):
    """The step is not part of the execution's process definition."""

    def __init__(self, step_id: str):
        super().__init__(f"the process has no step {step_id!r}")


class StepTransitionError(ExecutionRuleError):
    """The step is not in a state that allows this transition."""

    def __init__(self, step: StepState, action: str):
        super().__init__(
            f"step {step.step_id!r} cannot {action} while {step.status.value} "
            f"(attempt {step.attempt})"
        )


class AttemptOrderError(ExecutionRuleError):
    """A step's attempt numbers only grow."""

    def __init__(self, step_id: str, current: int, proposed: int):
        super().__init__(
            f"step {step_id!r} is at attempt {current}; attempt {proposed} would not be later"
        )


class StaleAttemptError(ExecutionRuleError):
    """A result arrived from an attempt that is no longer the step's running attempt."""

    def __init__(self, step: StepState, attempt: int):
        super().__init__(
            f"step {step.step_id!r} attempt {attempt} is stale: the step is "
            f"{step.status.value} at attempt {step.attempt}"
        )


class ToolCallError(ExecutionRuleError):
    """Tool events must pair up under one call id within one attempt."""


class CancellationAlreadyRequestedError(ExecutionRuleError):
    """Cancellation was already requested for this execution."""

    def __init__(self, execution_id: UUID):
        super().__init__(f"cancellation of execution {execution_id} was already requested")


def execution_id_for(user_id: str, idempotency_key: str) -> UUID:
    """Derive the execution id of an idempotent request: the same key gives the same id."""
    # JSON keeps the pair unambiguous whatever characters the user id or key contain
    pair = json.dumps([user_id, idempotency_key])
    return uuid5(NAMESPACE_URL, f"agent-ledger:execution:{pair}")


def bounded(value: Any, limit: int = MAX_PAYLOAD_BYTES) -> Any:
    """Keep a JSON value as it is, or replace it with a preview if it is too large to record."""
    text = json.dumps(value, separators=(",", ":"), default=str)
    if len(text.encode()) <= limit:
        return value
    return {"_truncated": True, "bytes": len(text.encode()), "preview": text[: limit // 4]}
