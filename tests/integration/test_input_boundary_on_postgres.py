"""Text and numbers the store cannot hold are refused at the edge with 422, storing nothing.

Each case here answered 500 (or, for a thread id, 201 and then stopped every user's
status views) before the boundary existed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agent_ledger.infrastructure.auth.tokens import issue_token
from agent_ledger.infrastructure.runtime import Runtime
from agent_ledger.infrastructure.settings import Settings
from tests.support.asgi_client import TestClient, serving

pytestmark = pytest.mark.postgres

SECRET = "boundary-secret-" + "b" * 32
USER = {"Authorization": f"Bearer {issue_token(SECRET, 'user-a')}"}
ADMIN = {"Authorization": f"Bearer {issue_token(SECRET, 'ada', ['admin'])}"}
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def service(settings: Settings) -> Iterator[tuple[Runtime, TestClient]]:
    with serving(settings) as running:
        yield running


def assert_refused(response: Any, field: str) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "/problems/invalid-text", problem
    assert problem["field"] == field, problem
    assert field in problem["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"process":"echo","input":{},"thread_id":"t\\u0000"}', "body.thread_id"),
        (b'{"process":"ec\\u0000ho","input":{}}', "body.process"),
        (b'{"process":"echo","input":{"s":"\\ud800"}}', "body.input.s"),
        (b'{"process":"echo","input":{"\\udc00":1}}', "a key of body.input"),
        (b'{"process":"echo","input":{"deep":[{"x":"a\\u0000"}]}}', "body.input.deep[0].x"),
    ],
)
def test_a_start_with_unstorable_text_is_refused_and_stores_nothing(
    service: tuple[Runtime, TestClient], body: bytes, field: str
) -> None:
    runtime, client = service
    before = runtime.executions.last_position()
    assert_refused(client.post("/v1/executions", content=body, headers={**USER, **JSON}), field)
    assert runtime.executions.last_position() == before


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/processes/%00", {}, "the path"),
        ("/v1/executions", {"process": "\x00"}, "query parameter 'process'"),
        ("/v1/executions", {"thread_id": "t\x00"}, "query parameter 'thread_id'"),
        ("/v1/executions", {"status": "\x00"}, "query parameter 'status'"),
        ("/v1/metrics/agents", {"name": "\x00"}, "query parameter 'name'"),
        ("/v1/audit/reads", {"actor": "\x00"}, "query parameter 'actor'"),
    ],
)
def test_a_query_with_a_nul_byte_is_refused(
    service: tuple[Runtime, TestClient], path: str, params: dict[str, str], field: str
) -> None:
    _, client = service
    assert_refused(client.get(path, params=params, headers=ADMIN), field)


def test_a_process_definition_with_unstorable_text_is_refused(
    service: tuple[Runtime, TestClient],
) -> None:
    _, client = service
    body = b'{"steps":[{"id":"a\\u0000","type":"agent_task","agent":"echo"}]}'
    response = client.put("/v1/processes/nul", content=body, headers={**ADMIN, **JSON})
    assert_refused(response, "body.steps[0].id")
    unknown = client.get("/v1/processes/nul", headers=ADMIN)
    assert unknown.json()["type"] == "/problems/unknown-process", unknown.text


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "field"),
    [
        ("POST", "/v1/executions", {"json": {"process": "echo", "version": 2**31}}, "version"),
        ("GET", "/v1/processes/echo", {"params": {"version": 2**31}}, "version"),
        ("GET", "/v1/executions", {"params": {"after": 2**63}}, "after"),
        ("GET", "/v1/metrics/agents", {"params": {"after": 2**63}}, "after"),
    ],
)
def test_integers_beyond_their_columns_are_refused(
    service: tuple[Runtime, TestClient],
    method: str,
    path: str,
    kwargs: dict[str, Any],
    field: str,
) -> None:
    runtime, client = service
    before = runtime.executions.last_position()
    response = client.request(method, path, headers=ADMIN, **kwargs)
    assert response.status_code == 422, response.text
    assert response.json()["type"] == "/problems/invalid-request"
    assert field in response.json()["detail"]
    assert runtime.executions.last_position() == before


def test_the_largest_process_version_is_a_clean_not_found(
    service: tuple[Runtime, TestClient],
) -> None:
    _, client = service
    response = client.get("/v1/processes/echo", params={"version": 2**31 - 1}, headers=USER)
    assert response.status_code == 422, response.text  # unknown-process: a rule, not a 500
    assert response.json()["type"] == "/problems/unknown-process"


def test_clean_text_still_starts_and_a_tail_with_a_nul_is_refused_with_4400(
    service: tuple[Runtime, TestClient],
) -> None:
    _, client = service
    started = client.post(
        "/v1/executions", json={"process": "echo", "input": {"s": "ünï 🚀"}}, headers=USER
    )
    assert started.status_code == 201, started.text
    with client.websocket_connect("/v1/stream?types=%00", headers=USER) as ws:
        message = ws.receive()
    assert message["type"] == "websocket.close"
    assert message["code"] == 4400
    assert "NUL" in message["reason"]


def test_a_tail_after_beyond_the_largest_position_is_refused_with_4400(
    service: tuple[Runtime, TestClient],
) -> None:
    _, client = service
    with client.websocket_connect(f"/v1/stream?after={2**63}", headers=USER) as ws:
        message = ws.receive()
    assert (message["type"], message["code"]) == ("websocket.close", 4400)
