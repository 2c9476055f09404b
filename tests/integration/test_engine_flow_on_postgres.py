"""Process semantics on real PostgreSQL: lifecycle, sequences, parallel branches, failures,
retries, gateways, timers, the recorded events and the process output."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from datetime import UTC, timedelta
from typing import Any

import psycopg
import pytest

from agent_ledger.application.agents import AgentContext, AgentError
from agent_ledger.domain.execution_state import ExecutionStatus, StepStatus
from tests.support.engine_scenarios import (
    Calls,
    Engine,
    Gate,
    agent_step,
    always_failing,
    engine_settings,
    events_of,
    flaky_until_third_attempt,
    index_of,
    moment,
    of_step,
    process,
    reread_from_a_fresh_store,
    running_engine,
    step_started_ids,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.postgres

AGENT_STEP_EVENTS = [
    "step_scheduled",
    "step_started",
    "agent_started",
    "agent_completed",
    "step_completed",
]


@pytest.fixture(scope="module")
def engine(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    settings = engine_settings(postgres_url, tmp_path_factory.mktemp("flow"))
    with running_engine(settings) as running:
        running.agent("flaky", flaky_until_third_attempt)
        running.agent("failing", always_failing)
        yield running


@pytest.fixture
def gate(engine: Engine) -> Iterator[Gate]:
    """A gate agent registered under a name of its own for this test."""
    opened = Gate()
    engine.agent(opened.name, opened)
    yield opened
    opened.opened.set()


# -- lifecycle -----------------------------------------------------------------------------------


def test_a_one_step_execution_completes_with_its_agents_output(engine: Engine) -> None:
    execution_id, execution = engine.run(
        process("single", agent_step("only", input={"text": "{{ input.text }}"})),
        {"text": "hello"},
    )

    assert execution.status is ExecutionStatus.COMPLETED
    assert execution.output == {"only": {"text": "hello"}}
    assert execution.steps["only"].status is StepStatus.COMPLETED
    assert engine.types(execution_id) == [
        "execution_started",
        *AGENT_STEP_EVENTS,
        "execution_completed",
    ]


def test_a_finished_execution_reads_back_the_same_from_the_store_and_the_status_view(
    engine: Engine,
) -> None:
    execution_id, execution = engine.run(
        process("persisted", agent_step("a"), agent_step("b", depends_on=["a"])), {"k": 1}
    )
    last = engine.history(execution_id)[-1]["position"]

    again = reread_from_a_fresh_store(engine.settings, execution_id)
    assert engine.runtime.wait_for_projection(last, 10)
    row = engine.runtime.statuses.get(execution_id, "user-a")

    assert again.version == execution.version
    assert again.status is ExecutionStatus.COMPLETED
    assert again.output == execution.output == {"a": {"step": "a"}, "b": {"step": "b"}}
    assert again.input == {"k": 1}
    assert {s: st.status for s, st in again.steps.items()} == {
        "a": StepStatus.COMPLETED,
        "b": StepStatus.COMPLETED,
    }
    assert row is not None
    assert (row.status, row.output, row.last_position) == ("completed", execution.output, last)


def test_a_failing_agent_fails_its_step_and_the_execution_with_its_error(engine: Engine) -> None:
    execution_id, execution = engine.run(process("fails", agent_step("bad", "failing")))

    assert execution.status is ExecutionStatus.FAILED
    assert execution.error == {
        "type": "Overloaded",
        "message": "the model is overloaded",
        "attempt": 1,
        "step_id": "bad",
    }
    assert engine.types(execution_id) == [
        "execution_started",
        "step_scheduled",
        "step_started",
        "agent_started",
        "agent_failed",
        "step_failed",
        "execution_failed",
    ]


# -- sequential ----------------------------------------------------------------------------------


def test_without_parallel_execution_steps_run_one_after_another_in_topological_order(
    engine: Engine,
) -> None:
    document = process(
        "sequence",
        agent_step("third", depends_on=["second"]),
        agent_step("first"),
        agent_step("second", depends_on=["first"]),
        agent_step("aside"),  # independent, but the execution is sequential
        parallel=False,
    )

    execution_id, execution = engine.run(document)

    messages = engine.history(execution_id)
    assert execution.status is ExecutionStatus.COMPLETED
    assert step_started_ids(messages) == ["first", "second", "third", "aside"]
    for earlier, later in [("first", "second"), ("second", "third"), ("third", "aside")]:
        assert index_of(messages, "step_completed", earlier) < index_of(
            messages, "step_scheduled", later
        )


def test_a_steps_output_reaches_the_next_step_through_a_template(engine: Engine) -> None:
    calls = Calls(answer=lambda data: {"total": sum(data["numbers"]), "seen": data})
    engine.agent("summer", calls)
    document = process(
        "handover",
        agent_step("add", "summer", input={"numbers": "{{ input.numbers }}"}),
        agent_step(
            "double",
            "summer",
            depends_on=["add"],
            input={"numbers": ["{{ steps.add.output.total }}", "{{ steps.add.output.total }}"]},
        ),
        parallel=False,
    )

    execution_id, execution = engine.run(document, {"numbers": [1, 2, 3]})

    assert [data for _, data, _ in calls.of(execution_id)] == [
        {"numbers": [1, 2, 3]},
        {"numbers": [6, 6]},  # one expression keeps its JSON type
    ]
    assert execution.steps["double"].output["total"] == 12
    started = events_of(engine.history(execution_id), "agent_started", "double")
    assert started[0]["data"]["input"] == {"numbers": [6, 6]}


def test_the_first_step_sees_the_execution_input_through_a_template(engine: Engine) -> None:
    calls = Calls()
    engine.agent("recorder", calls)
    document = process(
        "input-first",
        agent_step(
            "greet",
            "recorder",
            input={"who": "{{ input.user.name }}", "line": "Hi {{ input.user.name }}!"},
        ),
    )

    execution_id, _ = engine.run(document, {"user": {"name": "Ada"}})

    assert calls.of(execution_id)[0][1] == {"who": "Ada", "line": "Hi Ada!"}


def test_a_failing_middle_step_stops_the_sequence_before_its_successor(engine: Engine) -> None:
    document = process(
        "broken-middle",
        agent_step("first"),
        agent_step("middle", "failing", depends_on=["first"]),
        agent_step("last", depends_on=["middle"]),
        parallel=False,
    )

    execution_id, execution = engine.run(document)

    messages = engine.history(execution_id)
    assert execution.status is ExecutionStatus.FAILED
    assert execution.error is not None
    assert execution.error["step_id"] == "middle"
    assert of_step(messages, "first") == AGENT_STEP_EVENTS
    assert of_step(messages, "last") == []
    assert execution.steps["last"].status is StepStatus.PENDING


# -- parallel ------------------------------------------------------------------------------------


def test_two_independent_steps_run_at_the_same_time_and_both_complete(
    engine: Engine, gate: Gate
) -> None:
    execution_id = engine.start(
        process("pair", agent_step("left", gate.name), agent_step("right", gate.name))
    )

    wait_until(lambda: gate.count_inside() == 2, what="both steps inside the agent at once")
    gate.opened.set()
    execution = engine.finish(execution_id)

    assert execution.status is ExecutionStatus.COMPLETED
    assert set(execution.output) == {"left", "right"}
    assert gate.most_at_once == 2


def test_a_diamond_forks_after_its_first_step_and_joins_both_branches(engine: Engine) -> None:
    calls = Calls(answer=lambda data: {"got": data})
    engine.agent("diamond-recorder", calls)
    document = process(
        "diamond",
        agent_step("fork", "diamond-recorder", input={"n": "{{ input.n }}"}),
        agent_step("left", "diamond-recorder", depends_on=["fork"], input={"side": "left"}),
        agent_step("right", "diamond-recorder", depends_on=["fork"], input={"side": "right"}),
        agent_step(
            "join",
            "diamond-recorder",
            depends_on=["left", "right"],
            input={
                "left": "{{ steps.left.output.got.side }}",
                "right": "{{ steps.right.output.got.side }}",
            },
        ),
    )

    execution_id, execution = engine.run(document, {"n": 7})

    messages = engine.history(execution_id)
    assert execution.status is ExecutionStatus.COMPLETED
    assert execution.steps["join"].output == {"got": {"left": "left", "right": "right"}}
    for branch in ("left", "right"):
        assert of_step(messages, branch) == AGENT_STEP_EVENTS
        assert index_of(messages, "step_completed", "fork") < index_of(
            messages, "step_scheduled", branch
        )
        assert index_of(messages, "step_completed", branch) < index_of(
            messages, "step_scheduled", "join"
        )
    # both branches are opened in one write, before either of them ends
    assert index_of(messages, "step_started", "right") < index_of(
        messages, "step_completed", "left"
    )


def test_a_join_does_not_start_while_one_of_its_branches_still_runs(
    engine: Engine, gate: Gate
) -> None:
    document = process(
        "late-branch",
        agent_step("quick"),
        agent_step("slow", gate.name),
        agent_step("join", depends_on=["quick", "slow"]),
    )
    execution_id = engine.start(document)
    engine.wait_for_event(execution_id, "step_completed", step_id="quick")
    wait_until(lambda: gate.count_inside() == 1, what="the slow branch to be running")

    held = engine.execution(execution_id)
    gate.opened.set()
    execution = engine.finish(execution_id)

    assert held.steps["join"].status is StepStatus.PENDING
    assert held.steps["slow"].status is StepStatus.RUNNING
    messages = engine.history(execution_id)
    assert execution.status is ExecutionStatus.COMPLETED
    assert index_of(messages, "step_completed", "slow") < index_of(
        messages, "step_scheduled", "join"
    )


def _fails_once_the_gate_is_busy(gate: Gate) -> Any:
    async def agent(context: AgentContext, data: Any) -> Any:
        deadline = time.monotonic() + 10
        while gate.count_inside() < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        raise AgentError("branch broke", error_type="Broken", retryable=False)

    return agent


def test_with_stop_on_failure_a_failed_branch_cancels_the_running_one_and_fails_the_execution(
    engine: Engine, gate: Gate
) -> None:
    engine.agent("breaks-when-gate-busy", _fails_once_the_gate_is_busy(gate))
    document = process(
        "stop-on-failure",
        agent_step("doomed", "breaks-when-gate-busy"),
        agent_step("held", gate.name),
        agent_step("after_held", depends_on=["held"]),
        stop_on_failure=True,
    )

    execution_id, execution = engine.run(document)

    messages = engine.history(execution_id)
    assert execution.status is ExecutionStatus.FAILED
    assert execution.error is not None
    assert (execution.error["type"], execution.error["step_id"]) == ("Broken", "doomed")
    assert of_step(messages, "held") == [
        "step_scheduled",
        "step_started",
        "agent_started",
        "step_cancelled",
    ]
    assert of_step(messages, "after_held") == []
    assert gate.count_inside() == 0  # the held agent call was stopped, not left running
    assert not gate.opened.is_set()
    assert [m["type"] for m in messages[-2:]] == ["step_cancelled", "execution_failed"]


def test_without_stop_on_failure_independent_branches_finish_before_the_execution_fails(
    engine: Engine, gate: Gate
) -> None:
    engine.agent("breaks-when-gate-busy", _fails_once_the_gate_is_busy(gate))
    document = process(
        "keep-going",
        agent_step("doomed", "breaks-when-gate-busy"),
        agent_step("after_doomed", depends_on=["doomed"]),
        agent_step("held", gate.name),
        agent_step("after_held", depends_on=["held"]),
        stop_on_failure=False,
    )
    execution_id = engine.start(document)
    engine.wait_for_event(execution_id, "step_failed", step_id="doomed")

    gate.opened.set()
    execution = engine.finish(execution_id)

    messages = engine.history(execution_id)
    assert execution.status is ExecutionStatus.FAILED
    assert execution.error is not None
    assert execution.error["step_id"] == "doomed"
    assert of_step(messages, "held") == AGENT_STEP_EVENTS
    assert of_step(messages, "after_held") == AGENT_STEP_EVENTS
    skipped = events_of(messages, "step_skipped", "after_doomed")
    assert [m["data"]["reason"] for m in skipped] == ["dependency_failed"]
    assert messages[-1]["type"] == "execution_failed"
    assert index_of(messages, "step_completed", "after_held") < len(messages) - 1


# -- failures and retries --------------------------------------------------------------------------


def _retry(max_attempts: int, initial: float = 0.05, **more: Any) -> dict[str, Any]:
    return {"max_attempts": max_attempts, "initial_interval": initial, **more}


FAILED_ATTEMPT = [
    "step_scheduled",
    "step_started",
    "agent_started",
    "agent_failed",
    "step_retrying",
]


def test_a_flaky_step_is_retried_and_succeeds_on_its_third_attempt(engine: Engine) -> None:
    document = process("flaky", agent_step("flaky", "flaky", retry=_retry(3)))

    execution_id, execution = engine.run(document)

    messages = engine.history(execution_id)
    assert execution.status is ExecutionStatus.COMPLETED
    assert execution.output == {"flaky": {"succeeded_on": 3, "input": {"step": "flaky"}}}
    assert of_step(messages, "flaky") == FAILED_ATTEMPT * 2 + AGENT_STEP_EVENTS
    retrying = events_of(messages, "step_retrying")
    assert [m["data"]["attempt"] for m in retrying] == [1, 2]
    assert [m["data"]["error"] for m in retrying] == [
        {"type": "AgentError", "message": f"transient failure on attempt {n}", "attempt": n}
        for n in (1, 2)
    ]
    assert [m["data"]["attempt"] for m in events_of(messages, "step_scheduled")] == [1, 2, 3]


def test_a_step_whose_attempts_are_exhausted_fails_the_execution_with_the_last_error(
    engine: Engine,
) -> None:
    document = process("exhausted", agent_step("bad", "failing", retry=_retry(3, 0.01)))

    execution_id, execution = engine.run(document)

    messages = engine.history(execution_id)
    assert execution.status is ExecutionStatus.FAILED
    assert of_step(messages, "bad") == [
        *FAILED_ATTEMPT,
        *FAILED_ATTEMPT,
        "step_scheduled",
        "step_started",
        "agent_started",
        "agent_failed",
        "step_failed",
    ]
    assert events_of(messages, "step_failed")[0]["data"]["attempt"] == 3
    assert execution.error == {
        "type": "Overloaded",
        "message": "the model is overloaded",
        "attempt": 3,
        "step_id": "bad",
    }


def test_an_error_listed_as_not_retryable_fails_the_step_at_once(engine: Engine) -> None:
    document = process(
        "not-retryable",
        agent_step("bad", "failing", retry=_retry(5, non_retryable_errors=["Overloaded"])),
    )

    execution_id, execution = engine.run(document)

    assert execution.status is ExecutionStatus.FAILED
    assert "step_retrying" not in engine.types(execution_id)
    assert execution.steps["bad"].attempt == 1


def test_on_error_skip_step_records_the_skip_and_the_execution_continues(engine: Engine) -> None:
    document = process(
        "skipping",
        agent_step("optional", "failing", on_error="skip_step", retry=_retry(2, 0.01)),
        agent_step("next", depends_on=["optional"]),
    )

    execution_id, execution = engine.run(document)

    messages = engine.history(execution_id)
    assert execution.status is ExecutionStatus.COMPLETED
    assert of_step(messages, "optional") == [
        *FAILED_ATTEMPT,
        "step_scheduled",
        "step_started",
        "agent_started",
        "agent_failed",
        "step_skipped",
    ]
    assert events_of(messages, "step_skipped", "optional")[0]["data"]["reason"] == "error"
    assert of_step(messages, "next") == AGENT_STEP_EVENTS
    assert execution.output == {"next": {"step": "next"}}
    assert execution.steps["optional"].status is StepStatus.SKIPPED


def test_the_retry_count_is_recorded_in_the_execution_and_the_status_view(engine: Engine) -> None:
    execution_id, execution = engine.run(
        process("counted", agent_step("flaky", "flaky", retry=_retry(3, 0.01)))
    )
    last = engine.history(execution_id)[-1]["position"]

    assert engine.runtime.wait_for_projection(last, 10)
    row = engine.runtime.statuses.get(execution_id, "user-a")
    stored = reread_from_a_fresh_store(engine.settings, execution_id)

    assert execution.steps["flaky"].attempt == stored.steps["flaky"].attempt == 3
    assert row is not None
    assert (row.attempts, row.retries, row.status) == (3, 2, "completed")


def test_retry_delays_grow_exponentially_up_to_the_maximum_interval(engine: Engine) -> None:
    policy = _retry(4, 0.05, backoff_coefficient=3.0, max_interval=0.3)
    document = process("backoff", agent_step("bad", "failing", retry=policy))

    execution_id, execution = engine.run(document)

    messages = engine.history(execution_id)
    retrying = events_of(messages, "step_retrying")
    delays = [m["data"]["delay_seconds"] for m in retrying]
    assert delays == pytest.approx([0.05, 0.15, 0.3])
    starts = [moment(m) for m in events_of(messages, "agent_started")]
    scheduled = [moment(m) for m in events_of(messages, "step_scheduled")]
    for n, (message, delay) in enumerate(zip(retrying, delays, strict=True)):
        retry_at = moment(message, "retry_at")
        assert retry_at.tzinfo is not None
        assert (retry_at - moment(message)).total_seconds() == pytest.approx(delay, abs=0.05)
        assert scheduled[n + 1] >= retry_at  # the next attempt waits for the delay
        assert timedelta(seconds=delay) <= starts[n + 1] - starts[n] < timedelta(seconds=delay + 1)
    assert execution.steps["bad"].attempt == 4


# -- gateways -------------------------------------------------------------------------------------


def _routing(name: str, routes: list[dict[str, Any]], *before: dict[str, Any]) -> dict[str, Any]:
    gateway: dict[str, Any] = {"id": "route", "type": "gateway", "routes": routes}
    if before:
        gateway["depends_on"] = [step["id"] for step in before]
    return process(
        name,
        *before,
        gateway,
        agent_step("high"),
        agent_step("mid"),
        agent_step("low"),
        agent_step("after_mid", depends_on=["mid"]),
        agent_step("join", depends_on=["high", "mid", "low"]),
    )


SCORE_ROUTES: list[dict[str, Any]] = [
    {"when": "input.score > 5", "next": ["high"]},
    {"when": "input.score > 2", "next": ["mid"]},
    {"default": True, "next": ["low"]},
]


def _taken(engine: Engine, execution_id: Any) -> tuple[dict[str, Any], dict[str, str]]:
    messages = engine.history(execution_id)
    (evaluated,) = events_of(messages, "gateway_evaluated")
    skipped = {
        m["data"]["step_id"]: m["data"]["reason"] for m in events_of(messages, "step_skipped")
    }
    return evaluated["data"], skipped


def test_an_exclusive_gateway_takes_the_first_matching_route_and_skips_the_rest(
    engine: Engine,
) -> None:
    execution_id, execution = engine.run(_routing("first-match", SCORE_ROUTES), {"score": 9})

    evaluated, skipped = _taken(engine, execution_id)
    assert execution.status is ExecutionStatus.COMPLETED
    assert (evaluated["route"], evaluated["next"]) == (0, ["high"])
    assert evaluated["reason"] == "condition true: input.score > 5"
    assert skipped == {
        "mid": "branch_not_taken",
        "low": "branch_not_taken",
        "after_mid": "branch_not_taken",
    }
    assert execution.steps["high"].status is execution.steps["join"].status is StepStatus.COMPLETED
    messages = engine.history(execution_id)
    assert index_of(messages, "gateway_evaluated") < index_of(messages, "step_scheduled", "high")


def test_a_gateway_with_no_true_condition_takes_its_default_route(engine: Engine) -> None:
    execution_id, execution = engine.run(_routing("default-route", SCORE_ROUTES), {"score": 1})

    evaluated, skipped = _taken(engine, execution_id)
    assert (evaluated["route"], evaluated["next"]) == (2, ["low"])
    assert evaluated["reason"] == "no condition matched: default route"
    assert set(skipped) == {"high", "mid", "after_mid"}
    assert execution.status is ExecutionStatus.COMPLETED
    assert set(execution.output) == {"route", "low", "join"}


@pytest.mark.parametrize(("category", "branch"), [("cost", "high"), ("quality", "low")])
def test_a_gateway_routes_on_the_output_of_an_earlier_step(
    engine: Engine, category: str, branch: str
) -> None:
    classify = agent_step("classify", input={"category": "{{ input.category }}"})
    routes: list[dict[str, Any]] = [
        {"when": "steps.classify.output.category == 'cost'", "next": ["high"]},
        {"default": True, "next": ["low"]},
    ]
    document = _routing("on-output", routes, classify)
    document["steps"] = [
        s for s in document["steps"] if s["id"] != "mid" and s["id"] != "after_mid"
    ]
    document["steps"][-1]["depends_on"] = ["high", "low"]

    execution_id, execution = engine.run(document, {"category": category})

    evaluated, skipped = _taken(engine, execution_id)
    assert evaluated["next"] == [branch]
    assert set(skipped) == {"high", "low"} - {branch}
    assert execution.steps[branch].status is StepStatus.COMPLETED
    assert execution.status is ExecutionStatus.COMPLETED


@pytest.mark.parametrize(
    ("given", "branch"),
    [
        ({"a": 2, "b": "x", "flag": True}, "high"),
        ({"a": 2, "b": "y", "flag": True}, "low"),
        ({"a": 0, "b": "x", "flag": True}, "low"),
        ({"a": 0, "b": "y", "flag": False}, "high"),
        ({"flag": True}, "low"),  # missing values make a comparison false, never an error
    ],
)
def test_a_gateway_condition_combines_and_or_and_not(
    engine: Engine, given: dict[str, Any], branch: str
) -> None:
    routes: list[dict[str, Any]] = [
        {"when": "(input.a > 1 and input.b == 'x') or not input.flag", "next": ["high"]},
        {"default": True, "next": ["low"]},
    ]
    document = _routing("boolean", routes)
    document["steps"] = [
        s for s in document["steps"] if s["id"] != "mid" and s["id"] != "after_mid"
    ]
    document["steps"][-1]["depends_on"] = ["high", "low"]

    execution_id, execution = engine.run(document, given)

    evaluated, _ = _taken(engine, execution_id)
    assert evaluated["next"] == [branch]
    assert execution.status is ExecutionStatus.COMPLETED


# -- timers ---------------------------------------------------------------------------------------


def test_a_timer_step_starts_fires_and_completes(engine: Engine) -> None:
    document = process("timer", {"id": "pause", "type": "timer", "seconds": 0.2})

    execution_id, execution = engine.run(document)

    messages = engine.history(execution_id)
    assert execution.status is ExecutionStatus.COMPLETED
    assert of_step(messages, "pause") == [
        "step_scheduled",
        "step_started",
        "timer_started",
        "timer_fired",
        "step_completed",
    ]
    (started,) = events_of(messages, "timer_started")
    (fired,) = events_of(messages, "timer_fired")
    assert started["data"]["seconds"] == 0.2
    fire_at = moment(started, "fire_at")
    assert (fire_at - moment(started)).total_seconds() == pytest.approx(0.2, abs=0.05)
    assert moment(fired) >= fire_at


def test_a_timer_step_outputs_the_seconds_it_waited(engine: Engine) -> None:
    document = process(
        "timer-output",
        {"id": "pause", "type": "timer", "seconds": 0.25},
        output={"waited": "{{ steps.pause.output.waited_seconds }}"},
    )

    _, execution = engine.run(document)

    assert execution.steps["pause"].output == {"waited_seconds": 0.25}
    assert execution.output == {"waited": 0.25}


def test_a_timer_delays_its_dependents_but_not_independent_steps(engine: Engine) -> None:
    document = process(
        "timer-delays",
        agent_step("before"),
        {"id": "pause", "type": "timer", "seconds": 0.3, "depends_on": ["before"]},
        agent_step("after", depends_on=["pause"]),
        agent_step("aside", depends_on=["before"]),
    )

    execution_id, execution = engine.run(document)

    messages = engine.history(execution_id)
    assert execution.status is ExecutionStatus.COMPLETED
    fire_at = moment(events_of(messages, "timer_started")[0], "fire_at")
    assert moment(events_of(messages, "step_started", "after")[0]) >= fire_at
    assert index_of(messages, "timer_fired") < index_of(messages, "step_scheduled", "after")
    assert index_of(messages, "step_completed", "aside") < index_of(messages, "timer_fired")


# -- events ---------------------------------------------------------------------------------------


def test_a_successful_execution_records_exactly_the_expected_events_in_order(
    engine: Engine,
) -> None:
    document = process("two-steps", agent_step("a"), agent_step("b", depends_on=["a"]))

    execution_id, _ = engine.run(document)

    messages = engine.history(execution_id)
    assert [(m["type"], m["data"].get("step_id")) for m in messages] == [
        ("execution_started", None),
        *[(t, "a") for t in AGENT_STEP_EVENTS],
        *[(t, "b") for t in AGENT_STEP_EVENTS],
        ("execution_completed", None),
    ]
    assert messages[-1]["data"]["output"] == {"a": {"step": "a"}, "b": {"step": "b"}}


def test_failure_events_carry_the_error_type_message_and_attempt(engine: Engine) -> None:
    execution_id, _ = engine.run(process("error-details", agent_step("bad", "failing")))

    messages = engine.history(execution_id)
    (agent_failed,) = events_of(messages, "agent_failed")
    (step_failed,) = events_of(messages, "step_failed")
    (execution_failed,) = events_of(messages, "execution_failed")
    assert agent_failed["data"]["error"] == {
        "type": "Overloaded",
        "message": "the model is overloaded",
    }
    assert agent_failed["data"]["duration_ms"] >= 0
    assert step_failed["data"]["error"] == {
        "type": "Overloaded",
        "message": "the model is overloaded",
        "attempt": 1,
    }
    assert execution_failed["data"]["error"] == {**step_failed["data"]["error"], "step_id": "bad"}


def test_every_event_carries_its_execution_version_time_user_and_cause(engine: Engine) -> None:
    document = process(
        "context",
        agent_step("a"),
        agent_step("b", "flaky", retry=_retry(3, 0.01)),
        agent_step("c", depends_on=["a", "b"]),
    )
    execution_id, _ = engine.run(document, user="user-context")

    messages = engine.history(execution_id)
    assert len(messages) > 15
    assert [m["version"] for m in messages] == list(range(1, len(messages) + 1))
    assert {m["execution_id"] for m in messages} == {str(execution_id)}
    assert {m["user_id"] for m in messages} == {"user-context"}
    assert messages[0]["data"]["caused_by"] == "user:user-context"
    workers = {m["data"]["caused_by"] for m in messages[1:]}
    assert len(workers) == 1
    assert workers.pop().startswith("worker:")
    for message in messages:
        assert moment(message).utcoffset() == UTC.utcoffset(None)
        if message["type"] not in ("execution_started", "execution_completed"):
            assert message["data"]["step_id"] in {"a", "b", "c"}
            assert message["data"]["attempt"] >= 1


def test_positions_strictly_increase_and_timestamps_never_go_back(engine: Engine) -> None:
    document = process(
        "ordered",
        agent_step("fork"),
        *[agent_step(f"branch-{n}", depends_on=["fork"]) for n in range(4)],
        agent_step("join", depends_on=[f"branch-{n}" for n in range(4)]),
    )

    execution_id, _ = engine.run(document)

    messages = engine.history(execution_id)
    positions = [m["position"] for m in messages]
    times = [moment(m) for m in messages]
    assert all(a < b for a, b in itertools.pairwise(positions))
    assert times == sorted(times)


# -- output ---------------------------------------------------------------------------------------


def test_the_output_template_combines_several_references_and_keeps_json_types(
    engine: Engine,
) -> None:
    writer = Calls(answer=lambda data: {"title": f"About {data['topic']}", "words": [1, 2, 3]})
    engine.agent("writer", writer)
    document = process(
        "output",
        agent_step("write", "writer", input={"topic": "{{ input.topic }}"}),
        agent_step(
            "count", depends_on=["write"], input={"n": "{{ steps.write.output.words | length }}"}
        ),
        output={
            "headline": "{{ steps.write.output.title }} ({{ steps.count.output.n }} words)",
            "n": "{{ steps.count.output.n }}",
            "pair": ["{{ steps.count.output.n }}", "{{ input.topic }}"],
            "words": "{{ steps.write.output.words }}",
        },
    )

    execution_id, execution = engine.run(document, {"topic": "ledgers"})

    expected = {
        "headline": "About ledgers (3 words)",
        "n": 3,
        "pair": [3, "ledgers"],
        "words": [1, 2, 3],
    }
    assert execution.output == expected
    assert engine.history(execution_id)[-1]["data"]["output"] == expected
    assert reread_from_a_fresh_store(engine.settings, execution_id).output == expected


def test_a_step_output_stored_by_one_step_is_read_by_several_later_ones(engine: Engine) -> None:
    calls = Calls()
    engine.agent("reader", calls)
    document = process(
        "fan-out-reads",
        agent_step("source", input={"value": "{{ input.value }}"}),
        agent_step(
            "one", "reader", depends_on=["source"], input={"v": "{{ steps.source.output.value }}"}
        ),
        agent_step(
            "two",
            "reader",
            depends_on=["source", "one"],
            input={"v": "{{ steps.source.output.value }}-{{ steps.one.output.v }}"},
        ),
    )

    execution_id, execution = engine.run(document, {"value": "x"})

    assert sorted((s, d) for s, d, _ in calls.of(execution_id)) == [
        ("one", {"v": "x"}),
        ("two", {"v": "x-x"}),
    ]
    assert execution.steps["source"].output == {"value": "x"}


def test_a_gateway_whose_condition_cannot_be_evaluated_fails_with_the_expression_error(
    engine: Engine,
) -> None:
    routes: list[dict[str, Any]] = [
        {"when": "input.n + 'x' == 1", "next": ["high"]},
        {"default": True, "next": ["low"]},
    ]
    document = _routing("broken-condition", routes)
    document["steps"] = [s for s in document["steps"] if s["id"] not in ("mid", "after_mid")]
    document["steps"][-1]["depends_on"] = ["high", "low"]

    execution_id, execution = engine.run(document, {"n": 1})

    messages = engine.history(execution_id)
    assert execution.status is ExecutionStatus.FAILED
    assert of_step(messages, "route") == ["step_scheduled", "step_started", "step_failed"]
    assert execution.error is not None
    assert (execution.error["type"], execution.error["step_id"]) == ("ExpressionError", "route")
    assert of_step(messages, "high") == of_step(messages, "low") == []


def test_a_gateway_without_a_matching_route_or_default_skips_every_branch(
    engine: Engine,
) -> None:
    routes: list[dict[str, Any]] = [
        {"when": "input.score > 5", "next": ["high"]},
        {"when": "input.score > 2", "next": ["mid"]},
    ]
    document = _routing("no-route", routes)
    document["steps"] = [s for s in document["steps"] if s["id"] not in ("low", "join")]

    execution_id, execution = engine.run(document, {"score": 0})

    evaluated, skipped = _taken(engine, execution_id)
    assert (evaluated["route"], evaluated["next"]) == (None, [])
    assert evaluated["reason"] == "no route matched and there is no default"
    assert skipped == dict.fromkeys(("high", "mid", "after_mid"), "branch_not_taken")
    assert execution.status is ExecutionStatus.COMPLETED


def test_a_timer_longer_than_the_local_wait_lets_its_lease_go_and_still_fires(
    engine: Engine, postgres_url: str
) -> None:
    document = process(
        "durable-timer",
        {"id": "pause", "type": "timer", "seconds": 5.5},
        agent_step("after", depends_on=["pause"]),
    )
    execution_id = engine.start(document)
    engine.wait_for_event(execution_id, "timer_started")

    def lease_released() -> bool:
        with psycopg.connect(postgres_url) as connection:
            row = connection.execute(
                "SELECT lease_owner FROM execution_work WHERE execution_id = %s", (execution_id,)
            ).fetchone()
        return row is not None and row[0] is None

    wait_until(lease_released, timeout=3, what="the worker to let go while the timer runs")
    execution = engine.finish(execution_id)

    messages = engine.history(execution_id)
    assert execution.status is ExecutionStatus.COMPLETED
    fire_at = moment(events_of(messages, "timer_started")[0], "fire_at")
    assert moment(events_of(messages, "timer_fired")[0]) >= fire_at
    assert of_step(messages, "after") == AGENT_STEP_EVENTS
