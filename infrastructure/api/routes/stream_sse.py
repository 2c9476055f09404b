"""The live tail as Server-Sent Events: the WebSocket's semantics, resumed by `Last-Event-ID`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from agent_ledger.infrastructure.api import errors
from agent_ledger.infrastructure.api.problem_responses import problems
from agent_ledger.infrastructure.api.tail import Ended
from agent_ledger.infrastructure.api.tail_session import (
    Heartbeat,
    TailRefusedError,
    TailRequest,
    TailService,
    TailSession,
)
from agent_ledger.infrastructure.auth.tokens import bearer_token

router = APIRouter(tags=["stream"])

SHUTDOWN_GRACE = 2.0  # seconds a stream has to send its `close` message when the server stops


@router.get(
    "/v1/stream/sse",
    response_model=None,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "the tail, until it closes"},
        **problems(401, 403, 404, 422, 429, 503),
    },
)
async def stream_sse(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    """Events as `text/event-stream`; each `id` is a position to resume from."""
    service: TailService = request.app.state.tail
    try:
        token = bearer_token(authorization) or request.query_params.get("access_token")
        session = await service.open(token, TailRequest.parse(request.query_params, last_event_id))
    except TailRefusedError as refused:
        return errors.problem(refused.status, refused.kind, _TITLES[refused.kind], refused.detail)
    return EventSourceResponse(_events(session), ping=0, shutdown_grace_period=SHUTDOWN_GRACE)


async def _events(session: TailSession) -> AsyncIterator[ServerSentEvent]:
    try:
        async for frame in session.frames():
            if isinstance(frame, Ended):
                close = {"type": "close", "code": int(frame.code), "reason": frame.reason}
                yield ServerSentEvent(json.dumps(close), event="close")
                return
            kind = "heartbeat" if isinstance(frame, Heartbeat) else None
            yield ServerSentEvent(frame.text, id=str(frame.position), event=kind)
    finally:
        session.close()


_TITLES = {
    "invalid-request": "Invalid request",
    "unauthenticated": "Authentication required",
    "forbidden": "Not allowed",
    "not-found": "Execution not found",
    "too-many-subscriptions": "Too many subscriptions",
}
