"""Metrics facts: one run per agent attempt, tool call and execution, with outcome and duration.

Rules (the README's metrics section says the same):
- an agent run is an `AgentStarted`; `AgentCompleted` makes it a success and `AgentFailed` a
  failure, each with the event's `duration_ms`;
- a tool run is a `ToolExecuting`; `ToolCompleted`/`ToolFailed` close it with `duration_ms`;
- a process run is an `ExecutionStarted`; `ExecutionCompleted`, `ExecutionFailed`,
  `ExecutionTimedOut`, `ExecutionCancelled` make it a success, failure, timeout, cancelled,
  its duration the time between the two events;
- runs still open when their step attempt ends are closed by that end: `StepTimedOut` as a
  timeout, `StepCancelled` as cancelled, any other end as a failure; runs still open when the
  execution ends take its outcome (completed counts as a failure: the run never reported);
  their duration is the time since they started;
- `StepRetrying` marks every run of the attempt it retries with one retry, and adds one to
  its execution's process run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from agent_ledger.domain.event_names import event_type
from agent_ledger.domain.executions import Execution, ExecutionEvent, StepEvent
from agent_ledger.projections.step_status import elapsed_ms

AGENT, TOOL, PROCESS = "agent", "tool", "process"
RUNNING = "running"
FINISHED_OUTCOMES = ("success", "failure", "timeout")  # runs whose durations count

_STEP_ENDS: dict[type[StepEvent], str] = {
    Execution.StepTimedOut: "timeout",
    Execution.StepCancelled: "cancelled",
    Execution.StepCompleted: "failure",
    Execution.StepFailed: "failure",
    Execution.StepRetrying: "failure",
    Execution.StepSkipped: "failure",
}
_EXECUTION_ENDS: dict[type[ExecutionEvent], str] = {
    Execution.ExecutionCompleted: "success",
    Execution.ExecutionFailed: "failure",
    Execution.ExecutionTimedOut: "timeout",
    Execution.ExecutionCancelled: "cancelled",
}


@dataclass
class MetricRun:
    """One run of an agent, a tool or a whole process."""

    execution_id: UUID
    kind: str
    key: str
    name: str
    user_id: str
    started_at: datetime
    outcome: str = RUNNING
    finished_at: datetime | None = None
    duration_ms: float | None = None
    retries: int = 0

    def close(self, outcome: str, at: datetime, duration_ms: float | None = None) -> None:
        self.outcome, self.finished_at = outcome, at
        self.duration_ms = elapsed_ms(self.started_at, at) if duration_ms is None else duration_ms


class MetricsView(Protocol):
    """Where the runs of each execution live, and the count of events by type."""

    def runs(self, execution_id: UUID) -> dict[tuple[str, str], MetricRun]: ...

    def put_run(self, run: MetricRun) -> None: ...

    def count_event(self, type_name: str) -> None: ...


def attempt_key(step_id: str, attempt: int) -> str:
    return f"{step_id}/{attempt}"


class MetricsProjection:
    """Applies execution events to metric runs."""

    name = "metrics"

    def __init__(self, view: MetricsView):
        self.view = view

    def process(self, event: object, position: int) -> None:
        """Apply one stored event (positions are not needed: runs are keyed by their events)."""
        if not isinstance(event, Execution.ExecutionStarted | ExecutionEvent):
            return
        self.view.count_event(event_type(event))
        if isinstance(event, Execution.ExecutionStarted):
            self._open(event, PROCESS, "", event.process_name)
        elif isinstance(event, StepEvent):
            self._step_event(event)
        elif type(event) in _EXECUTION_ENDS:
            outcome = _EXECUTION_ENDS[type(event)]
            runs = self.view.runs(event.originator_id)
            for run in runs.values():
                if run.outcome == RUNNING:
                    own = outcome if run.kind == PROCESS or outcome != "success" else "failure"
                    run.close(own, event.timestamp)
                    self.view.put_run(run)

    def _step_event(self, event: StepEvent) -> None:
        attempt = attempt_key(event.step_id, event.attempt)
        if isinstance(event, Execution.AgentStarted):
            self._open(event, AGENT, attempt, event.agent)
        elif isinstance(event, Execution.ToolExecuting):
            self._open(event, TOOL, f"{attempt}/{event.call_id}", event.tool)
        elif isinstance(event, Execution.ToolCompleted | Execution.ToolFailed):
            outcome = "success" if isinstance(event, Execution.ToolCompleted) else "failure"
            self._close(event, (TOOL, f"{attempt}/{event.call_id}"), outcome, event.duration_ms)
        elif isinstance(event, Execution.AgentCompleted | Execution.AgentFailed):
            outcome = "success" if isinstance(event, Execution.AgentCompleted) else "failure"
            self._close(event, (AGENT, attempt), outcome, event.duration_ms)
        elif type(event) in _STEP_ENDS:
            self._end_attempt(event, attempt, _STEP_ENDS[type(event)])

    def _open(
        self, event: ExecutionEvent | Execution.ExecutionStarted, kind: str, key: str, name: str
    ) -> None:
        run = MetricRun(
            execution_id=event.originator_id,
            kind=kind,
            key=key,
            name=name,
            user_id=event.user_id,
            started_at=event.timestamp,
        )
        self.view.runs(event.originator_id)[(kind, key)] = run
        self.view.put_run(run)

    def _close(
        self, event: StepEvent, run_key: tuple[str, str], outcome: str, duration_ms: float
    ) -> None:
        run = self.view.runs(event.originator_id).get(run_key)
        if run is not None and run.outcome == RUNNING:
            run.close(outcome, event.timestamp, duration_ms)
            self.view.put_run(run)

    def _end_attempt(self, event: StepEvent, attempt: str, outcome: str) -> None:
        runs = self.view.runs(event.originator_id)
        retrying = isinstance(event, Execution.StepRetrying)
        for (kind, key), run in runs.items():
            if kind == PROCESS:
                if retrying:
                    run.retries += 1
                    self.view.put_run(run)
                continue
            if key != attempt and not key.startswith(f"{attempt}/"):
                continue
            if run.outcome == RUNNING:
                run.close(outcome, event.timestamp)
            if retrying:
                run.retries = 1
            self.view.put_run(run)


class InMemoryMetricsView:
    """Runs and counts in dicts: the projection's twin for unit tests."""

    def __init__(self) -> None:
        self.by_execution: dict[UUID, dict[tuple[str, str], MetricRun]] = {}
        self.counts: dict[str, int] = {}

    def runs(self, execution_id: UUID) -> dict[tuple[str, str], MetricRun]:
        return self.by_execution.setdefault(execution_id, {})

    def put_run(self, run: MetricRun) -> None:
        self.runs(run.execution_id)[(run.kind, run.key)] = run

    def count_event(self, type_name: str) -> None:
        self.counts[type_name] = self.counts.get(type_name, 0) + 1

    def all_runs(self) -> list[MetricRun]:
        return [run for runs in self.by_execution.values() for run in runs.values()]
