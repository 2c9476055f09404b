"""A WebSocket subscription is registered before its handshake completes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_ledger.infrastructure.api.app import create_app
from agent_ledger.infrastructure.auth.tokens import issue_token
from agent_ledger.infrastructure.runtime import Runtime
from agent_ledger.infrastructure.settings import Settings
from tests.support.asgi_client import TestClient, receive_json

pytestmark = pytest.mark.postgres

SECRET = f"registration-{uuid.uuid4().hex}{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def client(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data_dir: Path = tmp_path_factory.mktemp("data")
    runtime = Runtime.start(
        Settings(database_url=postgres_url, jwt_secret=SECRET, data_dir=data_dir)
    )
    try:
        with TestClient(create_app(runtime.settings, runtime)) as test_client:
            yield test_client
    finally:
        runtime.stop()


def test_a_live_only_client_connected_is_already_subscribed(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Registration takes a while (a revocation lookup); the handshake waits for it, so an
    execution the client starts once connected cannot slip by unseen."""
    service = client.app.state.tail  # type: ignore[attr-defined]
    lookup = service.revocations.revoked_at

    def slow_lookup(subject: str) -> float | None:
        time.sleep(0.3)
        return lookup(subject)  # type: ignore[no-any-return]

    monkeypatch.setattr(service.revocations, "revoked_at", slow_lookup)
    user = f"live-{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {issue_token(SECRET, user)}"}
    before = service.hub.count
    with client.websocket_connect("/v1/stream", headers=headers) as ws:
        assert service.hub.count == before + 1  # registered by the time the client is in
        started = client.post(
            "/v1/executions", json={"process": "echo", "input": {"n": 1}}, headers=headers
        )
        assert started.status_code == 201, started.text
        message = receive_json(ws)
        while message["type"] == "heartbeat":
            message = receive_json(ws)
    assert message["type"] == "execution_started"
    assert message["execution_id"] == started.json()["id"]
