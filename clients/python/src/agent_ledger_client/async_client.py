"""The asyncio client: `AsyncClient(url, token)`, the same calls as `Client`, awaited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from contextlib import aclosing
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from agent_ledger_client import endpoints
from agent_ledger_client.client import RETRIES, _remaining
from agent_ledger_client.endpoints import AUTO, Call
from agent_ledger_client.schemas import (
    TERMINAL_EVENTS,
    Accepted,
    Event,
    Execution,
    ExecutionState,
    ExecutionSummary,
    Forked,
    SignalAccepted,
    SignalDelivered,
    Started,
    Verification,
)
from agent_ledger_client.tail import BUSY, Backoff, Next, Subscription

T = TypeVar("T")


class AsyncClient:
    """Agent Ledger over HTTP and WebSocket for asyncio; see `Client` for each call."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        token: str | None = None,
        *,
        token_provider: Callable[[], str] | None = None,
        timeout: float = 30.0,
        backoff: Backoff | None = None,
    ):
        self.url = url.rstrip("/")
        self.token = token if token is not None else token_provider() if token_provider else None
        self.token_provider = token_provider
        self.backoff = backoff or Backoff()
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def start(
        self,
        process: str,
        input: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = AUTO,
        version: int | None = None,
        thread_id: str | None = None,
        thread_policy: str | None = None,
    ) -> Started | SignalDelivered:
        """Start an execution; retried safely under one Idempotency-Key (a fresh one by default)."""
        options = {"version": version, "thread_id": thread_id, "thread_policy": thread_policy}
        return await self._send(endpoints.start(process, input, idempotency_key, **options))

    async def cancel(self, execution_id: UUID | str, reason: str | None = None) -> Accepted:
        """Request the cancellation of an execution."""
        return await self._send(endpoints.cancel(execution_id, reason))

    async def signal(
        self,
        execution_id: UUID | str,
        name: str,
        payload: Any = None,
        idempotency_key: str | None = None,
    ) -> SignalAccepted:
        """Send a signal to an execution."""
        return await self._send(endpoints.signal(execution_id, name, payload, idempotency_key))

    async def resume(self, execution_id: UUID | str, reason: str | None = None) -> Accepted:
        """Run a failed, timed-out or cancelled execution again."""
        return await self._send(endpoints.resume(execution_id, reason))

    async def fork(
        self, execution_id: UUID | str, from_step: str, input: dict[str, Any] | None = None
    ) -> Forked:
        """A new execution from `from_step` of this one."""
        return await self._send(endpoints.fork(execution_id, from_step, input))

    async def get(self, execution_id: UUID | str, *, after: int | None = None) -> Execution:
        """The execution's status view."""
        return await self._send(endpoints.get(execution_id, after))

    async def list(self, *, page_size: int = 50, **filters: Any) -> AsyncIterator[ExecutionSummary]:
        """The caller's executions, newest first, a page at a time."""
        if "from_" in filters:
            filters["from"] = filters.pop("from_")
        cursor: str | None = None
        while True:
            items, cursor = await self._send(endpoints.page(cursor, limit=page_size, **filters))
            for item in items:
                yield item
            if cursor is None:
                return

    async def events(
        self, execution_id: UUID | str, *, after: int = 0, page_size: int = 1000
    ) -> AsyncIterator[Event]:
        """The execution's stored history after a position."""
        next_after: int | None = after
        while next_after is not None:
            call = endpoints.events(execution_id, next_after, page_size)
            items, next_after = await self._send(call)
            for item in items:
                yield item

    async def state(
        self,
        execution_id: UUID | str,
        *,
        version: int | None = None,
        at: datetime | str | None = None,
    ) -> ExecutionState:
        """The state rebuilt from its events at a version or a time."""
        return await self._send(endpoints.state(execution_id, version, at))

    async def verify(self, execution_id: UUID | str) -> Verification:
        """Check the execution's hash chain."""
        return await self._send(endpoints.verify(execution_id))

    async def export(self, execution_id: UUID | str) -> str:
        """The audit bundle (JSON Lines)."""
        return await self._send(endpoints.export(execution_id))

    async def stream(
        self,
        *,
        after: int | None = None,
        execution_id: UUID | str | None = None,
        types: Iterable[str] | None = None,
        all_users: bool = False,
        max_reconnects: int | None = None,
        timeout: float | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Events as they are stored, each once and in order, resuming by itself; `after=None`
        starts from the store's head when the iteration begins (`Client.stream` reads it
        when called)."""
        start = await self._head() if after is None else after
        subscription = Subscription(self.url, start, execution_id, types, all_users)
        error: Exception
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                async with connect(
                    subscription.url(),
                    additional_headers=self._auth(),
                    open_timeout=_remaining(deadline, 10.0),
                    close_timeout=1,
                ) as websocket:
                    while True:
                        raw = await asyncio.wait_for(websocket.recv(), _remaining(deadline, None))
                        event = subscription.accept(raw)
                        if event is not None:
                            yield event
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
                reason = closed.rcvd.reason if closed.rcvd else ""
                step = subscription.closed(code, reason, self.token_provider is not None)
                busy, error = code == BUSY, closed
            except InvalidStatus as refused:
                status = refused.response.status_code
                step = subscription.handshake_refused(status, self.token_provider is not None)
                busy, error = status == 429, refused
            except (OSError, InvalidHandshake) as dropped:  # refused, reset, cut mid-handshake
                _remaining(deadline, None)
                step, busy, error = Next.RECONNECT, False, dropped
            if max_reconnects is not None and subscription.failures >= max_reconnects:
                raise error
            if step is Next.REFRESH_TOKEN and self.token_provider is not None:
                self.token = self.token_provider()
            wait = self.backoff.delay(subscription.failures, busy)
            subscription.failures += 1
            await asyncio.sleep(min(wait, _remaining(deadline, wait) or wait))

    async def wait(self, execution_id: UUID | str, *, timeout: float | None = None) -> Execution:
        """Until the execution has finished; its final status view."""
        execution = await self.get(execution_id)
        if execution.finished:
            return execution
        ends = self.stream(
            after=execution.last_position,
            execution_id=execution_id,
            types=TERMINAL_EVENTS,
            timeout=timeout,
        )
        async with aclosing(ends):
            async for event in ends:
                return await self.get(execution_id, after=event.position)
        raise AssertionError("the tail ended without an end")

    async def _head(self) -> int | None:
        """The store's newest position (`/readyz`), or None (live only) if it cannot say."""
        try:
            position = (await self._http.get("/readyz")).json().get("store_position")
        except (httpx.TransportError, ValueError):
            return None
        return position if isinstance(position, int) else None

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def _send(self, call: Call[T], refreshed: bool = False) -> T:
        for attempt in range(RETRIES + 1):
            try:
                response = await self._http.request(
                    call.method,
                    call.path,
                    params=call.params,
                    json=call.json,
                    headers={**self._auth(), **call.headers},
                )
            except httpx.TransportError:
                if not call.retry_safe or attempt == RETRIES:
                    raise
                await asyncio.sleep(self.backoff.delay(attempt))
                continue
            if response.status_code == 401 and self.token_provider and not refreshed:
                self.token = self.token_provider()
                return await self._send(call, refreshed=True)
            if response.status_code == 503 and call.retry_safe and attempt < RETRIES:
                await asyncio.sleep(self.backoff.delay(attempt))
                continue
            return call.read(response)
        raise AssertionError("unreachable")
