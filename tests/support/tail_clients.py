"""Small WebSocket and SSE clients of the tail, for tests and the benchmark."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

Message = dict[str, Any]


def ws_url(base: str, query: str) -> str:
    return base.replace("http", "ws", 1) + f"/v1/stream?{query}"


@contextmanager
def websocket(base: str, token: str, query: str = "") -> Iterator[ClientConnection]:
    headers = {"Authorization": f"Bearer {token}"}
    with connect(
        ws_url(base, query), additional_headers=headers, open_timeout=10, close_timeout=5
    ) as ws:
        yield ws


class SseStream:
    """One open `/v1/stream/sse` response, read message by message."""

    def __init__(self, response: httpx.Response):
        self.response = response
        self._lines = response.iter_lines()

    def next(self) -> tuple[str, str | None, Message]:
        """The next message as (event name, id, data); heartbeats are named `heartbeat`."""
        event, ident, data = "message", None, ""
        for line in self._lines:
            if not line:
                if data:
                    return event, ident, json.loads(data)
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                event = value
            elif field == "id":
                ident = value
            elif field == "data":
                data += value
        raise EOFError("the stream ended")


@contextmanager
def sse(
    base: str, token: str, query: str = "", last_event_id: int | None = None, timeout: float = 10
) -> Iterator[SseStream]:
    headers = {"Authorization": f"Bearer {token}"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    with (
        httpx.Client(timeout=timeout) as client,
        client.stream("GET", f"{base}/v1/stream/sse?{query}", headers=headers) as response,
    ):
        yield SseStream(response)
