"""The execution status projection, fed with real executions' events into an in-memory view."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from agent_ledger.domain.executions import Execution, ExecutionEvent
from agent_ledger.projections.execution_status import (
    ExecutionStatusProjection,
    ExecutionStatusRow,
    InMemoryExecutionStatusView,
)

LATER = datetime(2030, 1, 1, tzinfo=UTC)

Command = Callable[[Execution], None]

STEP = "triage"
OTHER_STEP = "data"
STEP_IDS = ["triage", "data", "summary"]
ERROR = {"type": "AgentError", "message": "the model said no"}
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """The time the aggregate stamps on its events; moves only when a test says so."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(Execution.ExecutionStarted, "create_timestamp", staticmethod(fake))
    monkeypatch.setattr(ExecutionEvent, "create_timestamp", staticmethod(fake))
    return fake


class Projected:
    """A projection over an in-memory view, fed as the projector would: event by event."""

    def __init__(self) -> None:
        self.view = InMemoryExecutionStatusView()
        self.projection = ExecutionStatusProjection(self.view)
        self.position = 0

    def feed(self, execution: Execution) -> None:
        """Project the execution's new events at the next positions of the log."""
        for event in execution.collect_events():
            self.position += 1
            self.projection.process(event, self.position)

    def row(self, execution: Execution) -> ExecutionStatusRow:
        row = self.view.get(execution.id)
        assert row is not None, "the execution has no row"
        return row


@pytest.fixture
def projected() -> Projected:
    return Projected()


def start(user_id: str = "alice", thread_id: str | None = None) -> Execution:
    return Execution.start(
        user_id=user_id,
        process_name="cost_optimization",
        process_version=3,
        definition={"steps": STEP_IDS},
        step_ids=STEP_IDS,
        input={"question": "Where can we cut spend?"},
        thread_id=thread_id,
    )


def run_step(execution: Execution, step_id: str = STEP, attempt: int = 1) -> None:
    execution.schedule_step(step_id, attempt)
    execution.start_step(step_id, attempt)


# -- the row's life ----------------------------------------------------------------------------


def test_a_started_execution_is_a_pending_row(projected: Projected, clock: FakeClock) -> None:
    execution = start(thread_id="thread-7")

    projected.feed(execution)

    assert projected.row(execution) == ExecutionStatusRow(
        execution_id=execution.id,
        user_id="alice",
        process_name="cost_optimization",
        process_version=3,
        thread_id="thread-7",
        started_at=T0,
        status="pending",
        current_steps=[],
        attempts=0,
        retries=0,
        cancellation_requested=False,
        finished_at=None,
        duration_ms=None,
        last_event="execution_started",
        last_position=1,
        version=1,
        output=None,
        error=None,
    )


def test_a_scheduled_step_makes_the_execution_running_before_any_attempt_starts(
    projected: Projected,
) -> None:
    execution = start()
    execution.schedule_step(STEP, 1)

    projected.feed(execution)

    row = projected.row(execution)
    assert row.status == "running"
    assert (row.current_steps, row.attempts) == ([], 0)


def test_a_running_step_is_listed_in_current_steps(projected: Projected) -> None:
    execution = start()
    run_step(execution)

    projected.feed(execution)

    row = projected.row(execution)
    assert (row.status, row.current_steps, row.attempts) == ("running", [STEP], 1)


def test_parallel_steps_are_listed_in_the_order_they_started_until_each_leaves(
    projected: Projected,
) -> None:
    execution = start()
    run_step(execution, STEP)
    run_step(execution, OTHER_STEP)
    projected.feed(execution)
    assert projected.row(execution).current_steps == [STEP, OTHER_STEP]

    execution.complete_step(STEP, 1, {"category": "cost"})
    projected.feed(execution)

    assert projected.row(execution).current_steps == [OTHER_STEP]
    assert projected.row(execution).status == "running"


@pytest.mark.parametrize(
    "leave",
    [
        lambda e: e.complete_step(STEP, 1, {}),
        lambda e: e.fail_step(STEP, 1, ERROR),
        lambda e: e.retry_step(STEP, 1, ERROR, 1.0, LATER),
        lambda e: e.skip_step(STEP, "error"),
        lambda e: e.cancel_step(STEP, "stop"),
        lambda e: e.time_out_step(STEP, 1, 5.0),
    ],
    ids=["completed", "failed", "retrying", "skipped", "cancelled", "timed out"],
)
def test_a_step_that_stops_running_leaves_current_steps(
    projected: Projected, leave: Command
) -> None:
    execution = start()
    run_step(execution, STEP)
    run_step(execution, OTHER_STEP)
    leave(execution)

    projected.feed(execution)

    assert projected.row(execution).current_steps == [OTHER_STEP]


def test_every_attempt_and_every_retry_is_counted(projected: Projected) -> None:
    execution = start()
    run_step(execution, STEP, 1)
    execution.start_agent(STEP, 1, "triage", {})
    execution.fail_agent(STEP, 1, ERROR, 3.0)
    execution.retry_step(STEP, 1, ERROR, 0.5, LATER)
    run_step(execution, STEP, 2)
    execution.time_out_step(STEP, 2, 5.0)
    execution.retry_step(STEP, 2, {"type": "StepTimeout"}, 1.0, LATER)
    projected.feed(execution)
    row = projected.row(execution)
    assert (row.attempts, row.retries, row.current_steps) == (2, 2, [])

    run_step(execution, STEP, 3)
    run_step(execution, OTHER_STEP, 1)
    projected.feed(execution)

    row = projected.row(execution)
    assert (row.attempts, row.retries, row.current_steps) == (4, 2, [STEP, OTHER_STEP])


def test_agent_thinking_and_tool_calls_change_only_the_bookkeeping(projected: Projected) -> None:
    execution = start()
    run_step(execution)
    projected.feed(execution)
    before = projected.row(execution)
    counts = (before.status, before.current_steps, before.attempts, before.retries)

    execution.start_agent(STEP, 1, "triage", {})
    execution.record_thinking(STEP, 1, "looking at the bill")
    execution.start_tool(STEP, 1, "call-1", "lookup", {})
    execution.complete_tool(STEP, 1, "call-1", {"rows": 3}, 2.0)
    projected.feed(execution)

    row = projected.row(execution)
    assert (row.status, row.current_steps, row.attempts, row.retries) == counts
    assert (row.last_event, row.version, row.last_position) == ("tool_completed", 7, 7)


# -- finishing ---------------------------------------------------------------------------------


def test_a_completed_execution_has_its_output_finish_time_and_duration(
    projected: Projected, clock: FakeClock
) -> None:
    execution = start()
    run_step(execution)
    clock.advance(2.5)
    execution.complete_step(STEP, 1, {"category": "cost"})
    clock.advance(0.25)
    execution.complete({"answer": 42})

    projected.feed(execution)

    row = projected.row(execution)
    assert row.status == "completed"
    assert row.output == {"answer": 42}
    assert row.error is None
    assert row.started_at == T0
    assert row.finished_at == T0 + timedelta(seconds=2.75)
    assert row.duration_ms == 2750.0
    assert row.current_steps == []
    assert row.last_event == "execution_completed"


def test_a_failed_execution_has_its_error_and_lists_no_running_step(
    projected: Projected, clock: FakeClock
) -> None:
    execution = start()
    run_step(execution)
    clock.advance(1.0)
    execution.fail(ERROR)

    projected.feed(execution)

    row = projected.row(execution)
    assert (row.status, row.error, row.output) == ("failed", ERROR, None)
    assert row.current_steps == []
    assert (row.finished_at, row.duration_ms) == (T0 + timedelta(seconds=1), 1000.0)


def test_a_cancellation_request_is_flagged_while_the_execution_still_runs(
    projected: Projected,
) -> None:
    execution = start()
    run_step(execution)
    projected.feed(execution)
    assert projected.row(execution).cancellation_requested is False

    execution.request_cancellation(by="alice", reason="too slow")
    projected.feed(execution)

    row = projected.row(execution)
    assert row.cancellation_requested is True
    assert (row.status, row.current_steps, row.finished_at) == ("running", [STEP], None)
    assert row.last_event == "execution_cancellation_requested"


def test_a_cancelled_execution_says_who_cancelled_it_and_why(
    projected: Projected, clock: FakeClock
) -> None:
    execution = start()
    run_step(execution)
    execution.request_cancellation(by="bob", reason="too slow")
    clock.advance(0.5)
    execution.cancel_step(STEP, "execution cancelled")
    execution.cancel("bob", "too slow")

    projected.feed(execution)

    row = projected.row(execution)
    assert row.status == "cancelled"
    assert row.error == {"type": "Cancelled", "message": "too slow", "by": "bob"}
    assert row.cancellation_requested is True
    assert (row.current_steps, row.duration_ms) == ([], 500.0)


def test_a_timed_out_execution_says_after_how_long(projected: Projected, clock: FakeClock) -> None:
    execution = start()
    run_step(execution)
    clock.advance(300)
    execution.time_out(300.0)

    projected.feed(execution)

    row = projected.row(execution)
    assert row.status == "timed_out"
    assert row.error == {"type": "ExecutionTimedOut", "timeout_seconds": 300.0}
    assert (row.current_steps, row.duration_ms) == ([], 300_000.0)


# -- tracking ----------------------------------------------------------------------------------


def test_each_event_moves_the_last_event_position_and_version(projected: Projected) -> None:
    execution = start()
    run_step(execution)
    execution.complete_step(STEP, 1, {})
    execution.complete({"answer": 42})
    seen = []

    for position, event in zip([10, 11, 25, 40, 41], execution.collect_events(), strict=True):
        projected.projection.process(event, position)
        row = projected.row(execution)
        seen.append((row.last_event, row.last_position, row.version))

    assert seen == [
        ("execution_started", 10, 1),
        ("step_scheduled", 11, 2),
        ("step_started", 25, 3),
        ("step_completed", 40, 4),
        ("execution_completed", 41, 5),
    ]


def test_an_event_of_an_execution_whose_start_was_never_projected_is_ignored(
    projected: Projected,
) -> None:
    execution = start()
    run_step(execution)
    execution.complete({"answer": 42})
    _started, *later = execution.collect_events()

    for position, event in enumerate(later, start=2):
        projected.projection.process(event, position)

    assert projected.view.get(execution.id) is None
    assert projected.view.rows == {}


def test_an_object_that_is_not_an_execution_event_is_ignored(projected: Projected) -> None:
    execution = start()
    projected.feed(execution)

    projected.projection.process(object(), 99)

    row = projected.row(execution)
    assert (row.last_event, row.last_position) == ("execution_started", 1)
    assert list(projected.view.rows) == [execution.id]


def test_an_event_changes_only_the_row_of_its_own_execution(projected: Projected) -> None:
    first, second = start(), start()
    projected.feed(first)
    projected.feed(second)

    run_step(first)
    first.complete({"answer": 1})
    projected.feed(first)

    row = projected.row(second)
    assert (row.status, row.last_event, row.last_position, row.version) == (
        "pending",
        "execution_started",
        2,
        1,
    )
    assert projected.row(first).status == "completed"


def test_two_users_executions_stay_separate_rows_with_their_owner(projected: Projected) -> None:
    alices, bobs = start("alice", thread_id="t-a"), start("bob", thread_id="t-b")
    projected.feed(alices)
    projected.feed(bobs)
    run_step(alices)
    projected.feed(alices)
    bobs.fail(ERROR)
    projected.feed(bobs)

    assert len(projected.view.rows) == 2
    alice_row, bob_row = projected.row(alices), projected.row(bobs)
    assert (alice_row.user_id, alice_row.thread_id, alice_row.status) == ("alice", "t-a", "running")
    assert (alice_row.current_steps, alice_row.error) == ([STEP], None)
    assert (bob_row.user_id, bob_row.thread_id, bob_row.status) == ("bob", "t-b", "failed")
    assert (bob_row.current_steps, bob_row.error) == ([], ERROR)


def test_a_row_is_keyed_by_its_execution_id_not_by_its_owner(projected: Projected) -> None:
    executions = [start("alice") for _ in range(3)]
    for execution in executions:
        projected.feed(execution)

    assert set(projected.view.rows) == {e.id for e in executions}
    assert projected.view.get(uuid4()) is None
