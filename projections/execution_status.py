"""Execution status per user: one row per execution, kept current by its events."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import singledispatchmethod
from typing import Any, Protocol, TypeVar
from uuid import UUID

from agent_ledger.domain.event_names import event_type
from agent_ledger.domain.executions import Execution, ExecutionEvent, StepEvent
from agent_ledger.projections.step_status import (
    UNDER_WAY,
    WAITING,
    InMemoryStepStatusView,
    StepStatusProjection,
    StepStatusView,
)

Number = TypeVar("Number", int, float)

RUNNING = "running"


@dataclass
class ExecutionStatusRow:
    """What a dashboard shows of one execution."""

    execution_id: UUID
    user_id: str
    process_name: str
    process_version: int
    thread_id: str | None
    started_at: datetime
    status: str = "pending"
    current_steps: list[str] = field(default_factory=list)
    attempts: int = 0
    retries: int = 0
    cancellation_requested: bool = False
    finished_at: datetime | None = None
    duration_ms: float | None = None
    last_event: str = "execution_started"
    last_position: int = 0
    version: int = 1
    output: Any = None
    error: dict[str, Any] | None = None
    model_calls: int = 0
    prompt_tokens: int | None = None  # None: no model call, or one that did not report it
    completion_tokens: int | None = None
    cost_usd: float | None = None  # None: no model call, or one whose cost is unknown
    parent_id: UUID | None = None  # the execution this one forks, from `forked_from_step`
    forked_from_step: str | None = None
    resumes: int = 0
    resumed_at: datetime | None = None  # its last resume: its timeout counts from there


class ExecutionStatusView(Protocol):
    """Where the projection keeps its rows (SQL in production, a dict in tests)."""

    def get(self, execution_id: UUID) -> ExecutionStatusRow | None: ...

    def put(self, row: ExecutionStatusRow) -> None: ...

    def step_statuses(self, execution_id: UUID) -> list[str]:
        """The statuses of the execution's step rows, the current event applied to them."""
        ...


class StatusView(ExecutionStatusView, StepStatusView, Protocol):
    """Execution and step rows together: what `StatusProjections` write."""


class ExecutionStatusProjection:
    """Applies execution events to status rows."""

    name = "execution_status"

    def __init__(self, view: ExecutionStatusView):
        self.view = view

    def process(self, event: object, position: int) -> None:
        """Apply one stored event at its position."""
        if isinstance(event, Execution.ExecutionStarted):
            row = ExecutionStatusRow(
                execution_id=event.originator_id,
                user_id=event.user_id,
                process_name=event.process_name,
                process_version=event.process_version,
                thread_id=event.thread_id,
                started_at=event.timestamp,
            )
        elif isinstance(event, ExecutionEvent):
            found = self.view.get(event.originator_id)
            if found is None:
                return  # its start was not projected: nothing sensible to update
            row = found
            self._apply(event, row)
        else:
            return
        row.last_event = event_type(event)
        row.last_position = position
        row.version = event.originator_version
        self.view.put(row)

    @singledispatchmethod
    def _apply(self, event: ExecutionEvent, row: ExecutionStatusRow) -> None:
        """Most events change only the bookkeeping columns."""

    @_apply.register
    def _(self, event: Execution.StepScheduled, row: ExecutionStatusRow) -> None:
        row.status = RUNNING

    @_apply.register
    def _(self, event: Execution.SignalAwaited, row: ExecutionStatusRow) -> None:
        self._settle(row)

    @_apply.register
    def _(self, event: Execution.StepStarted, row: ExecutionStatusRow) -> None:
        row.attempts += 1
        if event.step_id not in row.current_steps:
            row.current_steps = [*row.current_steps, event.step_id]

    @_apply.register
    def _(self, event: Execution.StepRetrying, row: ExecutionStatusRow) -> None:
        row.retries += 1
        self._leave_step(event, row)

    @_apply.register(Execution.StepCompleted)
    @_apply.register(Execution.StepFailed)
    @_apply.register(Execution.StepSkipped)
    @_apply.register(Execution.StepCancelled)
    @_apply.register(Execution.StepTimedOut)
    def _leave_step(self, event: StepEvent, row: ExecutionStatusRow) -> None:
        row.current_steps = [s for s in row.current_steps if s != event.step_id]
        self._settle(row)

    def _settle(self, row: ExecutionStatusRow) -> None:
        """`waiting` while the only attempts under way wait for signals, else `running`: the
        aggregate's `settle_status`, on the step rows."""
        if row.status not in (RUNNING, WAITING):
            return
        steps = set(self.view.step_statuses(row.execution_id))
        row.status = WAITING if WAITING in steps and not steps & UNDER_WAY else RUNNING

    @_apply.register
    def _(self, event: Execution.LlmCallCompleted, row: ExecutionStatusRow) -> None:
        """Sum the execution's model calls (their `AgentCompleted.usage` sums them again);
        a total with a part that is not known is not known."""
        first = row.model_calls == 0
        row.model_calls += 1
        row.prompt_tokens = _plus(row.prompt_tokens, event.prompt_tokens, first)
        row.completion_tokens = _plus(row.completion_tokens, event.completion_tokens, first)
        cost = _plus(row.cost_usd, event.cost_usd, first)
        row.cost_usd = None if cost is None else round(cost, 9)

    @_apply.register
    def _(self, event: Execution.ExecutionCancellationRequested, row: ExecutionStatusRow) -> None:
        row.cancellation_requested = True

    @_apply.register
    def _(self, event: Execution.ExecutionCompleted, row: ExecutionStatusRow) -> None:
        row.output = event.output
        self._finish(row, "completed", event.timestamp)

    @_apply.register
    def _(self, event: Execution.ExecutionFailed, row: ExecutionStatusRow) -> None:
        row.error = event.error
        self._finish(row, "failed", event.timestamp)

    @_apply.register
    def _(self, event: Execution.ExecutionCancelled, row: ExecutionStatusRow) -> None:
        row.error = {"type": "Cancelled", "message": event.reason, "by": event.by}
        self._finish(row, "cancelled", event.timestamp)

    @_apply.register
    def _(self, event: Execution.ExecutionTimedOut, row: ExecutionStatusRow) -> None:
        row.error = {"type": "ExecutionTimedOut", "timeout_seconds": event.timeout_seconds}
        self._finish(row, "timed_out", event.timestamp)

    @_apply.register
    def _(self, event: Execution.ExecutionResumed, row: ExecutionStatusRow) -> None:
        """Pending again, as the aggregate is; what it used and its attempts stay counted,
        and its duration, once it ends again, runs from its first start."""
        row.status, row.current_steps, row.cancellation_requested = "pending", [], False
        row.finished_at = row.duration_ms = row.output = row.error = None
        row.resumes += 1
        row.resumed_at = event.timestamp

    @_apply.register
    def _(self, event: Execution.ExecutionForked, row: ExecutionStatusRow) -> None:
        row.parent_id, row.forked_from_step = event.parent_id, event.from_step

    @staticmethod
    def _finish(row: ExecutionStatusRow, status: str, at: datetime) -> None:
        row.status = status
        row.current_steps = []
        row.finished_at = at
        row.duration_ms = round((at - row.started_at).total_seconds() * 1000, 3)


def _plus(total: Number | None, part: Number | None, first: bool) -> Number | None:
    if first:
        return part
    return None if total is None or part is None else total + part


class StatusProjections:
    """The step and the execution status projections over one view, steps first: an
    execution's status follows its steps'."""

    def __init__(self, view: StatusView):
        self.steps = StepStatusProjection(view)
        self.executions = ExecutionStatusProjection(view)

    def process(self, event: object, position: int) -> None:
        """Apply one stored event at its position to both."""
        self.steps.process(event, position)
        self.executions.process(event, position)


class InMemoryExecutionStatusView(InMemoryStepStatusView):
    """Execution rows in a dict, beside the step rows: the projections' twin for unit tests."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[UUID, ExecutionStatusRow] = {}

    def get(self, execution_id: UUID) -> ExecutionStatusRow | None:
        return self.rows.get(execution_id)

    def put(self, row: ExecutionStatusRow) -> None:
        self.rows[row.execution_id] = row

    def step_statuses(self, execution_id: UUID) -> list[str]:
        return [row.status for (of, _), row in self.steps.items() if of == execution_id]
