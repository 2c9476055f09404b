"""The real server (`agent-ledger serve`) over real HTTP and WebSocket, on SQLite and PostgreSQL."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.support.server import Server, running_server, start
from tests.support.walking_skeleton import (
    START_COST_OPTIMIZATION,
    assert_agent_steps_stream_in_order,
    assert_problem,
    oversized_start,
    same_events,
)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A running server; embedded SQLite in a data directory, or PostgreSQL."""
    data_dir = tmp_path_factory.mktemp(f"server-{request.param}")
    settings: dict[str, str] = {}
    if request.param == "postgres":
        settings.update(
            AGENT_LEDGER_DATABASE_URL=request.getfixturevalue("postgres_url"),
            AGENT_LEDGER_JWT_SECRET=f"e2e-{uuid.uuid4().hex}{uuid.uuid4().hex}",
        )
    with running_server(data_dir, **settings) as running:
        yield running


@pytest.fixture(scope="module")
def user_a(server: Server) -> str:
    return server.token("user-a")


@pytest.fixture(scope="module")
def user_b(server: Server) -> str:
    return server.token("user-b")


def test_the_sample_process_streams_its_agent_steps_and_completes_with_savings(
    server: Server, user_a: str
) -> None:
    execution_id = start(server, user_a, START_COST_OPTIMIZATION)

    messages = server.follow(execution_id, token=user_a)

    assert_agent_steps_stream_in_order(messages, execution_id)
    with server.client(user_a) as client:
        view = client.get(
            f"/v1/executions/{execution_id}", params={"after": messages[-1]["position"]}
        )
    assert view.status_code == 200, view.text
    assert view.json()["status"] == "completed"
    assert view.json()["output"]["projected_monthly_savings_usd"] > 0


def test_another_user_sees_none_of_user_as_executions(
    server: Server, user_a: str, user_b: str
) -> None:
    a_execution = start(server, user_a, START_COST_OPTIMIZATION)
    server.follow(a_execution, token=user_a, query=f"after=0&execution_id={a_execution}")

    with server.client(user_b) as client:
        refused = [
            client.get(f"/v1/executions/{a_execution}"),
            client.get(f"/v1/executions/{a_execution}/events"),
            client.post(f"/v1/executions/{a_execution}/cancel"),
        ]
    b_execution = start(server, user_b, {"process": "echo", "input": {"hello": "b"}})
    b_messages = server.follow(b_execution, token=user_b, in_query=True)
    ws_url = (
        server.url.replace("http", "ws", 1)
        + f"/v1/stream?after=0&execution_id={a_execution}&access_token={user_b}"
    )
    with (
        pytest.raises(ConnectionClosed) as closed,
        connect(ws_url, open_timeout=10, close_timeout=5) as ws,
    ):
        ws.recv(timeout=10)

    for response in refused:
        assert_problem(response, 404, "not-found")
    assert {m["user_id"] for m in b_messages} == {"user-b"}
    assert b_execution in {m["execution_id"] for m in b_messages}
    assert a_execution not in {m["execution_id"] for m in b_messages}
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4404


BAD_REQUESTS = [
    "malformed JSON",
    "unknown process",
    "oversized input",
    "missing token",
    "expired token",
]


def bad_request(server: Server, case: str, user_a: str) -> tuple[dict[str, Any], int, str]:
    auth = {"Authorization": f"Bearer {user_a}"}
    echo = {"process": "echo", "input": {}}
    return {
        "malformed JSON": (
            dict(content=b'{"process": ', headers={**auth, "Content-Type": "application/json"}),
            400,
            "malformed-json",
        ),
        "unknown process": (
            dict(json={"process": "nope", "input": {}}, headers=auth),
            422,
            "unknown-process",
        ),
        "oversized input": (dict(json=oversized_start(), headers=auth), 413, "input-too-large"),
        "missing token": (dict(json=echo), 401, "unauthenticated"),
        "expired token": (
            dict(
                json=echo,
                headers={"Authorization": f"Bearer {server.token('user-a', '--ttl=-60')}"},
            ),
            401,
            "unauthenticated",
        ),
    }[case]


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_a_bad_start_request_gets_a_problem_and_stores_nothing(
    server: Server, user_a: str, case: str
) -> None:
    request, status, kind = bad_request(server, case, user_a)
    head = server.store_position()
    with server.client() as client:
        listed = client.get("/v1/executions", headers={"Authorization": f"Bearer {user_a}"})

        response = client.post("/v1/executions", **request)

        relisted = client.get("/v1/executions", headers={"Authorization": f"Bearer {user_a}"})
    assert_problem(response, status, kind)
    assert server.store_position() == head
    assert relisted.json() == listed.json()


@pytest.mark.parametrize("credentials", ["header", "query"])
def test_a_stream_with_an_expired_token_is_closed_as_unauthenticated(
    server: Server, credentials: str
) -> None:
    expired = server.token("user-a", "--ttl=-60")
    url = server.url.replace("http", "ws", 1) + "/v1/stream?after=0"
    headers = {}
    if credentials == "query":
        url += f"&access_token={expired}"
    else:
        headers["Authorization"] = f"Bearer {expired}"

    with (
        pytest.raises(ConnectionClosed) as closed,
        connect(url, additional_headers=headers, open_timeout=10, close_timeout=5) as ws,
    ):
        ws.recv(timeout=10)

    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401
    assert "expired" in closed.value.rcvd.reason


def test_a_restarted_server_keeps_history_and_replays_idempotent_starts(
    server: Server, user_a: str
) -> None:
    key = f"e2e-{uuid.uuid4()}"
    execution_id = start(server, user_a, START_COST_OPTIMIZATION, **{"Idempotency-Key": key})
    server.follow(execution_id, token=user_a, query=f"after=0&execution_id={execution_id}")
    head = server.store_position()
    with server.client(user_a) as client:
        history = client.get(f"/v1/executions/{execution_id}/events", params={"limit": 1000})
        listed = client.get("/v1/executions", params={"after": head})

    live_url = server.url.replace("http", "ws", 1) + f"/v1/stream?access_token={user_a}"
    with connect(live_url, open_timeout=10, close_timeout=5) as live:
        exit_code = server.restart()
        with pytest.raises(ConnectionClosed) as closed:
            live.recv(timeout=10)

    with server.client(user_a) as client:  # the token minted before the restart still works
        history_again = client.get(f"/v1/executions/{execution_id}/events", params={"limit": 1000})
        replayed = client.post(
            "/v1/executions", json=START_COST_OPTIMIZATION, headers={"Idempotency-Key": key}
        )
        conflicting = client.post(
            "/v1/executions",
            json={**START_COST_OPTIMIZATION, "input": {"question": "other"}},
            headers={"Idempotency-Key": key},
        )
        listed_again = client.get("/v1/executions", params={"after": head})
    streamed = server.follow(
        execution_id, token=user_a, query=f"after=0&execution_id={execution_id}"
    )
    # uvicorn re-raises the SIGTERM after its graceful shutdown, so -SIGTERM is a clean exit
    assert exit_code in (0, -signal.SIGTERM), server.log()
    assert "Application shutdown complete" in server.log_path.read_text()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code in (1001, 1012)  # going away / service restart: reconnect
    assert history_again.json() == history.json()
    assert same_events(streamed) == same_events(history.json()["items"])
    assert listed_again.json() == listed.json()
    assert replayed.status_code == 200, replayed.text
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.json()["id"] == execution_id
    assert [m["type"] for m in streamed].count("execution_started") == 1
    assert server.store_position() == head
    assert_problem(conflicting, 409, "idempotency-key-reused")


def test_the_demo_command_runs_the_sample_process_against_the_server(server: Server) -> None:
    demo = server.cli("demo", "--url", server.url)

    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "Projected monthly savings" in demo.stdout
    assert "execution_completed" in demo.stdout
