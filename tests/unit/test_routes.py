"""The executions API in-process over the embedded SQLite store in a temporary directory:
start, get, list and cancel, and the problems they answer. No worker runs, so what a test
starts stays pending until it is cancelled.

The same routes over PostgreSQL, with the engine running, are tests/integration's; over a
real server and network, tests/e2e's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_ledger.infrastructure.runtime import Runtime
from agent_ledger.infrastructure.settings import Settings
from tests.support import tokens
from tests.support.asgi_client import TestClient, serving
from tests.support.walking_skeleton import assert_problem, oversized_start

SECRET = "routes-unit-secret-" + "s" * 32
USER_A = tokens.bearer(SECRET, "user-a")
USER_B = tokens.bearer(SECRET, "user-b")
ECHO = {"process": "echo", "input": {"hello": "world"}}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, TestClient]]:
    """The API over the embedded store (no `database_url`), without the worker."""
    data_dir: Path = tmp_path_factory.mktemp("routes")
    with serving(Settings(data_dir=data_dir, jwt_secret=SECRET), engine=False) as running:
        yield running


@pytest.fixture
def client(service: tuple[Runtime, TestClient]) -> TestClient:
    return service[1]


def started(client: TestClient, headers: dict[str, str] = USER_A, **extra: str) -> str:
    response = client.post("/v1/executions", json=ECHO, headers={**headers, **extra})
    assert response.status_code == 201, response.text
    execution_id: str = response.json()["id"]
    return execution_id


def test_a_start_is_recorded_and_its_owner_reads_it_pending(client: TestClient) -> None:
    response = client.post("/v1/executions", json=ECHO, headers=USER_A)

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["process"] == "echo"
    assert body["created"] is True
    view = client.get(
        f"/v1/executions/{body['id']}", headers=USER_A, params={"after": body["position"]}
    )
    assert view.status_code == 200, view.text
    assert view.json()["status"] == "pending"
    assert view.json()["user_id"] == "user-a"
    assert [step["id"] for step in view.json()["steps"]] == ["echo"]
    history = client.get(f"/v1/executions/{body['id']}/events", headers=USER_A)
    assert [m["type"] for m in history.json()["items"]] == ["execution_started"]


def test_a_user_lists_only_their_own_executions(client: TestClient) -> None:
    mine = started(client, USER_A)
    theirs = client.post("/v1/executions", json=ECHO, headers=USER_B).json()
    read_after = {"after": theirs["position"]}  # the list is a read model: read your writes

    listed_a = client.get("/v1/executions", headers=USER_A, params=read_after)
    listed_b = client.get("/v1/executions", headers=USER_B, params=read_after)

    assert listed_a.status_code == 200, listed_a.text
    ids_a = {item["id"] for item in listed_a.json()["items"]}
    ids_b = {item["id"] for item in listed_b.json()["items"]}
    assert mine in ids_a
    assert theirs["id"] not in ids_a
    assert theirs["id"] in ids_b
    assert mine not in ids_b


def test_another_users_execution_is_not_found(client: TestClient) -> None:
    execution_id = started(client, USER_A)

    for response in (
        client.get(f"/v1/executions/{execution_id}", headers=USER_B),
        client.get(f"/v1/executions/{execution_id}/events", headers=USER_B),
        client.post(f"/v1/executions/{execution_id}/cancel", headers=USER_B),
        client.get(f"/v1/executions/{uuid.uuid4()}", headers=USER_A),
    ):
        assert_problem(response, 404, "not-found")


def test_a_cancellation_is_accepted_once_and_repeated_without_a_new_event(
    client: TestClient,
) -> None:
    execution_id = started(client, USER_A)

    first = client.post(f"/v1/executions/{execution_id}/cancel", headers=USER_A)
    again = client.post(f"/v1/executions/{execution_id}/cancel", headers=USER_A)

    assert first.status_code == 202, first.text
    assert again.status_code == 202, again.text
    assert again.json()["position"] == first.json()["position"]
    view = client.get(
        f"/v1/executions/{execution_id}",
        headers=USER_A,
        params={"after": first.json()["position"]},
    )
    assert view.json()["cancellation_requested"] is True


def test_an_idempotency_key_replays_its_start_and_refuses_another_body(
    client: TestClient,
) -> None:
    key = f"unit-{uuid.uuid4()}"
    execution_id = started(client, USER_A, **{"Idempotency-Key": key})

    replayed = client.post("/v1/executions", json=ECHO, headers={**USER_A, "Idempotency-Key": key})
    conflicting = client.post(
        "/v1/executions",
        json={**ECHO, "input": {"other": True}},
        headers={**USER_A, "Idempotency-Key": key},
    )

    assert replayed.status_code == 200, replayed.text
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.json()["id"] == execution_id
    assert_problem(conflicting, 409, "idempotency-key-reused")


BAD_STARTS: dict[str, tuple[dict[str, Any], int, str]] = {
    "malformed JSON": (
        {"content": b'{"process": ', "headers": {**USER_A, "Content-Type": "application/json"}},
        400,
        "malformed-json",
    ),
    "unknown process": (
        {"json": {"process": "nope", "input": {}}, "headers": USER_A},
        422,
        "unknown-process",
    ),
    "oversized input": ({"json": oversized_start(), "headers": USER_A}, 413, "input-too-large"),
    "missing token": ({"json": ECHO}, 401, "unauthenticated"),
    "expired token": (
        {"json": ECHO, "headers": tokens.bearer(SECRET, "user-a", ttl=-60)},
        401,
        "unauthenticated",
    ),
    "another secret's token": (
        {"json": ECHO, "headers": tokens.bearer("another-secret-" + "x" * 32, "user-a")},
        401,
        "unauthenticated",
    ),
}


@pytest.mark.parametrize("case", BAD_STARTS)
def test_a_bad_start_gets_a_problem_and_stores_nothing(
    service: tuple[Runtime, TestClient], case: str
) -> None:
    runtime, client = service
    request, status, kind = BAD_STARTS[case]
    before = runtime.executions.last_position()

    response = client.post("/v1/executions", **request)

    assert_problem(response, status, kind)
    assert runtime.executions.last_position() == before
