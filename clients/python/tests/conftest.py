"""The SDK's tests: one real `agent-ledger serve` (embedded SQLite) for the whole run, and a
WebSocket proxy in front of it that cuts connections on purpose."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.server import Server, running_server

from agent_ledger_client import Backoff, Client

FAST = Backoff(initial=0.01, maximum=0.05, busy_minimum=0.05)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir: Path = tmp_path_factory.mktemp("sdk")
    with running_server(data_dir) as started:
        yield started


@pytest.fixture(scope="session")
def token(server: Server) -> str:
    return server.token("sdk-user")


@pytest.fixture
def client(server: Server, token: str) -> Iterator[Client]:
    with Client(server.url, token, backoff=FAST) as sdk:
        yield sdk
