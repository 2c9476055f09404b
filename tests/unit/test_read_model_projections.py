"""Step status, metrics runs and figures, fed with a real execution's events in memory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agent_ledger.domain.executions import Execution, ExecutionEvent
from agent_ledger.projections.metric_figures import (
    RunFacts,
    SlaTargets,
    figures_by_name,
    nearest_rank,
)
from agent_ledger.projections.metrics import InMemoryMetricsView, MetricsProjection
from agent_ledger.projections.step_status import (
    InMemoryStepStatusView,
    StepStatusProjection,
    latency_bucket,
)

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(Execution.ExecutionStarted, "create_timestamp", staticmethod(fake))
    monkeypatch.setattr(ExecutionEvent, "create_timestamp", staticmethod(fake))
    return fake


def a_retried_then_cancelled_execution(clock: Clock) -> Execution:
    execution = Execution.start(
        user_id="u",
        process_name="p",
        process_version=1,
        definition={},
        step_ids=["a", "b"],
        input={},
    )
    execution.schedule_step("a", 1)
    execution.start_step("a", 1)
    execution.start_agent("a", 1, "triage", {})
    execution.start_tool("a", 1, "c1", "lookup", {})
    clock.now += timedelta(seconds=2)
    execution.time_out_step("a", 1, 2.0)
    execution.retry_step("a", 1, {"type": "StepTimedOut"}, 0.1, clock.now)
    execution.schedule_step("a", 2)
    execution.start_step("a", 2)
    execution.start_agent("a", 2, "triage", {})
    execution.complete_agent("a", 2, {"ok": 1}, 250.0)
    clock.now += timedelta(seconds=1)
    execution.complete_step("a", 2, {"ok": 1})
    execution.schedule_step("b", 1)
    execution.start_step("b", 1)
    execution.start_agent("b", 1, "data", {})
    clock.now += timedelta(seconds=1)
    execution.cancel_step("b", "cancelled by request")
    execution.cancel("u", "cancelled by request")
    return execution


def test_steps_record_attempts_retries_and_durations_from_their_first_start(clock: Clock) -> None:
    view = InMemoryStepStatusView()
    projection = StepStatusProjection(view)
    for position, event in enumerate(a_retried_then_cancelled_execution(clock).collect_events(), 1):
        projection.process(event, position)

    (first, second) = sorted(view.steps.values(), key=lambda r: r.ordinal)
    assert (first.status, first.attempt, first.retries, first.agent) == (
        "completed",
        2,
        1,
        "triage",
    )
    assert first.duration_ms == 3000.0
    assert (second.status, second.duration_ms) == ("cancelled", 1000.0)
    assert view.latencies == {("p", "a"): [3000.0]}  # cancelled steps are not latencies


def test_runs_close_by_their_own_result_or_by_the_end_of_their_attempt(clock: Clock) -> None:
    view = InMemoryMetricsView()
    projection = MetricsProjection(view)
    for position, event in enumerate(a_retried_then_cancelled_execution(clock).collect_events(), 1):
        projection.process(event, position)

    runs = {(r.kind, r.key): r for r in view.all_runs()}
    timed_out, retried = runs[("agent", "a/1")], runs[("agent", "a/2")]
    assert (timed_out.outcome, timed_out.duration_ms, timed_out.retries) == ("timeout", 2000.0, 1)
    assert (retried.outcome, retried.duration_ms, retried.retries) == ("success", 250.0, 0)
    assert runs[("tool", "a/1/c1")].outcome == "timeout"
    assert runs[("agent", "b/1")].outcome == "cancelled"
    process = runs[("process", "")]
    assert (process.outcome, process.duration_ms, process.retries) == ("cancelled", 4000.0, 1)
    assert view.counts["step_retrying"] == 1


def test_figures_rank_durations_of_finished_runs_and_count_breaches() -> None:
    runs = [RunFacts("triage", T0, "success", float(ms), 0) for ms in range(100, 2100, 100)] + [
        RunFacts("triage", T0 + timedelta(minutes=1), "cancelled", 9999.0, 1)
    ]

    (named,) = figures_by_name(runs, SlaTargets({"triage": 1500.0}), series=True)

    totals = named.totals
    assert (totals.runs, totals.successes, totals.cancelled, totals.retries) == (21, 20, 1, 1)
    assert (totals.p50_ms, totals.p95_ms, totals.p99_ms) == (1000.0, 1900.0, 2000.0)
    assert totals.sla_breaches == 5
    assert [minute for minute, _ in named.series] == [T0, T0 + timedelta(minutes=1)]
    assert nearest_rank([], 0.5) is None
    assert latency_bucket(5.0) == 0
    assert latency_bucket(10**9) == 15
