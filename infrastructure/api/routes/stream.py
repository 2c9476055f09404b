"""The live tail over WebSocket: catch-up from the store, then live, with no gap or repeat."""

from __future__ import annotations

import asyncio
import contextlib

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from agent_ledger.application.path_timing import mark
from agent_ledger.infrastructure.api.tail import CloseCode, Ended
from agent_ledger.infrastructure.api.tail_session import (
    TailRefusedError,
    TailRequest,
    TailService,
    TailSession,
)
from agent_ledger.infrastructure.auth.tokens import AuthenticationError, bearer_token

router = APIRouter(tags=["stream"])

_GONE = (WebSocketDisconnect, RuntimeError, OSError)  # the client went away mid-send


@router.websocket("/v1/stream")
async def stream(websocket: WebSocket) -> None:
    """Events of the caller (or one execution, or every user for auditors), then live."""
    service: TailService = websocket.app.state.tail
    # registered before the handshake completes: a live-only client that starts an
    # execution once connected sees every one of its events
    try:
        token = bearer_token(websocket.headers.get("authorization"))
        request = TailRequest.parse(websocket.query_params)
        session = await service.open(token or websocket.query_params.get("access_token"), request)
    except AuthenticationError as error:
        await _refuse(websocket, CloseCode.UNAUTHENTICATED, str(error))
        return
    except TailRefusedError as refused:
        await _refuse(websocket, refused.code, refused.detail)
        return
    try:
        await websocket.accept()
    except _GONE:
        session.close()
        return
    # whichever ends first ends the other: a client's close (or a dropped connection) stops
    # at once a send that waits on a full socket, and the subscription is let go then
    tasks = (
        asyncio.create_task(_send(websocket, session)),
        asyncio.create_task(_watch_client(websocket)),
    )
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        try:
            await asyncio.wait(tasks)  # unlike gather, raises only this handler's own cancellation
        finally:
            session.close()
    for task in tasks:
        if not task.cancelled() and (failure := task.exception()) is not None:
            raise failure


async def _send(websocket: WebSocket, session: TailSession) -> None:
    """Send the session's frames; its end closes the connection with a code and reason."""
    with contextlib.suppress(*_GONE):
        async for frame in session.frames():
            if isinstance(frame, Ended):
                await websocket.close(frame.code, frame.reason[:120])
                return
            mark("tail.send", getattr(frame, "position", ""))
            await websocket.send_text(frame.text)


async def _refuse(websocket: WebSocket, code: CloseCode, reason: str) -> None:
    """Refusals are told after the handshake, with a close code the client can act on."""
    with contextlib.suppress(*_GONE):
        await websocket.accept()
        await websocket.close(code, reason[:120])


async def _watch_client(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends, until it closes or the connection drops."""
    with contextlib.suppress(*_GONE):
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass
