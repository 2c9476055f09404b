"""Refuse oversized request bodies before they are read (a plain ASGI middleware)."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from agent_ledger.infrastructure.api import errors


class BodyLimit:
    """Answers 413 problem+json when `Content-Length` exceeds the limit."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                    response = errors.problem(
                        413,
                        "request-too-large",
                        "Request too large",
                        f"the body is {int(value)} bytes; the limit is {self.limit}",
                    )
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)
