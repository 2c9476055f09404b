"""The Execution aggregate: commands, the events they record, and the rules they refuse to break."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.application import Application
from eventsourcing.persistence import RecordConflictError

from agent_ledger.domain.event_names import event_type
from agent_ledger.domain.execution_state import (
    MAX_PAYLOAD_BYTES,
    AttemptOrderError,
    CancellationAlreadyRequestedError,
    ExecutionFinishedError,
    ExecutionRuleError,
    ExecutionStatus,
    StaleAttemptError,
    StepStatus,
    StepTransitionError,
    ToolCallError,
    UnknownStepError,
    bounded,
)
from agent_ledger.domain.executions import Execution, StepEvent

LATER = datetime(2030, 1, 1, tzinfo=UTC)

Command = Callable[[Execution], None]

USER = "alice"
STEP = "triage"
OTHER_STEP = "data"
STEP_IDS = ["triage", "data", "summary"]
DEFINITION = {"name": "cost_optimization", "steps": [{"id": s} for s in STEP_IDS]}
ERROR = {"type": "AgentError", "message": "the model said no"}
BIG = {"rows": ["x" * 100] * 500}  # well over MAX_PAYLOAD_BYTES once encoded


# -- building an execution at a given point ----------------------------------------------------


def started_execution(
    user_id: str = USER, idempotency_key: str | None = None, thread_id: str | None = None
) -> Execution:
    return Execution.start(
        user_id=user_id,
        process_name="cost_optimization",
        process_version=3,
        definition=DEFINITION,
        step_ids=STEP_IDS,
        input={"question": "Where can we cut spend?"},
        thread_id=thread_id,
        request_id="req-1",
        idempotency_key=idempotency_key,
    )


def scheduled_execution() -> Execution:
    """The triage step is scheduled for attempt 1 and has not started."""
    execution = started_execution()
    execution.schedule_step(STEP, 1)
    return execution


def running_execution() -> Execution:
    """The triage step runs attempt 1; its agent has not started yet."""
    execution = scheduled_execution()
    execution.start_step(STEP, 1)
    return execution


def agent_execution() -> Execution:
    """The triage step runs attempt 1 and its agent is working."""
    execution = running_execution()
    execution.start_agent(STEP, 1, "triage", {"question": "q"})
    return execution


def tool_call_execution() -> Execution:
    """The triage agent has called a tool under `call-1` that has not answered yet."""
    execution = agent_execution()
    execution.start_tool(STEP, 1, "call-1", "lookup", {"month": "2025-01"})
    return execution


def timed_out_execution() -> Execution:
    """Attempt 1 of triage timed out while its tool call `call-1` was still open."""
    execution = tool_call_execution()
    execution.time_out_step(STEP, 1, 5.0)
    return execution


def retried_execution() -> Execution:
    """Attempt 1 of triage timed out and was retried; attempt 2 now runs with its agent."""
    execution = timed_out_execution()
    execution.retry_step(STEP, 1, {"type": "StepTimeout"}, 0.5, LATER)
    execution.schedule_step(STEP, 2)
    execution.start_step(STEP, 2)
    execution.start_agent(STEP, 2, "triage", {"question": "q"})
    return execution


def cancelled_step_execution() -> Execution:
    """The triage step was cancelled while attempt 1 had an open tool call."""
    execution = tool_call_execution()
    execution.cancel_step(STEP, "execution cancelled")
    return execution


def snapshot(execution: Execution) -> dict[str, Any]:
    """Everything a refused command must leave as it was."""
    return {
        "version": execution.version,
        "pending": len(execution.pending_events),
        "status": execution.status,
        "steps": copy.deepcopy(execution.steps),
        "output": copy.deepcopy(execution.output),
        "error": copy.deepcopy(execution.error),
        "cancellation": copy.deepcopy(execution.cancellation),
    }


def assert_refused(
    execution: Execution, command: Command, error: type[Exception] = ExecutionRuleError
) -> None:
    """The command raises `error` and records nothing."""
    before = snapshot(execution)
    version, pending = execution.version, len(execution.pending_events)
    with pytest.raises(error):
        command(execution)
    assert execution.version == version
    assert len(execution.pending_events) == pending
    assert snapshot(execution) == before


# -- starting ----------------------------------------------------------------------------------


def test_a_started_execution_is_pending_with_every_step_pending() -> None:
    execution = started_execution(thread_id="thread-7")

    assert execution.version == 1
    assert execution.status is ExecutionStatus.PENDING
    assert list(execution.steps) == STEP_IDS
    assert all(s.status is StepStatus.PENDING and s.attempt == 0 for s in execution.steps.values())
    [event] = execution.pending_events
    assert isinstance(event, Execution.ExecutionStarted)
    assert event.user_id == USER
    assert (event.process_name, event.process_version) == ("cost_optimization", 3)
    assert event.definition == DEFINITION
    assert event.input == {"question": "Where can we cut spend?"}
    assert (event.thread_id, event.request_id) == ("thread-7", "req-1")


def test_the_same_user_and_idempotency_key_give_the_same_execution_id() -> None:
    first = started_execution(idempotency_key="key-1")
    second = started_execution(idempotency_key="key-1")

    assert first.id == second.id


@pytest.mark.parametrize(
    ("user_id", "idempotency_key"),
    [("bob", "key-1"), (USER, "key-2")],
    ids=["another user", "another key"],
)
def test_another_user_or_another_key_gives_another_execution_id(
    user_id: str, idempotency_key: str
) -> None:
    reference = started_execution(idempotency_key="key-1")

    assert started_execution(user_id, idempotency_key).id != reference.id


def test_users_whose_names_contain_the_separator_never_share_an_execution_id() -> None:
    one = started_execution(user_id="alice", idempotency_key="x:k")
    other = started_execution(user_id="alice:x", idempotency_key="k")

    assert one.id != other.id


def test_without_an_idempotency_key_every_start_gets_a_random_id() -> None:
    ids = {started_execution().id for _ in range(5)}

    assert len(ids) == 5
    assert all(isinstance(i, UUID) and i.version == 4 for i in ids)


# -- the owner on every event ------------------------------------------------------------------


def full_path(user_id: str = USER) -> Execution:
    """Walk every kind of event once, with a retry, a gateway, a timer and a skipped step."""
    execution = started_execution(user_id)
    execution.schedule_step(STEP, 1)
    execution.start_step(STEP, 1)
    execution.start_agent(STEP, 1, "triage", {"question": "q"})
    execution.record_thinking(STEP, 1, "looking at the bill")
    execution.start_tool(STEP, 1, "call-1", "lookup", {"month": "2025-01"})
    execution.complete_tool(STEP, 1, "call-1", {"rows": 3}, 12.5)
    execution.start_tool(STEP, 1, "call-2", "lookup", {"month": "2025-02"})
    execution.fail_tool(STEP, 1, "call-2", {"type": "ToolError"}, 3.0)
    execution.fail_agent(STEP, 1, ERROR, 20.0)
    execution.retry_step(STEP, 1, ERROR, 0.5, LATER)
    execution.schedule_step(STEP, 2)
    execution.start_step(STEP, 2)
    execution.start_agent(STEP, 2, "triage", {"question": "q"})
    execution.complete_agent(STEP, 2, {"category": "cost"}, 8.0)
    execution.complete_step(STEP, 2, {"category": "cost"})
    execution.schedule_step(OTHER_STEP, 1)
    execution.start_step(OTHER_STEP, 1)
    execution.evaluate_gateway(OTHER_STEP, 1, 0, ["summary"], "condition true")
    execution.start_timer(OTHER_STEP, 1, 2.0, LATER)
    execution.fire_timer(OTHER_STEP, 1)
    execution.time_out_step(OTHER_STEP, 1, 5.0)
    execution.fail_step(OTHER_STEP, 1, {"type": "StepTimeout"})
    execution.skip_step("summary", "branch_not_taken")
    execution.request_cancellation(by=user_id, reason="enough")
    execution.complete({"answer": 42})
    return execution


FULL_PATH_TYPES = [
    "execution_started",
    "step_scheduled",
    "step_started",
    "agent_started",
    "agent_thinking",
    "tool_executing",
    "tool_completed",
    "tool_executing",
    "tool_failed",
    "agent_failed",
    "step_retrying",
    "step_scheduled",
    "step_started",
    "agent_started",
    "agent_completed",
    "step_completed",
    "step_scheduled",
    "step_started",
    "gateway_evaluated",
    "timer_started",
    "timer_fired",
    "step_timed_out",
    "step_failed",
    "step_skipped",
    "execution_cancellation_requested",
    "execution_completed",
]


@pytest.mark.parametrize("user_id", ["alice", "bob@example.com"])
def test_every_event_of_an_execution_carries_its_owner(user_id: str) -> None:
    execution = full_path(user_id)
    events = execution.pending_events

    assert [event_type(e) for e in events] == FULL_PATH_TYPES
    assert [getattr(e, "user_id", None) for e in events] == [user_id] * len(events)
    assert [e.originator_version for e in events] == list(range(1, len(events) + 1))
    assert {e.originator_id for e in events} == {execution.id}


def test_step_events_carry_the_step_and_attempt_they_are_about() -> None:
    events = [e for e in full_path().pending_events if isinstance(e, StepEvent)]

    assert [(e.step_id, e.attempt) for e in events] == [
        *[(STEP, 1)] * 10,  # scheduled .. retrying
        *[(STEP, 2)] * 5,  # scheduled .. completed
        *[(OTHER_STEP, 1)] * 7,  # scheduled .. failed
        ("summary", 0),  # skipped before it was ever scheduled
    ]


def test_the_owner_is_still_on_every_event_once_stored_and_read_back() -> None:
    app = Application()
    execution = full_path("carol")
    app.save(execution)

    stored = list(app.repository.event_store.get(execution.id))

    assert len(stored) == len(FULL_PATH_TYPES)
    assert {getattr(e, "user_id", None) for e in stored} == {"carol"}


@pytest.mark.parametrize(
    ("event_class", "name"),
    [
        (Execution.ExecutionStarted, "execution_started"),
        (Execution.AgentStarted, "agent_started"),
        (Execution.ToolExecuting, "tool_executing"),
        (Execution.StepTimedOut, "step_timed_out"),
        (Execution.GatewayEvaluated, "gateway_evaluated"),
        (Execution.ExecutionCancellationRequested, "execution_cancellation_requested"),
        (Execution.ExecutionCompleted, "execution_completed"),
    ],
)
def test_an_event_type_is_the_snake_case_of_its_class_name(event_class: type, name: str) -> None:
    event = next(e for e in full_path().pending_events if type(e) is event_class)

    assert event_type(event) == name


# -- nothing after the end ---------------------------------------------------------------------

TERMINAL_COMMANDS: dict[str, tuple[Command, ExecutionStatus]] = {
    "completed": (lambda e: e.complete({"answer": 42}), ExecutionStatus.COMPLETED),
    "failed": (lambda e: e.fail(ERROR), ExecutionStatus.FAILED),
    "cancelled": (lambda e: e.cancel("alice", "changed my mind"), ExecutionStatus.CANCELLED),
    "timed out": (lambda e: e.time_out(300.0), ExecutionStatus.TIMED_OUT),
}

FOLLOW_UPS: dict[str, Command] = {
    "complete": lambda e: e.complete({"again": True}),
    "fail": lambda e: e.fail(ERROR),
    "cancel": lambda e: e.cancel("alice", "again"),
    "time out": lambda e: e.time_out(1.0),
    "request cancellation": lambda e: e.request_cancellation(by="alice", reason="stop"),
    "schedule a step": lambda e: e.schedule_step(OTHER_STEP, 1),
    "complete the running step": lambda e: e.complete_step(STEP, 1, {"late": True}),
    "fail the running step": lambda e: e.fail_step(STEP, 1, ERROR),
    "retry the running step": lambda e: e.retry_step(STEP, 1, ERROR, 1.0, LATER),
    "skip a step": lambda e: e.skip_step(OTHER_STEP, "error"),
    "cancel the running step": lambda e: e.cancel_step(STEP, "stop"),
    "think": lambda e: e.record_thinking(STEP, 1, "still here"),
    "call a tool": lambda e: e.start_tool(STEP, 1, "call-2", "lookup", {}),
    "complete the open tool call": lambda e: e.complete_tool(STEP, 1, "call-1", {}, 1.0),
    "complete the agent": lambda e: e.complete_agent(STEP, 1, {"late": True}, 1.0),
}


@pytest.mark.parametrize("terminal", TERMINAL_COMMANDS.values(), ids=TERMINAL_COMMANDS.keys())
def test_each_terminal_command_finishes_the_execution(
    terminal: tuple[Command, ExecutionStatus],
) -> None:
    command, status = terminal
    execution = tool_call_execution()

    command(execution)

    assert execution.status is status
    assert execution.status.is_terminal


@pytest.mark.parametrize("follow_up", FOLLOW_UPS.values(), ids=FOLLOW_UPS.keys())
@pytest.mark.parametrize("terminal", TERMINAL_COMMANDS.values(), ids=TERMINAL_COMMANDS.keys())
def test_nothing_is_recorded_after_an_execution_has_finished(
    terminal: tuple[Command, ExecutionStatus], follow_up: Command
) -> None:
    execution = tool_call_execution()
    terminal[0](execution)

    # Each follow-up would be allowed before the end (see the test below).
    assert_refused(execution, follow_up, ExecutionFinishedError)


@pytest.mark.parametrize("follow_up", FOLLOW_UPS.values(), ids=FOLLOW_UPS.keys())
def test_each_follow_up_is_allowed_while_the_execution_runs(follow_up: Command) -> None:
    execution = tool_call_execution()
    version = execution.version

    follow_up(execution)

    assert execution.version == version + 1


def test_a_finished_execution_still_refuses_events_after_being_stored_and_reloaded() -> None:
    app = Application()
    execution = tool_call_execution()
    execution.complete({"answer": 42})
    app.save(execution)

    reloaded: Execution = app.repository.get(execution.id)

    assert reloaded.status is ExecutionStatus.COMPLETED
    assert reloaded.output == {"answer": 42}
    assert_refused(reloaded, lambda e: e.complete_step(STEP, 1, {}), ExecutionFinishedError)


def test_a_failed_execution_keeps_its_error() -> None:
    execution = running_execution()

    execution.fail(ERROR)

    assert execution.error == ERROR
    assert execution.output is None


# -- the step lifecycle ------------------------------------------------------------------------


def test_a_step_moves_from_scheduled_to_running_to_completed_with_its_output() -> None:
    execution = started_execution()

    execution.schedule_step(STEP, 1)
    assert execution.status is ExecutionStatus.RUNNING
    assert (execution.steps[STEP].status, execution.steps[STEP].attempt) == (
        StepStatus.SCHEDULED,
        1,
    )
    execution.start_step(STEP, 1)
    assert execution.steps[STEP].status is StepStatus.RUNNING
    execution.complete_step(STEP, 1, {"category": "cost"})

    assert execution.steps[STEP].status is StepStatus.COMPLETED
    assert execution.steps[STEP].output == {"category": "cost"}
    assert execution.steps[OTHER_STEP].status is StepStatus.PENDING


STEP_COMMANDS_ON: dict[str, Callable[[str], Command]] = {
    "schedule_step": lambda s: lambda e: e.schedule_step(s, 1),
    "start_step": lambda s: lambda e: e.start_step(s, 1),
    "complete_step": lambda s: lambda e: e.complete_step(s, 1, {}),
    "fail_step": lambda s: lambda e: e.fail_step(s, 1, ERROR),
    "retry_step": lambda s: lambda e: e.retry_step(s, 1, ERROR, 1.0, LATER),
    "time_out_step": lambda s: lambda e: e.time_out_step(s, 1, 5.0),
    "skip_step": lambda s: lambda e: e.skip_step(s, "error"),
    "cancel_step": lambda s: lambda e: e.cancel_step(s, "stop"),
    "start_agent": lambda s: lambda e: e.start_agent(s, 1, "triage", {}),
    "record_thinking": lambda s: lambda e: e.record_thinking(s, 1, "hm"),
    "start_tool": lambda s: lambda e: e.start_tool(s, 1, "call-9", "lookup", {}),
    "complete_tool": lambda s: lambda e: e.complete_tool(s, 1, "call-1", {}, 1.0),
    "fail_tool": lambda s: lambda e: e.fail_tool(s, 1, "call-1", ERROR, 1.0),
    "complete_agent": lambda s: lambda e: e.complete_agent(s, 1, {}, 1.0),
    "fail_agent": lambda s: lambda e: e.fail_agent(s, 1, ERROR, 1.0),
    "evaluate_gateway": lambda s: lambda e: e.evaluate_gateway(s, 1, 0, [], "why"),
    "start_timer": lambda s: lambda e: e.start_timer(s, 1, 1.0, LATER),
    "fire_timer": lambda s: lambda e: e.fire_timer(s, 1),
}


@pytest.mark.parametrize("command_on", STEP_COMMANDS_ON.values(), ids=STEP_COMMANDS_ON.keys())
def test_a_step_the_process_does_not_have_is_refused(command_on: Callable[[str], Command]) -> None:
    assert_refused(tool_call_execution(), command_on("ghost"), UnknownStepError)


@pytest.mark.parametrize(
    "command",
    [
        lambda e: e.start_step(OTHER_STEP, 1),
        lambda e: e.start_step(OTHER_STEP, 0),
        lambda e: e.complete_step(OTHER_STEP, 1, {}),
        lambda e: e.time_out_step(OTHER_STEP, 1, 5.0),
        lambda e: e.retry_step(OTHER_STEP, 0, ERROR, 1.0, LATER),
    ],
    ids=["start attempt 1", "start attempt 0", "complete", "time out", "retry"],
)
def test_a_step_that_was_never_scheduled_cannot_start_or_finish(command: Command) -> None:
    assert_refused(running_execution(), command)


@pytest.mark.parametrize(
    "command",
    [
        lambda e: e.complete_step(STEP, 1, {}),
        lambda e: e.time_out_step(STEP, 1, 5.0),
        lambda e: e.fail_step(STEP, 1, ERROR),
        lambda e: e.start_agent(STEP, 1, "triage", {}),
        lambda e: e.evaluate_gateway(STEP, 1, 0, [], "why"),
        lambda e: e.start_timer(STEP, 1, 1.0, LATER),
    ],
    ids=["complete", "time out", "fail", "start agent", "evaluate gateway", "start timer"],
)
def test_a_scheduled_step_does_nothing_before_it_starts(command: Command) -> None:
    assert_refused(scheduled_execution(), command, StepTransitionError)


def test_a_step_cannot_start_twice() -> None:
    assert_refused(running_execution(), lambda e: e.start_step(STEP, 1), StepTransitionError)


@pytest.mark.parametrize(
    "build",
    [scheduled_execution, running_execution, timed_out_execution],
    ids=["scheduled", "running", "timed out"],
)
def test_a_step_that_is_under_way_cannot_be_scheduled_again(
    build: Callable[[], Execution],
) -> None:
    assert_refused(build(), lambda e: e.schedule_step(STEP, 2), StepTransitionError)


@pytest.mark.parametrize(
    "finish",
    [
        lambda e: e.complete_step(STEP, 1, {}),
        lambda e: e.fail_step(STEP, 1, ERROR),
        lambda e: e.skip_step(STEP, "error"),
        lambda e: e.cancel_step(STEP, "stop"),
    ],
    ids=["completed", "failed", "skipped", "cancelled"],
)
def test_a_finished_step_is_never_scheduled_skipped_or_cancelled_again(finish: Command) -> None:
    execution = running_execution()
    finish(execution)

    assert_refused(execution, lambda e: e.schedule_step(STEP, 2), StepTransitionError)
    assert_refused(execution, lambda e: e.skip_step(STEP, "error"), StepTransitionError)
    assert_refused(execution, lambda e: e.cancel_step(STEP, "stop"), StepTransitionError)


def test_a_pending_step_can_be_skipped_at_attempt_zero() -> None:
    execution = running_execution()

    execution.skip_step("summary", "branch_not_taken")

    event = execution.pending_events[-1]
    assert isinstance(event, Execution.StepSkipped)
    assert (event.step_id, event.attempt, event.reason) == ("summary", 0, "branch_not_taken")
    assert execution.steps["summary"].status is StepStatus.SKIPPED
    assert execution.steps["summary"].skip_reason == "branch_not_taken"


# -- attempts only grow ------------------------------------------------------------------------


def test_a_retry_records_the_failed_attempt_its_error_and_the_delay() -> None:
    execution = agent_execution()

    execution.retry_step(STEP, 1, ERROR, 2.5, LATER)

    event = execution.pending_events[-1]
    assert isinstance(event, Execution.StepRetrying)
    assert (event.attempt, event.error, event.delay_seconds) == (1, ERROR, 2.5)
    assert (execution.steps[STEP].status, execution.steps[STEP].attempt) == (
        StepStatus.RETRYING,
        1,
    )


def test_the_next_attempt_starts_afresh_without_the_previous_agent_or_tool_calls() -> None:
    execution = retried_execution()

    step = execution.steps[STEP]
    assert (step.status, step.attempt) == (StepStatus.RUNNING, 2)
    assert step.open_tool_calls == {}


def retrying_execution() -> Execution:
    """Attempt 1 of triage failed and the step waits for attempt 2."""
    execution = agent_execution()
    execution.retry_step(STEP, 1, ERROR, 1.0, LATER)
    return execution


def twice_retried_execution() -> Execution:
    """Attempts 1 and 2 of triage failed; the step waits for attempt 3."""
    execution = retrying_execution()
    execution.schedule_step(STEP, 2)
    execution.start_step(STEP, 2)
    execution.retry_step(STEP, 2, ERROR, 2.0, LATER)
    return execution


@pytest.mark.parametrize(
    ("build", "attempt"),
    [
        (started_execution, 0),
        (started_execution, -1),
        (retrying_execution, 1),
        (retrying_execution, 0),
        (twice_retried_execution, 2),
        (twice_retried_execution, 1),
    ],
    ids=[
        "attempt 0 of a new step",
        "a negative attempt",
        "attempt 1 again after its retry",
        "attempt 0 after a retry",
        "attempt 2 again after its retry",
        "attempt 1 after two retries",
    ],
)
def test_an_attempt_that_is_not_later_than_the_last_one_is_refused(
    build: Callable[[], Execution], attempt: int
) -> None:
    assert_refused(build(), lambda e: e.schedule_step(STEP, attempt), AttemptOrderError)


@pytest.mark.parametrize("attempt", [2, 5])
def test_a_later_attempt_can_be_scheduled_after_a_retry(attempt: int) -> None:
    execution = retrying_execution()

    execution.schedule_step(STEP, attempt)

    assert execution.steps[STEP].attempt == attempt
    assert execution.steps[STEP].status is StepStatus.SCHEDULED


def test_a_step_that_is_not_running_cannot_be_retried() -> None:
    assert_refused(retrying_execution(), lambda e: e.retry_step(STEP, 1, ERROR, 1.0, LATER))
    assert_refused(started_execution(), lambda e: e.retry_step(STEP, 0, ERROR, 1.0, LATER))


# -- late results ------------------------------------------------------------------------------

LATE_RESULTS: dict[str, Command] = {
    "complete_step": lambda e: e.complete_step(STEP, 1, {"late": True}),
    "time_out_step": lambda e: e.time_out_step(STEP, 1, 5.0),
    "start_agent": lambda e: e.start_agent(STEP, 1, "triage", {}),
    "record_thinking": lambda e: e.record_thinking(STEP, 1, "late thought"),
    "start_tool": lambda e: e.start_tool(STEP, 1, "call-9", "lookup", {}),
    "complete_tool": lambda e: e.complete_tool(STEP, 1, "call-1", {"rows": 3}, 9.0),
    "fail_tool": lambda e: e.fail_tool(STEP, 1, "call-1", ERROR, 9.0),
    "complete_agent": lambda e: e.complete_agent(STEP, 1, {"late": True}, 9.0),
    "fail_agent": lambda e: e.fail_agent(STEP, 1, ERROR, 9.0),
    "evaluate_gateway": lambda e: e.evaluate_gateway(STEP, 1, 0, [], "late"),
    "start_timer": lambda e: e.start_timer(STEP, 1, 1.0, LATER),
    "fire_timer": lambda e: e.fire_timer(STEP, 1),
}

# Once attempt 2 exists, even the engine's own verdicts on attempt 1 are stale.
LATE_VERDICTS: dict[str, Command] = {
    "start_step": lambda e: e.start_step(STEP, 1),
    "fail_step": lambda e: e.fail_step(STEP, 1, ERROR),
    "retry_step": lambda e: e.retry_step(STEP, 1, ERROR, 1.0, LATER),
}


@pytest.mark.parametrize("late", LATE_RESULTS.values(), ids=LATE_RESULTS.keys())
def test_a_late_result_from_a_timed_out_attempt_is_rejected(late: Command) -> None:
    assert_refused(timed_out_execution(), late, StaleAttemptError)


@pytest.mark.parametrize(
    "late",
    [*LATE_RESULTS.values(), *LATE_VERDICTS.values()],
    ids=[*LATE_RESULTS.keys(), *LATE_VERDICTS.keys()],
)
def test_a_late_result_from_a_retried_attempt_is_rejected_while_the_next_one_runs(
    late: Command,
) -> None:
    assert_refused(retried_execution(), late, StaleAttemptError)


@pytest.mark.parametrize("late", LATE_RESULTS.values(), ids=LATE_RESULTS.keys())
def test_a_late_result_from_a_retried_attempt_is_rejected_before_the_next_one_is_scheduled(
    late: Command,
) -> None:
    execution = tool_call_execution()
    execution.retry_step(STEP, 1, ERROR, 1.0, LATER)

    assert_refused(execution, late, StaleAttemptError)


@pytest.mark.parametrize("late", LATE_RESULTS.values(), ids=LATE_RESULTS.keys())
def test_a_late_result_from_a_cancelled_attempt_is_rejected(late: Command) -> None:
    assert_refused(cancelled_step_execution(), late, StaleAttemptError)


def test_the_current_attempt_still_finishes_after_a_late_result_was_rejected() -> None:
    execution = retried_execution()
    with pytest.raises(StaleAttemptError):
        execution.complete_step(STEP, 1, {"late": True})

    execution.complete_agent(STEP, 2, {"fresh": True}, 3.0)
    execution.complete_step(STEP, 2, {"fresh": True})

    assert execution.steps[STEP].status is StepStatus.COMPLETED
    assert execution.steps[STEP].output == {"fresh": True}


@pytest.mark.parametrize(
    ("verdict", "status"),
    [
        (lambda e: e.fail_step(STEP, 1, {"type": "StepTimeout"}), StepStatus.FAILED),
        (lambda e: e.retry_step(STEP, 1, {"type": "StepTimeout"}, 1.0, LATER), StepStatus.RETRYING),
        (lambda e: e.skip_step(STEP, "error"), StepStatus.SKIPPED),
        (lambda e: e.cancel_step(STEP, "stop"), StepStatus.CANCELLED),
    ],
    ids=["fail", "retry", "skip", "cancel"],
)
def test_the_engine_still_decides_what_follows_a_timed_out_attempt(
    verdict: Command, status: StepStatus
) -> None:
    execution = timed_out_execution()

    verdict(execution)

    assert execution.steps[STEP].status is status


# -- tool calls --------------------------------------------------------------------------------


def test_a_tool_call_pairs_up_under_its_call_id_and_keeps_the_tool_name() -> None:
    execution = tool_call_execution()
    assert execution.steps[STEP].open_tool_calls == {"call-1": "lookup"}

    execution.complete_tool(STEP, 1, "call-1", {"rows": 3}, 12.5)

    event = execution.pending_events[-1]
    assert isinstance(event, Execution.ToolCompleted)
    assert (event.call_id, event.tool, event.result, event.duration_ms) == (
        "call-1",
        "lookup",
        {"rows": 3},
        12.5,
    )
    assert execution.steps[STEP].open_tool_calls == {}
    assert execution.steps[STEP].finished_tool_calls == ["call-1"]


def test_a_failed_tool_call_records_its_error_and_duration() -> None:
    execution = tool_call_execution()

    execution.fail_tool(STEP, 1, "call-1", {"type": "ToolError"}, 4.0)

    event = execution.pending_events[-1]
    assert isinstance(event, Execution.ToolFailed)
    assert (event.tool, event.error, event.duration_ms) == ("lookup", {"type": "ToolError"}, 4.0)


@pytest.mark.parametrize(
    "finish",
    [
        lambda e: e.complete_tool(STEP, 1, "call-never", {"rows": 3}, 1.0),
        lambda e: e.fail_tool(STEP, 1, "call-never", ERROR, 1.0),
    ],
    ids=["complete", "fail"],
)
def test_a_tool_call_that_never_started_cannot_finish(finish: Command) -> None:
    assert_refused(tool_call_execution(), finish, ToolCallError)


@pytest.mark.parametrize(
    "finish",
    [
        lambda e: e.complete_tool(OTHER_STEP, 1, "call-1", {"rows": 3}, 1.0),
        lambda e: e.fail_tool(OTHER_STEP, 1, "call-1", ERROR, 1.0),
    ],
    ids=["complete", "fail"],
)
def test_a_tool_call_cannot_finish_under_another_step(finish: Command) -> None:
    execution = tool_call_execution()
    execution.schedule_step(OTHER_STEP, 1)
    execution.start_step(OTHER_STEP, 1)
    execution.start_agent(OTHER_STEP, 1, "data", {})

    assert_refused(execution, finish, ToolCallError)


@pytest.mark.parametrize(
    "finish",
    [
        lambda e: e.complete_tool(STEP, 2, "call-1", {"rows": 3}, 1.0),
        lambda e: e.fail_tool(STEP, 2, "call-1", ERROR, 1.0),
    ],
    ids=["complete", "fail"],
)
def test_a_tool_call_of_an_earlier_attempt_cannot_finish_under_the_next_attempt(
    finish: Command,
) -> None:
    assert_refused(retried_execution(), finish, ToolCallError)


@pytest.mark.parametrize(
    "finish",
    [
        lambda e: e.complete_tool(STEP, 1, "call-1", {}, 1.0),
        lambda e: e.fail_tool(STEP, 1, "call-1", ERROR, 1.0),
    ],
    ids=["complete again", "fail after completing"],
)
def test_a_tool_call_finishes_only_once(finish: Command) -> None:
    execution = tool_call_execution()
    execution.complete_tool(STEP, 1, "call-1", {"rows": 3}, 1.0)

    assert_refused(execution, finish, ToolCallError)


@pytest.mark.parametrize("finished", [False, True], ids=["while open", "after it finished"])
def test_a_call_id_cannot_be_started_twice(finished: bool) -> None:
    execution = tool_call_execution()
    if finished:
        execution.complete_tool(STEP, 1, "call-1", {"rows": 3}, 1.0)

    assert_refused(execution, lambda e: e.start_tool(STEP, 1, "call-1", "other", {}), ToolCallError)


def test_several_tool_calls_can_be_open_at_once_and_finish_in_any_order() -> None:
    execution = tool_call_execution()
    execution.start_tool(STEP, 1, "call-2", "forecast", {})

    execution.complete_tool(STEP, 1, "call-2", {"ok": True}, 2.0)
    execution.fail_tool(STEP, 1, "call-1", ERROR, 3.0)

    tools = [e.tool for e in execution.pending_events if isinstance(e, Execution.ToolFailed)]
    assert tools == ["lookup"]
    assert execution.steps[STEP].finished_tool_calls == ["call-2", "call-1"]


# -- the agent inside an attempt ---------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        lambda e: e.record_thinking(STEP, 1, "hm"),
        lambda e: e.start_tool(STEP, 1, "call-1", "lookup", {}),
        lambda e: e.complete_agent(STEP, 1, {}, 1.0),
        lambda e: e.fail_agent(STEP, 1, ERROR, 1.0),
    ],
    ids=["think", "call a tool", "complete", "fail"],
)
def test_agent_events_need_the_agent_started(command: Command) -> None:
    assert_refused(running_execution(), command, StepTransitionError)


def test_an_agent_starts_once_per_attempt() -> None:
    assert_refused(
        agent_execution(), lambda e: e.start_agent(STEP, 1, "triage", {}), StepTransitionError
    )


def test_the_agent_of_the_next_attempt_may_start_again() -> None:
    execution = retrying_execution()
    execution.schedule_step(STEP, 2)
    execution.start_step(STEP, 2)

    execution.start_agent(STEP, 2, "triage", {"question": "q"})

    assert execution.steps[STEP].agent_started


def test_thinking_is_recorded_with_its_message() -> None:
    execution = agent_execution()

    execution.record_thinking(STEP, 1, "comparing models")

    event = execution.pending_events[-1]
    assert isinstance(event, Execution.AgentThinking)
    assert (event.step_id, event.attempt, event.message) == (STEP, 1, "comparing models")


def completed_step_execution() -> Execution:
    execution = agent_execution()
    execution.complete_agent(STEP, 1, {}, 1.0)
    execution.complete_step(STEP, 1, {})
    return execution


@pytest.mark.parametrize(
    ("build", "step_id"),
    [
        (started_execution, STEP),
        (scheduled_execution, STEP),
        (completed_step_execution, STEP),
        (timed_out_execution, STEP),
        (agent_execution, OTHER_STEP),
    ],
    ids=["pending", "scheduled", "completed", "timed out", "another step"],
)
def test_thinking_needs_a_running_attempt(build: Callable[[], Execution], step_id: str) -> None:
    assert_refused(build(), lambda e: e.record_thinking(step_id, 1, "hm"))


@pytest.mark.parametrize(
    ("finish", "then"),
    [
        (
            lambda e: e.complete_agent(STEP, 1, {"a": 1}, 1.0),
            lambda e: e.complete_agent(STEP, 1, {"b": 2}, 1.0),
        ),
        (
            lambda e: e.fail_agent(STEP, 1, ERROR, 1.0),
            lambda e: e.complete_agent(STEP, 1, {"b": 2}, 1.0),
        ),
        (
            lambda e: e.complete_agent(STEP, 1, {"a": 1}, 1.0),
            lambda e: e.record_thinking(STEP, 1, "after the fact"),
        ),
    ],
    ids=["completed then completed", "failed then completed", "completed then thinking"],
)
def test_an_agent_that_has_finished_reports_nothing_more(finish: Command, then: Command) -> None:
    execution = agent_execution()
    finish(execution)

    assert_refused(execution, then, StepTransitionError)


# -- gateways and timers -----------------------------------------------------------------------


def test_a_gateway_records_the_route_taken_and_why() -> None:
    execution = running_execution()

    execution.evaluate_gateway(STEP, 1, 1, ["summary"], "default route")

    event = execution.pending_events[-1]
    assert isinstance(event, Execution.GatewayEvaluated)
    assert (event.route, event.next, event.reason) == (1, ["summary"], "default route")


def test_a_timer_records_when_it_fires() -> None:
    execution = running_execution()

    execution.start_timer(STEP, 1, 2.0, LATER)
    execution.fire_timer(STEP, 1)

    started, fired = execution.pending_events[-2:]
    assert isinstance(started, Execution.TimerStarted)
    assert (started.seconds, started.fire_at) == (2.0, LATER)
    assert isinstance(fired, Execution.TimerFired)


# -- cancellation ------------------------------------------------------------------------------


def test_a_cancellation_request_records_who_asked_and_why() -> None:
    execution = running_execution()

    execution.request_cancellation(by="alice", reason="too slow")

    assert execution.cancellation_requested
    assert execution.cancellation == {"by": "alice", "reason": "too slow"}
    assert execution.status is ExecutionStatus.RUNNING  # the engine stops it afterwards


def test_cancellation_can_be_requested_only_once() -> None:
    execution = running_execution()
    execution.request_cancellation(by="alice", reason="too slow")

    assert_refused(
        execution,
        lambda e: e.request_cancellation(by="bob", reason="me too"),
        CancellationAlreadyRequestedError,
    )
    assert execution.cancellation == {"by": "alice", "reason": "too slow"}


def test_cancellation_of_a_finished_execution_says_it_is_finished() -> None:
    execution = running_execution()
    execution.request_cancellation(by="alice", reason="too slow")
    execution.cancel("alice", "too slow")

    assert_refused(
        execution,
        lambda e: e.request_cancellation(by="alice", reason="again"),
        ExecutionFinishedError,
    )


def test_a_requested_cancellation_lets_the_engine_stop_running_steps_then_the_execution() -> None:
    execution = tool_call_execution()
    execution.request_cancellation(by="alice", reason="too slow")

    execution.cancel_step(STEP, "execution cancelled")
    execution.cancel("alice", "too slow")

    assert execution.steps[STEP].status is StepStatus.CANCELLED
    assert execution.status is ExecutionStatus.CANCELLED
    assert event_type(execution.pending_events[-1]) == "execution_cancelled"


def test_a_pending_step_cannot_be_cancelled() -> None:
    assert_refused(
        running_execution(), lambda e: e.cancel_step(OTHER_STEP, "stop"), StepTransitionError
    )


@pytest.mark.parametrize(
    "build",
    [scheduled_execution, running_execution, retrying_execution, timed_out_execution],
    ids=["scheduled", "running", "retrying", "timed out"],
)
def test_a_step_under_way_can_be_cancelled_and_is_not_scheduled_again(
    build: Callable[[], Execution],
) -> None:
    execution = build()
    attempt = execution.steps[STEP].attempt

    execution.cancel_step(STEP, "stop")

    event = execution.pending_events[-1]
    assert isinstance(event, Execution.StepCancelled)
    assert (event.attempt, event.reason) == (attempt, "stop")
    assert_refused(execution, lambda e: e.schedule_step(STEP, attempt + 1), StepTransitionError)


# -- storage: optimistic concurrency and point-in-time state -----------------------------------


def test_concurrent_writers_conflict_instead_of_the_last_one_winning() -> None:
    app = Application()
    execution = running_execution()
    app.save(execution)
    engine: Execution = app.repository.get(execution.id)
    api: Execution = app.repository.get(execution.id)

    engine.complete_step(STEP, 1, {"category": "cost"})
    api.request_cancellation(by="alice", reason="too slow")
    app.save(engine)

    with pytest.raises(RecordConflictError):
        app.save(api)
    stored: Execution = app.repository.get(execution.id)
    assert stored.version == engine.version
    assert stored.steps[STEP].status is StepStatus.COMPLETED
    assert not stored.cancellation_requested


def test_the_losing_writer_decides_again_on_the_newer_state() -> None:
    app = Application()
    execution = running_execution()
    app.save(execution)
    first: Execution = app.repository.get(execution.id)
    second: Execution = app.repository.get(execution.id)
    first.request_cancellation(by="alice", reason="too slow")
    second.request_cancellation(by="bob", reason="me too")
    app.save(first)
    with pytest.raises(RecordConflictError):
        app.save(second)

    again: Execution = app.repository.get(execution.id)

    assert_refused(
        again,
        lambda e: e.request_cancellation(by="bob", reason="me too"),
        CancellationAlreadyRequestedError,
    )
    assert again.cancellation == {"by": "alice", "reason": "too slow"}


def test_an_execution_can_be_read_as_it_was_at_any_version() -> None:
    app = Application()
    execution = started_execution()
    commands: list[Command] = [
        lambda e: e.schedule_step(STEP, 1),
        lambda e: e.start_step(STEP, 1),
        lambda e: e.start_agent(STEP, 1, "triage", {}),
        lambda e: e.complete_agent(STEP, 1, {"category": "cost"}, 5.0),
        lambda e: e.complete_step(STEP, 1, {"category": "cost"}),
        lambda e: e.complete({"answer": 42}),
    ]
    for command in commands:
        command(execution)
    app.save(execution)

    expected = {
        1: (ExecutionStatus.PENDING, StepStatus.PENDING, False, None),
        2: (ExecutionStatus.RUNNING, StepStatus.SCHEDULED, False, None),
        3: (ExecutionStatus.RUNNING, StepStatus.RUNNING, False, None),
        4: (ExecutionStatus.RUNNING, StepStatus.RUNNING, True, None),
        5: (ExecutionStatus.RUNNING, StepStatus.RUNNING, True, None),
        6: (ExecutionStatus.RUNNING, StepStatus.COMPLETED, True, None),
        7: (ExecutionStatus.COMPLETED, StepStatus.COMPLETED, True, {"answer": 42}),
    }
    for version, (status, step_status, agent_started, output) in expected.items():
        then: Execution = app.repository.get(execution.id, version=version)
        assert then.version == version
        assert (then.status, then.steps[STEP].status) == (status, step_status), version
        assert then.steps[STEP].agent_started is agent_started, version
        assert then.output == output, version


# -- bounded payloads --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [None, 42, "short text", [1, 2, 3], {"rows": [{"cost": 1.5}], "ok": True}],
    ids=["null", "number", "text", "list", "object"],
)
def test_a_small_value_is_recorded_as_it_is(value: Any) -> None:
    assert bounded(value) == value


def test_a_large_value_is_replaced_by_a_preview_that_says_how_big_it_was() -> None:
    text = json.dumps(BIG, separators=(",", ":"))

    kept = bounded(BIG)

    assert kept["_truncated"] is True
    assert kept["bytes"] == len(text.encode())
    assert kept["preview"] == text[: MAX_PAYLOAD_BYTES // 4]


def test_a_value_exactly_at_the_limit_is_kept_and_one_byte_more_is_not() -> None:
    at_limit = "a" * (MAX_PAYLOAD_BYTES - 2)  # the JSON quotes make up the rest
    over = at_limit + "a"

    assert bounded(at_limit) == at_limit
    assert bounded(over)["_truncated"] is True


def test_the_limit_can_be_chosen() -> None:
    assert bounded([1, 2, 3], limit=7) == [1, 2, 3]
    assert bounded([1, 2, 3], limit=6) == {"_truncated": True, "bytes": 7, "preview": "["}


def test_a_large_tool_result_is_recorded_as_a_preview_and_a_small_one_as_it_is() -> None:
    execution = tool_call_execution()
    execution.start_tool(STEP, 1, "call-2", "lookup", BIG)

    execution.complete_tool(STEP, 1, "call-1", BIG, 30.0)
    execution.complete_tool(STEP, 1, "call-2", {"rows": 3}, 2.0)

    executing = execution.pending_events[-3]
    assert isinstance(executing, Execution.ToolExecuting)
    assert executing.args["_truncated"] is True
    large, small = execution.pending_events[-2:]
    assert isinstance(large, Execution.ToolCompleted)
    assert isinstance(small, Execution.ToolCompleted)
    assert large.result["_truncated"] is True
    assert len(large.result["preview"]) == MAX_PAYLOAD_BYTES // 4
    assert small.result == {"rows": 3}
