"""Starlette's TestClient, imported once without its httpx2 deprecation notice, plus a
WebSocket receive that gives up instead of hanging."""

from __future__ import annotations

import json
import warnings
from typing import Any

import anyio

with warnings.catch_warnings():
    # starlette>=1.x prefers httpx2; the project pins httpx. Not the code under test.
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient
    from starlette.testclient import WebSocketTestSession

__all__ = ["TestClient", "WebSocketTestSession", "receive_json"]


async def _receive_within(session: WebSocketTestSession, seconds: float) -> Any:
    with anyio.fail_after(seconds):
        return await session._send_rx.receive()


def receive_json(session: WebSocketTestSession, timeout: float = 10.0) -> Any:
    """The next JSON message; TimeoutError after `timeout`, WebSocketDisconnect on close."""
    message = session.portal.call(_receive_within, session, timeout)
    session._raise_on_close(message)
    return json.loads(message["text"])
