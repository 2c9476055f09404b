"""The one check of text at the edge: no NUL and no lone surrogate reaches the store.

A plain ASGI middleware in front of every route and socket. It looks at the path, the
query parameters and JSON bodies, and answers 422 problem+json naming the field before
any route runs, so nothing is stored. Bodies are parsed here only when they hold a
`\\u` escape, the only way JSON can spell either character, so most requests pay a
byte search.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent_ledger.application.storable_text import UnstorableTextError, check_storable, text_problem
from agent_ledger.infrastructure.api import errors

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
INVALID_TEXT = "invalid-text"


class InputBoundary:
    """Refuses requests whose path, query or JSON body holds text the store cannot hold."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        try:
            check_target(scope)
        except UnstorableTextError as error:
            await _refuse(scope, receive, send, error)
            return
        if scope["type"] == "http" and scope["method"] in _BODY_METHODS:
            body, gone = await _read_body(receive)
            if gone:
                return
            try:
                check_body(body)
            except UnstorableTextError as error:
                await _refuse(scope, receive, send, error)
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send)


def check_target(scope: Scope) -> None:
    """The path and each query parameter (name and value)."""
    problem = text_problem(scope["path"])
    if problem is not None:
        raise UnstorableTextError("the path", problem)
    query: bytes = scope.get("query_string", b"")
    if b"%00" not in query:  # percent-decoding with errors="replace" leaves no surrogates
        return
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        problem = text_problem(name) or text_problem(value)
        if problem is not None:
            shown = name.replace("\x00", "\\u0000")  # a NUL in the name is shown escaped
            raise UnstorableTextError(f"query parameter {shown!r}", problem)


def check_body(body: bytes) -> None:
    """A JSON body's strings and keys; a body that is not JSON is left to the route."""
    if b"\\u" not in body:
        return
    try:
        document: Any = json.loads(body)
    except (ValueError, RecursionError):
        return  # the route answers 400 malformed-json
    check_storable(document, "body")


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The whole body, and whether the client left while sending it."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"", True
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), False


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()  # after the body: wait for the disconnect as usual
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _refuse(scope: Scope, receive: Receive, send: Send, error: UnstorableTextError) -> None:
    detail = f"{error}; text may not contain NUL or lone surrogates"
    if scope["type"] == "websocket":  # as the tail refuses a bad request: 4400 after the handshake
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 4400, "reason": detail[:120]})
        return
    response = errors.problem(
        422, INVALID_TEXT, "Text the store cannot hold", detail, field=error.field
    )
    await response(scope, receive, send)
