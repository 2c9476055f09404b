"""The live tail over WebSocket: catch-up from the store, then live, with no gap or repeat."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from uuid import UUID

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool

from application.event_messages import to_message
from application.executions import ExecutionNotFoundError
from infrastructure.api.tail import Subscriber, TailHub
from infrastructure.auth import AuthenticationError, Caller, authenticate, bearer_token
from infrastructure.runtime import Runtime

router = APIRouter(tags=["stream"])

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001  # server shutting down: reconnect with after=<last position>
CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_SLOW = 4408  # the subscriber fell behind: reconnect with after=<last position>


@router.websocket("/v1/stream")
async def stream(
    websocket: WebSocket,
    after: int | None = None,
    execution_id: UUID | None = None,
    access_token: str | None = None,
) -> None:
    """Events of the caller's executions (or one execution), after a position, then live."""
    runtime: Runtime = websocket.app.state.runtime
    hub: TailHub = websocket.app.state.tail_hub
    await websocket.accept()
    try:
        token = bearer_token(websocket.headers.get("authorization")) or access_token
        caller = authenticate(token, websocket.app.state.jwt_secret)
    except AuthenticationError as error:
        await websocket.close(CLOSE_UNAUTHENTICATED, str(error)[:120])
        return
    if execution_id is not None and not await _may_read(runtime, execution_id, caller):
        await websocket.close(CLOSE_NOT_FOUND, "execution not found")
        return
    subscriber = hub.add(caller.owner_filter, str(execution_id) if execution_id else None)
    try:
        await _serve(websocket, runtime, subscriber, after, execution_id)
    except WebSocketDisconnect:
        pass
    finally:
        hub.remove(subscriber)


async def _serve(
    websocket: WebSocket,
    runtime: Runtime,
    subscriber: Subscriber,
    after: int | None,
    execution_id: UUID | None,
) -> None:
    receiver = asyncio.create_task(_drain_client(websocket))
    try:
        last = 0
        if after is not None:  # the live queue is already filling: catch up, then dedupe
            last = await _catch_up(websocket, runtime, subscriber, after, execution_id)
        while True:
            message = await _next(subscriber, receiver)
            if message is None:
                code = CLOSE_TOO_SLOW if subscriber.overflowed else CLOSE_GOING_AWAY
                reason = (
                    "subscriber too slow; resume with after="
                    if subscriber.overflowed
                    else "server shutting down; resume with after="
                )
                await websocket.close(code, f"{reason}{last}")
                return
            if message["position"] <= last:
                continue
            await websocket.send_json(message)
            last = message["position"]
    finally:
        receiver.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect):
            await receiver


async def _catch_up(
    websocket: WebSocket,
    runtime: Runtime,
    subscriber: Subscriber,
    after: int,
    execution_id: UUID | None,
) -> int:
    last = after
    while True:
        if execution_id is not None:
            events = await run_in_threadpool(
                runtime.executions.get_history, execution_id, after=last, limit=500
            )
        else:
            events = await run_in_threadpool(runtime.executions.read_log, after=last, limit=500)
        if not events:
            return last
        for logged in events:
            message = to_message(logged)
            if subscriber.accepts(message):
                await websocket.send_json(message)
            last = logged.position


async def _next(subscriber: Subscriber, receiver: asyncio.Task[None]) -> dict[str, Any] | None:
    getter = asyncio.ensure_future(subscriber.queue.get())
    done, _ = await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
    if getter in done:
        return getter.result()
    getter.cancel()
    receiver.result()  # re-raises the client's disconnect
    raise WebSocketDisconnect(CLOSE_NORMAL)


async def _drain_client(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends, so a disconnect is noticed at once."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", CLOSE_NORMAL))


async def _may_read(runtime: Runtime, execution_id: UUID, caller: Caller) -> bool:
    try:
        await run_in_threadpool(
            runtime.executions.get_execution, execution_id, user_id=caller.owner_filter, version=1
        )
    except ExecutionNotFoundError:
        return False
    return True
