"""Step status, metrics runs and figures, the model usage of the execution status, the
`waiting` status of executions and steps, and resumed and forked executions, fed with a real
execution's events in memory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agent_ledger.domain.executions import Execution, ExecutionEvent
from agent_ledger.projections.execution_status import (
    ExecutionStatusProjection,
    InMemoryExecutionStatusView,
    StatusProjections,
)
from agent_ledger.projections.metric_figures import (
    RunFacts,
    SlaTargets,
    figures_by_name,
    nearest_rank,
)
from agent_ledger.projections.metrics import (
    InMemoryMetricsView,
    MetricsProjection,
    ModelUsage,
    nano_usd,
    usd,
)
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


def a_model_agent_execution_retried_after_a_failed_attempt(
    clock: Clock, *, second_price: float | None
) -> Execution:
    """Attempt 1 makes one priced call and fails; attempt 2 makes two (the second priced at
    `second_price`) and completes, with the usage summary on `AgentCompleted`."""
    execution = Execution.start(
        user_id="u",
        process_name="ask",
        process_version=1,
        definition={},
        step_ids=["answer"],
        input={},
    )
    execution.schedule_step("answer", 1)
    execution.start_step("answer", 1)
    execution.start_agent("answer", 1, "llm:gpt-test", {})
    execution.complete_llm_call("answer", 1, "gpt-test", 100, 10, 50.0, 0.0012)
    clock.now += timedelta(seconds=1)
    execution.fail_agent("answer", 1, {"type": "ModelUnavailable"}, 1000.0)
    execution.retry_step("answer", 1, {"type": "ModelUnavailable"}, 0.1, clock.now)
    execution.schedule_step("answer", 2)
    execution.start_step("answer", 2)
    execution.start_agent("answer", 2, "llm:gpt-test", {})
    execution.complete_llm_call("answer", 2, "gpt-test", 200, 20, 50.0, 0.0024)
    execution.complete_llm_call("answer", 2, "gpt-test", 300, None, 50.0, second_price)
    usage = {"model_calls": 2, "prompt_tokens": 500, "completion_tokens": None, "cost_usd": None}
    execution.complete_agent("answer", 2, "done", 100.0, usage)
    execution.complete_step("answer", 2, "done")
    execution.complete("done")
    return execution


def test_model_calls_count_once_on_their_attempt_and_execution_even_when_the_attempt_failed(
    clock: Clock,
) -> None:
    view = InMemoryMetricsView()
    projection = MetricsProjection(view)
    execution = a_model_agent_execution_retried_after_a_failed_attempt(clock, second_price=None)
    for position, event in enumerate(execution.collect_events(), 1):
        projection.process(event, position)

    runs = {(r.kind, r.key): r for r in view.all_runs()}
    failed, retried, process = (
        runs[("agent", "answer/1")],
        runs[("agent", "answer/2")],
        runs[("process", "")],
    )
    assert failed.outcome == "failure"
    assert failed.usage == ModelUsage(1, 100, 10, 1_200_000, 0)
    # the summary on AgentCompleted is not added again; a call without a cost is not 0 USD
    assert retried.usage == ModelUsage(2, 500, 20, 2_400_000, 1)
    assert process.usage == ModelUsage(3, 600, 30, 3_600_000, 1)
    assert process.usage.cost_usd == 0.0036
    assert view.usage == {
        ("agent", "llm:gpt-test"): ModelUsage(3, 600, 30, 3_600_000, 1),
        ("process", "ask"): ModelUsage(3, 600, 30, 3_600_000, 1),
    }
    assert runs[("agent", "answer/1")].usage.cost_usd == 0.0012


def test_an_executions_tokens_and_cost_are_unknown_once_one_call_did_not_say(clock: Clock) -> None:
    unknown = a_model_agent_execution_retried_after_a_failed_attempt(clock, second_price=None)
    priced = a_model_agent_execution_retried_after_a_failed_attempt(clock, second_price=0.0001)
    view = InMemoryExecutionStatusView()
    projection = ExecutionStatusProjection(view)
    for execution in (unknown, priced):
        for position, event in enumerate(execution.collect_events(), 1):
            projection.process(event, position)

    for execution_id, cost in ((unknown.id, None), (priced.id, 0.0037)):
        row = view.rows[execution_id]
        assert (row.model_calls, row.prompt_tokens, row.completion_tokens, row.cost_usd) == (
            3,
            600,
            None,  # the last call reported no completion tokens
            cost,
        )


def test_an_execution_without_model_calls_has_no_tokens_or_cost(clock: Clock) -> None:
    view = InMemoryExecutionStatusView()
    projection = ExecutionStatusProjection(view)
    for position, event in enumerate(a_retried_then_cancelled_execution(clock).collect_events(), 1):
        projection.process(event, position)

    (row,) = view.rows.values()
    assert (row.model_calls, row.prompt_tokens, row.completion_tokens, row.cost_usd) == (
        0,
        None,
        None,
        None,
    )


def test_figures_add_the_usage_of_their_runs_and_say_how_many_calls_had_no_price() -> None:
    runs = [
        RunFacts("ask", T0, "success", 10.0, 0, ModelUsage(2, 100, 10, 1_500, 0)),
        RunFacts("ask", T0 + timedelta(minutes=1), "failure", 10.0, 0, ModelUsage(1, 50, 5, 0, 1)),
        RunFacts("mystery", T0, "success", 10.0, 0, ModelUsage(1, 7, 3, 0, 1)),
        RunFacts("plain", T0, "success", 10.0, 0),
    ]

    ask, mystery, plain = figures_by_name(runs, SlaTargets(), series=True)

    assert ask.totals.usage == ModelUsage(3, 150, 15, 1_500, 1)
    assert ask.totals.usage.cost_usd == 0.0000015  # the known part; one call is unpriced
    assert [f.usage.cost_usd for _, f in ask.series] == [0.0000015, None]
    assert mystery.totals.usage.cost_usd is None  # calls, none priced: unknown, not 0
    assert plain.totals.usage == ModelUsage()
    assert plain.totals.usage.cost_usd == 0.0


def test_a_cost_that_is_not_a_number_is_refused_so_that_its_event_is_parked() -> None:
    for absurd in (float("nan"), float("inf"), 1e12):
        with pytest.raises(ValueError, match="cannot be counted"):
            nano_usd(absurd)
    assert (nano_usd(0.00000001), usd(10)) == (10, 0.00000001)


# -- waiting for signals ---------------------------------------------------------------------


class Watched:
    """An execution whose events both status projections apply as it goes, the projected
    status checked against the aggregate's after each command."""

    def __init__(self, *step_ids: str) -> None:
        self.execution = Execution.start(
            user_id="u",
            process_name="approve",
            process_version=1,
            definition={},
            step_ids=list(step_ids),
            input={},
        )
        self.view = InMemoryExecutionStatusView()
        self.projections = StatusProjections(self.view)
        self.position = 0
        self.seen: list[str] = []
        self.events: list[object] = []
        self.do()

    def do(self, *commands: tuple[Any, ...]) -> None:
        """Run each `(method, *args)` on the execution, then project its events."""
        for name, *args in [("collect_events",), *commands]:
            if name != "collect_events":
                getattr(self.execution, name)(*args)
            for event in self.execution.collect_events():
                self.position += 1
                self.projections.process(event, self.position)
                self.events.append(event)
            status = self.view.rows[self.execution.id].status
            assert status == self.execution.status.value, (name, *args)
            if not self.seen or self.seen[-1] != status:
                self.seen.append(status)

    def step(self, step_id: str) -> tuple[str, str | None]:
        row = self.view.steps[(self.execution.id, step_id)]
        return row.status, row.awaiting


def run(step_id: str, attempt: int = 1) -> tuple[tuple[Any, ...], ...]:
    return ("schedule_step", step_id, attempt), ("start_step", step_id, attempt)


def test_a_sequential_execution_is_waiting_while_its_step_waits_for_a_signal(clock: Clock) -> None:
    watched = Watched("draft", "review", "apply")
    watched.do(*run("draft"), ("complete_step", "draft", 1, {}), *run("review"))
    watched.do(("await_signal", "review", 1, "approval", None))
    assert watched.step("review") == ("waiting", "approval")
    assert watched.view.rows[watched.execution.id].current_steps == ["review"]

    watched.do(("receive_signal", "approval", {"ok": True}, "u", ["user"]))
    assert watched.seen[-1] == "waiting"  # until the step takes it
    watched.do(("take_signal_for", "review", 1), *run("apply"), ("complete_step", "apply", 1, {}))
    watched.do(("complete", {}))

    assert watched.seen == ["pending", "running", "waiting", "running", "completed"]
    assert watched.step("review") == ("completed", None)


def test_a_parallel_execution_runs_while_another_branch_is_at_work_or_may_be_retried(
    clock: Clock,
) -> None:
    watched = Watched("review", "data")
    watched.do(*run("review"), *run("data"), ("await_signal", "review", 1, "approval", None))
    watched.do(("time_out_step", "data", 1, 5.0))
    watched.do(("retry_step", "data", 1, {"type": "StepTimedOut"}, 0.1, clock.now))
    watched.do(*run("data", 2))
    assert watched.seen == ["pending", "running"]
    assert watched.step("review") == ("waiting", "approval")

    watched.do(("complete_step", "data", 2, {}))
    assert watched.seen == ["pending", "running", "waiting"]


def test_a_wait_that_reaches_its_deadline_is_a_timed_out_step_of_a_running_execution(
    clock: Clock,
) -> None:
    watched = Watched("review")
    watched.do(*run("review"), ("await_signal", "review", 1, "approval", clock.now))
    watched.do(("time_out_step", "review", 1, 60.0))

    assert watched.seen == ["pending", "running", "waiting", "running"]
    assert watched.step("review") == ("timed_out", None)


# -- resumed and forked executions -----------------------------------------------------------


def failed_then_resumed(clock: Clock) -> Watched:
    """a completes; b's agent fails, so b fails, c is skipped and the execution fails; an
    hour later it is resumed, and b (attempt 2) and c complete."""
    watched = Watched("a", "b", "c")
    watched.do(*run("a"), ("start_agent", "a", 1, "echo", {}))
    watched.do(("complete_agent", "a", 1, {}, 5.0, None), ("complete_step", "a", 1, {}))
    watched.do(*run("b"), ("start_agent", "b", 1, "flaky", {}))
    watched.do(("fail_agent", "b", 1, {"type": "Down"}, 5.0), ("fail_step", "b", 1, {}))
    clock.now += timedelta(seconds=2)
    watched.do(("skip_step", "c", "dependency_failed"), ("fail", {"type": "StepFailed"}))
    clock.now += timedelta(hours=1)
    watched.do(("resume", "ops", "the agent is back"))
    return watched


def test_a_resumed_execution_is_pending_again_and_follows_the_aggregate_to_its_completion(
    clock: Clock,
) -> None:
    watched = failed_then_resumed(clock)
    row = watched.view.rows[watched.execution.id]
    assert (row.status, row.error, row.finished_at, row.duration_ms) == (
        "pending",
        None,
        None,
        None,
    )
    assert (row.resumes, row.resumed_at, row.attempts) == (1, clock.now, 2)
    steps = {s: watched.view.steps[(watched.execution.id, s)] for s in "abc"}
    assert [(r.status, r.attempt, r.error, r.skip_reason) for r in steps.values()] == [
        ("completed", 1, None, None),
        ("pending", 1, None, None),  # its attempt number kept: the next one is 2
        ("pending", 0, None, None),
    ]

    watched.do(*run("b", 2), ("complete_step", "b", 2, {}), *run("c"))
    clock.now += timedelta(seconds=1)
    watched.do(("complete_step", "c", 1, {}), ("complete", {"done": True}))

    assert watched.seen == ["pending", "running", "failed", "pending", "running", "completed"]
    assert row.output == {"done": True}
    assert row.duration_ms == 3_603_000.0  # from its first start
    assert (steps["b"].status, steps["b"].attempt, steps["b"].duration_ms) == ("completed", 2, 0)


def test_a_timed_out_executions_running_step_runs_again_after_a_resume(clock: Clock) -> None:
    watched = Watched("a")
    watched.do(*run("a"), ("await_signal", "a", 1, "approval", None), ("time_out", 60.0))
    watched.do(("resume", "ops", "again"))
    assert watched.step("a") == ("pending", None)

    watched.do(*run("a", 2), ("complete_step", "a", 2, {}), ("complete", {}))
    assert watched.seen[3:] == ["timed_out", "pending", "running", "completed"]


def test_a_fork_names_its_parent_and_shows_the_copied_steps_completed(clock: Clock) -> None:
    parent = failed_then_resumed(clock)
    child = Watched("a", "b", "c")
    child.do(("record_fork", parent.execution, "b", {"a": {"x": 1}}))
    row = child.view.rows[child.execution.id]
    assert (row.parent_id, row.forked_from_step, row.status) == (
        parent.execution.id,
        "b",
        "pending",
    )
    copied = child.view.steps[(child.execution.id, "a")]
    assert (copied.status, copied.copied, copied.last_event) == (
        "completed",
        True,
        "execution_forked",
    )
    assert not child.view.steps[(child.execution.id, "b")].copied

    child.do(*run("b"), ("complete_step", "b", 1, {}), *run("c"), ("complete_step", "c", 1, {}))
    child.do(("complete", {}))
    assert child.seen == ["pending", "running", "completed"]


def test_a_resumed_execution_is_one_process_run_by_how_it_ends_with_one_retry_more(
    clock: Clock,
) -> None:
    watched = failed_then_resumed(clock)
    view = InMemoryMetricsView()
    projection = MetricsProjection(view)

    def project() -> dict[tuple[str, str], Any]:
        for event in watched.events[len(projected) :]:
            projected.append(event)
            projection.process(event, len(projected))
        return {(r.kind, r.key): r for r in view.all_runs()}

    projected: list[object] = []
    process = project()[("process", "")]
    assert (process.outcome, process.finished_at, process.retries) == ("running", None, 1)

    watched.do(*run("b", 2), ("start_agent", "b", 2, "flaky", {}))
    watched.do(("complete_agent", "b", 2, {}, 5.0, None), ("complete_step", "b", 2, {}))
    watched.do(*run("c"), ("complete_step", "c", 1, {}), ("complete", {}))
    runs = project()

    assert {key: run.outcome for key, run in runs.items()} == {
        ("process", ""): "success",
        ("agent", "a/1"): "success",
        ("agent", "b/1"): "failure",
        ("agent", "b/2"): "success",
    }
    assert runs[("process", "")].retries == 1
    assert view.counts["execution_resumed"] == 1
