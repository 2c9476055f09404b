"""The WebSocket tail in one process, on embedded SQLite and on PostgreSQL: the index-backed
catch-up, the seam to live, resume, filters and isolation."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.websockets import WebSocketDisconnect

from agent_ledger.infrastructure.api.app import create_app
from agent_ledger.infrastructure.read_models.tables import event_index
from agent_ledger.infrastructure.runtime import Runtime
from agent_ledger.infrastructure.settings import Settings
from tests.support import tokens
from tests.support.asgi_client import TestClient, WebSocketTestSession, receive_json
from tests.support.tail_workload import EVENTS_PER_EXECUTION, append, positions_by_user

SECRET = "tail-integration-" + "s" * 32
USERS = ("alice", "bob", "carol")


auth = partial(tokens.bearer, SECRET)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def client(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    data_dir: Path = tmp_path_factory.mktemp(f"tail-{request.param}")
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    settings = Settings(
        database_url=url, jwt_secret=SECRET, data_dir=data_dir, run_engine=False, poll_interval=0.2
    )
    with TestClient(create_app(settings)) as running:
        yield running


def runtime(client: TestClient) -> Runtime:
    found: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    return found


def receive_until(ws: WebSocketTestSession, last: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while not messages or messages[-1]["position"] < last:
        message = receive_json(ws, timeout=10)
        if message["type"] != "heartbeat":
            messages.append(message)
    return messages


def test_catch_up_comes_from_the_index_then_live_follows_with_no_gap_or_repeat(
    client: TestClient,
) -> None:
    executions = runtime(client).executions
    for _ in range(3):
        append(executions, USERS)
    assert runtime(client).projector is not None
    head = executions.last_position()
    assert runtime(client).projector.wait_for(head, 10, name="event_index")  # type: ignore[union-attr]

    with client.websocket_connect("/v1/stream?after=0", headers=auth("alice")) as ws:
        caught_up = receive_until(ws, positions_by_user(executions, USERS)["alice"][-1])
        append(executions, USERS)  # written after catch-up: only the live path can bring it
        expected = positions_by_user(executions, USERS)["alice"]
        live = receive_until(ws, expected[-1])

    with runtime(client).read_engine.connect() as connection:
        indexed = connection.execute(sa.select(sa.func.count()).select_from(event_index)).scalar()
    received = caught_up + live
    assert [m["position"] for m in received] == expected
    assert {m["user_id"] for m in received} == {"alice"}
    assert len(expected) >= 4 * EVENTS_PER_EXECUTION
    assert indexed is not None
    assert indexed >= 3 * len(USERS) * EVENTS_PER_EXECUTION


def test_resuming_after_a_position_sends_exactly_the_rest(client: TestClient) -> None:
    executions = runtime(client).executions
    append(executions, USERS)
    expected = positions_by_user(executions, USERS)["bob"]
    middle = expected[len(expected) // 2]

    with client.websocket_connect(f"/v1/stream?after={middle}", headers=auth("bob")) as ws:
        rest = receive_until(ws, expected[-1])

    assert [m["position"] for m in rest] == [p for p in expected if p > middle]


def test_a_type_filter_selects_only_those_events(client: TestClient) -> None:
    executions = runtime(client).executions
    append(executions, USERS)
    expected = positions_by_user(executions, USERS)["carol"]
    query = "after=0&types=execution_started,execution_completed"

    with client.websocket_connect(f"/v1/stream?{query}", headers=auth("carol")) as ws:
        received = receive_until(ws, expected[-1])

    types = [m["type"] for m in received]
    assert set(types) == {"execution_started", "execution_completed"}
    assert types.count("execution_started") == types.count("execution_completed") >= 2


def test_an_auditor_may_follow_every_user_and_a_user_may_not(client: TestClient) -> None:
    executions = runtime(client).executions
    head = append(executions, USERS)

    with client.websocket_connect(
        "/v1/stream?after=0&all_users=true", headers=auth("dora", "auditor")
    ) as ws:
        received = receive_until(ws, head)
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        client.websocket_connect("/v1/stream?after=0&all_users=true", headers=auth("alice")) as ws,
    ):
        receive_json(ws)

    assert [m["position"] for m in received] == list(range(1, head + 1))
    assert refused.value.code == 4403


def test_a_bad_parameter_closes_the_stream_with_the_reason(client: TestClient) -> None:
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        client.websocket_connect("/v1/stream?types=agent_strated", headers=auth("alice")) as ws,
    ):
        receive_json(ws)

    assert refused.value.code == 4400
    assert "agent_strated" in str(refused.value.reason)
