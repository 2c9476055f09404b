"""Metrics facts: one run per agent attempt, tool call and execution, with outcome and duration.

Rules (the README's metrics section says the same):
- an agent run is an `AgentStarted`; `AgentCompleted` makes it a success and `AgentFailed` a
  failure, each with the event's `duration_ms`;
- a tool run is a `ToolExecuting`; `ToolCompleted`/`ToolFailed` close it with `duration_ms`;
- a process run is an `ExecutionStarted`; `ExecutionCompleted`, `ExecutionFailed`,
  `ExecutionTimedOut`, `ExecutionCancelled` make it a success, failure, timeout, cancelled,
  its duration the time between the two events;
- `ExecutionResumed` reopens its execution's process run: running again, with one more retry,
  its earlier end no longer its outcome (the run counts once, by how it ends at last; its
  duration then runs from its start, the time it stood stopped included); the attempts that
  follow are new agent and tool runs (their attempt numbers are new); a fork is a new
  execution, hence a new process run;
- runs still open when their step attempt ends are closed by that end: `StepTimedOut` as a
  timeout, `StepCancelled` as cancelled, any other end as a failure; runs still open when the
  execution ends take its outcome (completed counts as a failure: the run never reported);
  their duration is the time since they started;
- `StepRetrying` marks every run of the attempt it retries with one retry, and adds one to
  its execution's process run;
- an `LlmCallCompleted` adds its model call, tokens and cost to its attempt's agent run and to
  its execution's process run, whatever the attempt's outcome (a failed attempt spent them
  too), and to the usage totals of both names; `AgentCompleted.usage` sums the same calls
  again, so it is never counted. A cost the event does not know (`cost_usd` null: a model
  without a price, or no token counts) adds nothing to the cost and one to `unpriced_calls`.
"""

from __future__ import annotations

import math
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


MAX_NANO_USD = 2**63 - 1  # what a BIGINT holds


def nano_usd(cost: float) -> int:
    """A cost in billionths of a dollar: integers, so that sums in any order agree."""
    nano = round(cost * 1_000_000_000) if math.isfinite(cost) else None
    if nano is None or abs(nano) > MAX_NANO_USD:
        raise ValueError(f"a cost of {cost} USD cannot be counted")
    return nano


def usd(nano: int) -> float:
    return round(nano / 1_000_000_000, 9)


@dataclass(frozen=True)
class ModelUsage:
    """Model calls, their tokens and their known cost; calls without a known cost apart."""

    model_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_nano_usd: int = 0
    unpriced_calls: int = 0

    @classmethod
    def of_call(cls, event: Execution.LlmCallCompleted) -> ModelUsage:
        """One call's usage (token counts it did not report add none)."""
        cost = event.cost_usd
        return cls(
            model_calls=1,
            prompt_tokens=int(event.prompt_tokens or 0),
            completion_tokens=int(event.completion_tokens or 0),
            cost_nano_usd=0 if cost is None else nano_usd(cost),
            unpriced_calls=1 if cost is None else 0,
        )

    def __add__(self, other: ModelUsage) -> ModelUsage:
        return ModelUsage(
            self.model_calls + other.model_calls,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cost_nano_usd + other.cost_nano_usd,
            self.unpriced_calls + other.unpriced_calls,
        )

    @property
    def cost_usd(self) -> float | None:
        """The known cost; None when there were model calls and none had a known cost."""
        if self.model_calls and self.unpriced_calls >= self.model_calls:
            return None
        return usd(self.cost_nano_usd)


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
    model_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_nano_usd: int = 0  # known costs only; the calls without one are `unpriced_calls`
    unpriced_calls: int = 0

    @property
    def usage(self) -> ModelUsage:
        return ModelUsage(
            self.model_calls,
            self.prompt_tokens,
            self.completion_tokens,
            self.cost_nano_usd,
            self.unpriced_calls,
        )

    def add_usage(self, usage: ModelUsage) -> None:
        total = self.usage + usage
        self.model_calls, self.prompt_tokens = total.model_calls, total.prompt_tokens
        self.completion_tokens, self.cost_nano_usd = total.completion_tokens, total.cost_nano_usd
        self.unpriced_calls = total.unpriced_calls

    def close(self, outcome: str, at: datetime, duration_ms: float | None = None) -> None:
        self.outcome, self.finished_at = outcome, at
        self.duration_ms = elapsed_ms(self.started_at, at) if duration_ms is None else duration_ms


class MetricsView(Protocol):
    """Where the runs of each execution live, the count of events by type, and the model
    usage of each agent and process name."""

    def runs(self, execution_id: UUID) -> dict[tuple[str, str], MetricRun]: ...

    def put_run(self, run: MetricRun) -> None: ...

    def count_event(self, type_name: str) -> None: ...

    def add_usage(self, kind: str, name: str, usage: ModelUsage) -> None: ...


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
        elif isinstance(event, Execution.ExecutionResumed):
            self._reopen(event)
        elif type(event) in _EXECUTION_ENDS:
            outcome = _EXECUTION_ENDS[type(event)]
            runs = self.view.runs(event.originator_id)
            for run in runs.values():
                if run.outcome == RUNNING:
                    own = outcome if run.kind == PROCESS or outcome != "success" else "failure"
                    run.close(own, event.timestamp)
                    self.view.put_run(run)

    def _reopen(self, event: Execution.ExecutionResumed) -> None:
        run = self.view.runs(event.originator_id).get((PROCESS, ""))
        if run is not None:
            run.outcome, run.finished_at, run.duration_ms = RUNNING, None, None
            run.retries += 1
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
        elif isinstance(event, Execution.LlmCallCompleted):
            self._model_call(event, attempt)
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

    def _model_call(self, event: Execution.LlmCallCompleted, attempt: str) -> None:
        usage = ModelUsage.of_call(event)
        runs = self.view.runs(event.originator_id)
        for run_key in ((AGENT, attempt), (PROCESS, "")):
            run = runs.get(run_key)
            if run is not None:  # open or not: the call was made, its tokens were spent
                run.add_usage(usage)
                self.view.put_run(run)
                self.view.add_usage(run.kind, run.name, usage)

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
        self.usage: dict[tuple[str, str], ModelUsage] = {}

    def runs(self, execution_id: UUID) -> dict[tuple[str, str], MetricRun]:
        return self.by_execution.setdefault(execution_id, {})

    def put_run(self, run: MetricRun) -> None:
        self.runs(run.execution_id)[(run.kind, run.key)] = run

    def count_event(self, type_name: str) -> None:
        self.counts[type_name] = self.counts.get(type_name, 0) + 1

    def add_usage(self, kind: str, name: str, usage: ModelUsage) -> None:
        self.usage[(kind, name)] = self.usage.get((kind, name), ModelUsage()) + usage

    def all_runs(self) -> list[MetricRun]:
        return [run for runs in self.by_execution.values() for run in runs.values()]
