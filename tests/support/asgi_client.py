"""Starlette's TestClient, imported once without its httpx2 deprecation notice; the API
served in-process over a running `Runtime`; a WebSocket receive that gives up instead of
hanging."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio

from agent_ledger.infrastructure.api.app import create_app
from agent_ledger.infrastructure.runtime import Runtime
from agent_ledger.infrastructure.settings import Settings

with warnings.catch_warnings():
    # starlette>=1.x prefers httpx2; the project pins httpx. Not the code under test.
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient
    from starlette.testclient import WebSocketTestSession

__all__ = ["TestClient", "WebSocketTestSession", "receive_json", "serving"]


@contextmanager
def serving(settings: Settings, **roles: bool) -> Iterator[tuple[Runtime, TestClient]]:
    """A Runtime on `settings` (`roles`: Runtime.start's `engine=`, `projector=`) and a
    client of the API over it, stopped afterwards."""
    runtime = Runtime.start(settings, **roles)
    try:
        with TestClient(create_app(settings, runtime)) as client:
            yield runtime, client
    finally:
        runtime.stop()


async def _receive_within(session: WebSocketTestSession, seconds: float) -> Any:
    with anyio.fail_after(seconds):
        return await session._send_rx.receive()


def receive_json(session: WebSocketTestSession, timeout: float = 10.0) -> Any:
    """The next JSON message; TimeoutError after `timeout`, WebSocketDisconnect on close."""
    message = session.portal.call(_receive_within, session, timeout)
    session._raise_on_close(message)
    return json.loads(message["text"])
