"""Step status per execution, and the step latency histogram, kept current by step events
and by the execution events that reset (a resume) or copy (a fork) steps."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import singledispatchmethod
from typing import Any, Protocol
from uuid import UUID

from agent_ledger.domain.event_names import event_type
from agent_ledger.domain.executions import Execution, ExecutionEvent, StepEvent

WAITING = "waiting"
"""A step whose running attempt waits for a signal (a `wait_for_signal` step)."""

UNDER_WAY = frozenset({"scheduled", "running", "retrying", "timed_out"})
"""Steps whose attempt is at work, or may yet be retried: they keep an execution `running`."""

# upper bounds of the step latency histogram, in seconds (Prometheus `le`); +Inf follows
LATENCY_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)


def latency_bucket(duration_ms: float) -> int:
    """The index of the first bucket whose bound holds `duration_ms` (len = +Inf)."""
    seconds = duration_ms / 1000
    for index, bound in enumerate(LATENCY_BUCKETS):
        if seconds <= bound:
            return index
    return len(LATENCY_BUCKETS)


def elapsed_ms(start: datetime, end: datetime) -> float:
    """Milliseconds between two event timestamps, rounded to the microsecond."""
    return round((end - start).total_seconds() * 1000, 3)


@dataclass
class StepStatusRow:
    """What a dashboard shows of one step of one execution."""

    execution_id: UUID
    step_id: str
    ordinal: int
    user_id: str
    process_name: str
    status: str = "pending"
    attempt: int = 0
    retries: int = 0
    agent: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: float | None = None
    error: dict[str, Any] | None = None
    skip_reason: str | None = None
    last_event: str = "execution_started"
    last_position: int = 0
    awaiting: str | None = None  # the signal its attempt waits for, while status is `waiting`
    copied: bool = False  # completed in the execution this one forks: its output copied, not run


class StepStatusView(Protocol):
    """Where step rows and latency observations go."""

    def get_step(self, execution_id: UUID, step_id: str) -> StepStatusRow | None: ...

    def put_step(self, row: StepStatusRow) -> None: ...

    def observe_latency(self, process_name: str, step_id: str, duration_ms: float) -> None: ...


class StepStatusProjection:
    """Applies step events to step rows; a step's duration runs from its first start to its end."""

    def __init__(self, view: StepStatusView):
        self.view = view

    def process(self, event: object, position: int) -> None:
        """Apply one stored event at its position."""
        if isinstance(event, Execution.ExecutionStarted):
            for ordinal, step_id in enumerate(event.step_ids):
                self.view.put_step(
                    StepStatusRow(
                        execution_id=event.originator_id,
                        step_id=step_id,
                        ordinal=ordinal,
                        user_id=event.user_id,
                        process_name=event.process_name,
                        last_position=position,
                    )
                )
            return
        if isinstance(event, Execution.ExecutionResumed):
            self._each(event, position, event.steps, _run_again)
            return
        if isinstance(event, Execution.ExecutionForked):
            self._each(event, position, event.copied, _copied)
            return
        if not isinstance(event, StepEvent):
            return
        row = self.view.get_step(event.originator_id, event.step_id)
        if row is None:
            return  # its execution's start was not projected
        self._apply(event, row)
        row.last_event = event_type(event)
        row.last_position = position
        self.view.put_step(row)

    def _each(
        self,
        event: ExecutionEvent,
        position: int,
        step_ids: Iterable[str],
        change: Callable[[StepStatusRow], None],
    ) -> None:
        """Apply `change` to each of these steps' rows: an execution event about several."""
        for step_id in step_ids:
            row = self.view.get_step(event.originator_id, step_id)
            if row is None:
                continue  # its execution's start was not projected
            change(row)
            row.last_event, row.last_position = event_type(event), position
            self.view.put_step(row)

    @singledispatchmethod
    def _apply(self, event: StepEvent, row: StepStatusRow) -> None:
        """Agent and tool events change only the bookkeeping columns."""

    @_apply.register
    def _(self, event: Execution.StepScheduled, row: StepStatusRow) -> None:
        row.status, row.attempt, row.awaiting = "scheduled", event.attempt, None

    @_apply.register
    def _(self, event: Execution.StepStarted, row: StepStatusRow) -> None:
        row.status = "running"
        if row.started_at is None:
            row.started_at = event.timestamp

    @_apply.register
    def _(self, event: Execution.SignalAwaited, row: StepStatusRow) -> None:
        row.status, row.awaiting = WAITING, event.signal

    @_apply.register
    def _(self, event: Execution.AgentStarted, row: StepStatusRow) -> None:
        row.agent = event.agent

    @_apply.register
    def _(self, event: Execution.StepRetrying, row: StepStatusRow) -> None:
        row.status, row.error, row.awaiting = "retrying", event.error, None
        row.retries += 1

    @_apply.register
    def _(self, event: Execution.StepTimedOut, row: StepStatusRow) -> None:
        row.status, row.awaiting = "timed_out", None

    @_apply.register
    def _(self, event: Execution.StepCompleted, row: StepStatusRow) -> None:
        row.error = None
        self._finish(row, "completed", event.timestamp)

    @_apply.register
    def _(self, event: Execution.StepFailed, row: StepStatusRow) -> None:
        row.error = event.error
        self._finish(row, "failed", event.timestamp)

    @_apply.register
    def _(self, event: Execution.StepSkipped, row: StepStatusRow) -> None:
        row.skip_reason = event.reason
        self._finish(row, "skipped", event.timestamp)

    @_apply.register
    def _(self, event: Execution.StepCancelled, row: StepStatusRow) -> None:
        self._finish(row, "cancelled", event.timestamp)

    def _finish(self, row: StepStatusRow, status: str, at: datetime) -> None:
        row.status, row.finished_at, row.awaiting = status, at, None
        if row.started_at is not None:
            row.duration_ms = elapsed_ms(row.started_at, at)
            if status in ("completed", "failed"):
                self.view.observe_latency(row.process_name, row.step_id, row.duration_ms)


def _run_again(row: StepStatusRow) -> None:
    """A step of a resumed execution: pending afresh, its attempt number (and count of
    retries, and agent) kept, as the aggregate keeps its attempt."""
    row.status, row.awaiting, row.error, row.skip_reason = "pending", None, None, None
    row.started_at = row.finished_at = row.duration_ms = None


def _copied(row: StepStatusRow) -> None:
    """A step a fork copied from its parent: completed, never run here."""
    row.status, row.copied = "completed", True


class InMemoryStepStatusView:
    """Step rows and latency observations in dicts: the projection's twin for unit tests."""

    def __init__(self) -> None:
        self.steps: dict[tuple[UUID, str], StepStatusRow] = {}
        self.latencies: dict[tuple[str, str], list[float]] = {}

    def get_step(self, execution_id: UUID, step_id: str) -> StepStatusRow | None:
        return self.steps.get((execution_id, step_id))

    def put_step(self, row: StepStatusRow) -> None:
        self.steps[(row.execution_id, row.step_id)] = row

    def observe_latency(self, process_name: str, step_id: str, duration_ms: float) -> None:
        self.latencies.setdefault((process_name, step_id), []).append(duration_ms)
