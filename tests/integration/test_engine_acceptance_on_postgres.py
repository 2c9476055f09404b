"""Issue 3's acceptance: one process with a diamond, a gateway, a timer, a flaky step and a
skippable step produces exactly the events the SPEC implies, seen over the WebSocket tail."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from agent_ledger.infrastructure.api.app import create_app
from agent_ledger.infrastructure.auth.tokens import issue_token
from tests.support.asgi_client import TestClient, receive_json
from tests.support.engine_scenarios import (
    FINISHING_EVENTS,
    SECRET,
    Engine,
    Message,
    agent_step,
    always_failing,
    engine_settings,
    flaky_until_third_attempt,
    index_of,
    moment,
    of_step,
    process,
    running_engine,
)

pytestmark = pytest.mark.postgres

USER = "acceptance-user"
AGENT = ["step_scheduled", "step_started", "agent_started", "agent_completed", "step_completed"]
FAILED_ATTEMPT = [
    "step_scheduled",
    "step_started",
    "agent_started",
    "agent_failed",
    "step_retrying",
]

ACCEPTANCE_PROCESS = process(
    "acceptance",
    agent_step("start", input={"topic": "{{ input.topic }}"}),
    # a diamond whose left branch is flaky: it succeeds on its third attempt
    agent_step(
        "left",
        "flaky",
        depends_on=["start"],
        retry={"max_attempts": 3, "initial_interval": 0.05, "backoff_coefficient": 2.0},
    ),
    agent_step("right", depends_on=["start"]),
    agent_step(
        "join",
        depends_on=["left", "right"],
        input={"left": "{{ steps.left.output.succeeded_on }}", "right": "{{ steps.right.output }}"},
    ),
    {
        "id": "route",
        "type": "gateway",
        "depends_on": ["join"],
        "routes": [
            {"when": "steps.join.output.left == 3", "next": ["fast"]},
            {"default": True, "next": ["slow"]},
        ],
    },
    agent_step("fast"),
    agent_step("slow"),
    {"id": "pause", "type": "timer", "seconds": 0.2, "depends_on": ["fast"]},
    agent_step("finish", depends_on=["pause"], input={"after": "{{ steps.pause.output }}"}),
    agent_step("optional", "failing", depends_on=["start"], on_error="skip_step"),
    output={
        "attempts": "{{ steps.left.output.succeeded_on }}",
        "route": "{{ steps.route.output.next }}",
        "finished": "{{ steps.finish.output }}",
        "topic": "{{ steps.start.output.topic }}",
    },
)

EXPECTED_STEP_EVENTS = {
    "start": AGENT,
    "left": [*FAILED_ATTEMPT, *FAILED_ATTEMPT, *AGENT],
    "right": AGENT,
    "join": AGENT,
    "route": ["step_scheduled", "step_started", "gateway_evaluated", "step_completed"],
    "fast": AGENT,
    "slow": ["step_skipped"],
    "pause": ["step_scheduled", "step_started", "timer_started", "timer_fired", "step_completed"],
    "finish": AGENT,
    "optional": ["step_scheduled", "step_started", "agent_started", "agent_failed", "step_skipped"],
}


@pytest.fixture(scope="module")
def engine(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    settings = engine_settings(postgres_url, tmp_path_factory.mktemp("acceptance"))
    with running_engine(settings) as running:
        running.agent("flaky", flaky_until_third_attempt)
        running.agent("failing", always_failing)
        yield running


@pytest.fixture(scope="module")
def client(engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(engine.settings, engine.runtime)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def tail(engine: Engine, client: TestClient) -> list[Message]:
    """Start the acceptance process through the API and follow it over the WebSocket tail."""
    headers = {"Authorization": f"Bearer {issue_token(SECRET, USER)}"}
    name = engine.register(ACCEPTANCE_PROCESS)
    response = client.post(
        "/v1/executions", json={"process": name, "input": {"topic": "ledgers"}}, headers=headers
    )
    assert response.status_code == 201, response.text
    execution_id = response.json()["id"]
    messages: list[Message] = []
    with client.websocket_connect(
        f"/v1/stream?after=0&execution_id={execution_id}", headers=headers
    ) as ws:
        while not messages or messages[-1]["type"] not in FINISHING_EVENTS:
            messages.append(receive_json(ws, timeout=15))
    return messages


def test_every_step_records_exactly_the_events_its_kind_and_outcome_imply(
    tail: list[Message],
) -> None:
    steps = {m["data"]["step_id"] for m in tail if "step_id" in m["data"]}

    assert steps == set(EXPECTED_STEP_EVENTS)
    for step_id, expected in EXPECTED_STEP_EVENTS.items():
        assert of_step(tail, step_id) == expected, step_id
    execution_level = [m["type"] for m in tail if "step_id" not in m["data"]]
    assert execution_level == ["execution_started", "execution_completed"]
    assert len(tail) == 1 + sum(map(len, EXPECTED_STEP_EVENTS.values())) + 1


def test_the_tail_delivers_one_execution_in_store_order_and_ends_with_its_completion(
    engine: Engine, tail: list[Message]
) -> None:
    positions = [m["position"] for m in tail]
    execution_id = tail[0]["execution_id"]

    assert all(a < b for a, b in itertools.pairwise(positions))
    assert [m["version"] for m in tail] == list(range(1, len(tail) + 1))
    assert {m["execution_id"] for m in tail} == {execution_id}
    assert {m["user_id"] for m in tail} == {USER}
    assert (tail[0]["type"], tail[-1]["type"]) == ("execution_started", "execution_completed")
    stored = [
        (m["position"], m["type"], m["data"]) for m in engine.history(tail[0]["execution_id"])
    ]
    assert [(m["position"], m["type"], m["data"]) for m in tail] == stored


def test_the_flaky_step_is_retried_with_the_policys_delays_and_attempt_numbers(
    tail: list[Message],
) -> None:
    left = [m for m in tail if m["data"].get("step_id") == "left"]
    retrying = [m for m in left if m["type"] == "step_retrying"]

    assert [m["data"]["attempt"] for m in left if m["type"] == "step_scheduled"] == [1, 2, 3]
    assert [m["data"]["attempt"] for m in retrying] == [1, 2]
    assert [m["data"]["delay_seconds"] for m in retrying] == [0.05, 0.1]
    assert [m["data"]["error"]["message"] for m in retrying] == [
        "transient failure on attempt 1",
        "transient failure on attempt 2",
    ]
    scheduled = [m for m in left if m["type"] == "step_scheduled"]
    for failed, retried in zip(retrying, scheduled[1:], strict=True):
        assert moment(retried) >= moment(failed, "retry_at")


def test_the_join_starts_only_after_both_branches_of_the_diamond(tail: list[Message]) -> None:
    join_scheduled = index_of(tail, "step_scheduled", "join")

    for branch in ("left", "right", "optional"):
        assert index_of(tail, "step_completed", "start") < index_of(tail, "step_scheduled", branch)
    assert index_of(tail, "step_completed", "right") < join_scheduled
    assert max(i for i, m in enumerate(tail) if m["data"].get("step_id") == "left") < join_scheduled


def test_the_gateway_decides_before_its_branch_runs_and_the_other_branch_is_skipped(
    tail: list[Message],
) -> None:
    evaluated = index_of(tail, "gateway_evaluated", "route")
    skipped = tail[index_of(tail, "step_skipped", "slow")]

    assert index_of(tail, "step_completed", "join") < evaluated
    assert evaluated < index_of(tail, "step_started", "fast")
    assert evaluated < index_of(tail, "step_skipped", "slow")
    assert tail[evaluated]["data"]["route"] == 0
    assert tail[evaluated]["data"]["next"] == ["fast"]
    assert tail[evaluated]["data"]["reason"] == "condition true: steps.join.output.left == 3"
    assert skipped["data"]["reason"] == "branch_not_taken"


def test_the_timer_fires_after_its_delay_and_before_its_dependent_starts(
    tail: list[Message],
) -> None:
    started = tail[index_of(tail, "timer_started", "pause")]
    fired = index_of(tail, "timer_fired", "pause")
    finish_started = index_of(tail, "step_started", "finish")

    assert index_of(tail, "step_completed", "fast") < index_of(tail, "timer_started", "pause")
    assert index_of(tail, "timer_started", "pause") < fired < finish_started
    assert moment(tail[fired]) >= moment(started, "fire_at")
    assert moment(tail[finish_started]) >= moment(started, "fire_at")


def test_the_failing_optional_step_is_skipped_for_its_error_and_the_execution_completes(
    tail: list[Message],
) -> None:
    skipped = tail[index_of(tail, "step_skipped", "optional")]
    failed = tail[index_of(tail, "agent_failed", "optional")]

    assert skipped["data"]["reason"] == "error"
    assert failed["data"]["error"] == {"type": "Overloaded", "message": "the model is overloaded"}
    assert tail[-1]["type"] == "execution_completed"


def test_the_execution_completes_with_the_value_of_its_output_template(
    tail: list[Message],
) -> None:
    expected: dict[str, Any] = {
        "attempts": 3,
        "route": ["fast"],
        "finished": {"after": {"waited_seconds": 0.2}},
        "topic": "ledgers",
    }

    assert tail[-1]["data"]["output"] == expected
