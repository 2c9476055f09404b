"""Follow-up messages on a thread over the real API on PostgreSQL: `thread_policy` enqueue,
reject, interrupt and signal, with the engine running the executions they start."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest

from agent_ledger.domain.execution_state import ExecutionStatus
from tests.support import tokens
from tests.support.asgi_client import TestClient, serving
from tests.support.engine_scenarios import (
    SECRET,
    Engine,
    Hung,
    agent_step,
    engine_settings,
    events_of,
    process,
)
from tests.support.walking_skeleton import assert_problem

pytestmark = pytest.mark.postgres

USER = tokens.bearer(SECRET, "tess")


@pytest.fixture(scope="module")
def api(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Engine, TestClient]]:
    settings = engine_settings(postgres_url, tmp_path_factory.mktemp("thread-policies"))
    with serving(settings) as (runtime, client):
        yield Engine(runtime), client


@pytest.fixture(scope="module")
def processes(api: tuple[Engine, TestClient]) -> dict[str, str]:
    """`hung` runs until cancelled, `waits` waits for a `message` and ends with it, `echo`
    ends at once."""
    engine, _ = api
    engine.agent("hung", Hung())
    wait = {"id": "wait", "type": "wait_for_signal", "signal": "message", "depends_on": []}
    return {
        "hung": engine.register(process("hung", agent_step("hold", "hung"))),
        "waits": engine.register(process("waits", wait, output="{{ steps.wait.output }}")),
        "echo": engine.register(process("echo", agent_step("say", "echo"), output="done")),
    }


def start(client: TestClient, process_name: str, thread: str | None, **body: Any) -> Any:
    """POST /v1/executions; the response, whatever its status."""
    payload = {"process": process_name, "thread_id": thread, **body}
    return client.post("/v1/executions", json=payload, headers=USER)


def started(client: TestClient, process_name: str, thread: str, **body: Any) -> UUID:
    response = start(client, process_name, thread, **body)
    assert response.status_code == 201, response.text
    return UUID(response.json()["id"])


def thread_ids(engine: Engine, client: TestClient, thread: str) -> set[UUID]:
    after = engine.runtime.executions.last_position()
    listed = client.get(
        "/v1/executions", params={"thread_id": thread, "after": after}, headers=USER
    )
    assert listed.status_code == 200, listed.text
    return {UUID(item["id"]) for item in listed.json()["items"]}


def test_enqueue_starts_a_second_execution_of_a_busy_thread_as_before(
    api: tuple[Engine, TestClient], processes: dict[str, str]
) -> None:
    engine, client = api
    first = started(client, processes["waits"], "enqueued")
    engine.wait_for_event(first, "signal_awaited")

    second = started(client, processes["echo"], "enqueued", thread_policy="enqueue")
    third = started(client, processes["echo"], "enqueued")  # enqueue is the default

    for later in (second, third):
        assert engine.finish(later).status is ExecutionStatus.COMPLETED
    assert engine.execution(first).status is ExecutionStatus.WAITING
    assert thread_ids(engine, client, "enqueued") == {first, second, third}


def test_reject_refuses_while_an_execution_of_the_thread_runs_or_waits(
    api: tuple[Engine, TestClient], processes: dict[str, str]
) -> None:
    engine, client = api
    running = started(client, processes["hung"], "rejecting")
    engine.wait_for_event(running, "agent_started")

    refused = start(client, processes["echo"], "rejecting", thread_policy="reject")

    assert str(running) in assert_problem(refused, 409, "thread-busy")["detail"]
    assert thread_ids(engine, client, "rejecting") == {running}
    cancelled = client.post(f"/v1/executions/{running}/cancel", headers=USER)
    assert cancelled.status_code == 202, cancelled.text
    assert engine.finish(running).status is ExecutionStatus.CANCELLED
    waiting = started(client, processes["waits"], "rejecting", thread_policy="reject")
    engine.wait_for_event(waiting, "signal_awaited")
    refused = start(client, processes["echo"], "rejecting", thread_policy="reject")
    assert str(waiting) in assert_problem(refused, 409, "thread-busy")["detail"]
    assert thread_ids(engine, client, "rejecting") == {running, waiting}


def test_interrupt_cancels_the_running_execution_in_the_name_of_the_new_one(
    api: tuple[Engine, TestClient], processes: dict[str, str]
) -> None:
    engine, client = api
    running = started(client, processes["hung"], "interrupting")
    engine.wait_for_event(running, "agent_started")

    new = started(client, processes["echo"], "interrupting", thread_policy="interrupt")

    assert engine.finish(new).status is ExecutionStatus.COMPLETED
    assert engine.finish(running).status is ExecutionStatus.CANCELLED
    history = engine.history(running)
    (requested,) = events_of(history, "execution_cancellation_requested")
    (cancelled,) = events_of(history, "execution_cancelled")
    assert requested["data"]["reason"] == cancelled["data"]["reason"] == f"interrupted by {new}"
    (new_started,) = events_of(engine.history(new), "execution_started")
    assert requested["position"] < new_started["position"]


def test_signal_delivers_the_input_to_the_execution_waiting_for_a_message_or_else_starts(
    api: tuple[Engine, TestClient], processes: dict[str, str]
) -> None:
    engine, client = api
    waiting = started(client, processes["waits"], "signalling")
    engine.wait_for_event(waiting, "signal_awaited")

    delivered = start(
        client, processes["echo"], "signalling", thread_policy="signal", input={"text": "also"}
    )

    assert delivered.status_code == 202, delivered.text
    body = delivered.json()
    assert (body["id"], body["delivered"], body["signal"]) == (str(waiting), "signal", "message")
    finished = engine.finish(waiting)
    assert (finished.status, finished.output) == (ExecutionStatus.COMPLETED, {"text": "also"})
    assert thread_ids(engine, client, "signalling") == {waiting}
    new = started(client, processes["echo"], "signalling", thread_policy="signal")
    assert engine.finish(new).status is ExecutionStatus.COMPLETED


def test_a_thread_policy_without_a_thread_is_refused(
    api: tuple[Engine, TestClient], processes: dict[str, str]
) -> None:
    _, client = api

    refused = start(client, processes["echo"], None, thread_policy="reject")

    assert "thread_id" in assert_problem(refused, 422, "invalid-request")["detail"]
