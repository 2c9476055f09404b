"""The synchronous client: `Client(url, token)`."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import closing
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

import httpx
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import connect

from agent_ledger_client import endpoints
from agent_ledger_client.endpoints import AUTO, Call
from agent_ledger_client.errors import ApiError, AuthenticationError
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
RETRIES = 3
"""Extra tries of a GET or an idempotent command after a 503 or a dropped connection."""


class Client:
    """Agent Ledger over HTTP and WebSocket; `token_provider` is called for a new token on
    401 and on the tail's 4401 (an expired token), then the request or tail goes on."""

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
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # commands
    def start(
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
        return self._send(
            endpoints.start(
                process,
                input,
                idempotency_key,
                version=version,
                thread_id=thread_id,
                thread_policy=thread_policy,
            )
        )

    def cancel(self, execution_id: UUID | str, reason: str | None = None) -> Accepted:
        """Request the cancellation of an execution."""
        return self._send(endpoints.cancel(execution_id, reason))

    def signal(
        self,
        execution_id: UUID | str,
        name: str,
        payload: Any = None,
        idempotency_key: str | None = None,
    ) -> SignalAccepted:
        """Send a signal to an execution (a repeat with the same key is taken once)."""
        return self._send(endpoints.signal(execution_id, name, payload, idempotency_key))

    def resume(self, execution_id: UUID | str, reason: str | None = None) -> Accepted:
        """Run a failed, timed-out or cancelled execution again from where it stopped."""
        return self._send(endpoints.resume(execution_id, reason))

    def fork(
        self, execution_id: UUID | str, from_step: str, input: dict[str, Any] | None = None
    ) -> Forked:
        """A new execution from `from_step` of this one, the steps before it copied."""
        return self._send(endpoints.fork(execution_id, from_step, input))

    # queries
    def get(self, execution_id: UUID | str, *, after: int | None = None) -> Execution:
        """The execution's status view (once it has applied `after`, if given)."""
        return self._send(endpoints.get(execution_id, after))

    def list(self, *, page_size: int = 50, **filters: Any) -> Iterator[ExecutionSummary]:
        """The caller's executions, newest first, fetched a page at a time; filters:
        `status`, `process`, `thread_id`, `parent_id`, `from_`, `to`, `after`."""
        if "from_" in filters:
            filters["from"] = filters.pop("from_")
        cursor: str | None = None
        while True:
            items, cursor = self._send(endpoints.page(cursor, limit=page_size, **filters))
            yield from items
            if cursor is None:
                return

    def events(
        self, execution_id: UUID | str, *, after: int = 0, page_size: int = 1000
    ) -> Iterator[Event]:
        """The execution's stored history after a position, a page at a time."""
        next_after: int | None = after
        while next_after is not None:
            items, next_after = self._send(endpoints.events(execution_id, next_after, page_size))
            yield from items

    def state(
        self,
        execution_id: UUID | str,
        *,
        version: int | None = None,
        at: datetime | str | None = None,
    ) -> ExecutionState:
        """The state rebuilt from its events at a version or a time."""
        return self._send(endpoints.state(execution_id, version, at))

    def verify(self, execution_id: UUID | str) -> Verification:
        """Check the execution's hash chain."""
        return self._send(endpoints.verify(execution_id))

    def export(self, execution_id: UUID | str) -> str:
        """The audit bundle (JSON Lines) for `agent-ledger audit verify`."""
        return self._send(endpoints.export(execution_id))

    # the live tail
    def stream(
        self,
        *,
        after: int | None = None,
        execution_id: UUID | str | None = None,
        types: Iterable[str] | None = None,
        all_users: bool = False,
        max_reconnects: int | None = None,
        timeout: float | None = None,
    ) -> Generator[Event, None, None]:
        """Events as they are stored, each once and in order, reconnecting by itself from the
        last position yielded (after 1012, 4408, a dropped connection; 4429 waits longer;
        4401 asks `token_provider`). `after=None` starts from the store's head, read now
        (so events stored after this call are all yielded, even across a drop before the
        first one); `timeout` bounds the whole iteration (TimeoutError); `max_reconnects`
        in a row without a message, then the last error is raised."""
        start = self._head() if after is None else after
        subscription = Subscription(self.url, start, execution_id, types, all_users)
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._follow(subscription, deadline, max_reconnects)

    def _follow(
        self, subscription: Subscription, deadline: float | None, max_reconnects: int | None
    ) -> Generator[Event, None, None]:
        error: Exception
        while True:
            try:
                with connect(
                    subscription.url(),
                    additional_headers=self._auth(),
                    open_timeout=_remaining(deadline, 10.0),
                    close_timeout=1,
                ) as websocket:
                    while True:
                        raw = websocket.recv(timeout=_remaining(deadline, None))
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
                _remaining(deadline, None)  # the caller's timeout passed: TimeoutError
                step, busy, error = Next.RECONNECT, False, dropped
            if max_reconnects is not None and subscription.failures >= max_reconnects:
                raise error
            if step is Next.REFRESH_TOKEN and self.token_provider is not None:
                self.token = self.token_provider()
            wait = self.backoff.delay(subscription.failures, busy)
            subscription.failures += 1
            time.sleep(min(wait, _remaining(deadline, wait) or wait))

    def wait(self, execution_id: UUID | str, *, timeout: float | None = None) -> Execution:
        """Block until the execution has finished; its final status view."""
        execution = self.get(execution_id)
        if execution.finished:
            return execution
        ends = self.stream(
            after=execution.last_position,
            execution_id=execution_id,
            types=TERMINAL_EVENTS,
            timeout=timeout,
        )
        with closing(ends):
            for event in ends:
                return self.get(execution_id, after=event.position)
        raise AssertionError("the tail ended without an end")  # stream() never ends by itself

    def _head(self) -> int | None:
        """The store's newest position (`/readyz`), or None (live only) if it cannot say."""
        try:
            position = self._http.get("/readyz").json().get("store_position")
        except (httpx.TransportError, ValueError):
            return None
        return position if isinstance(position, int) else None

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _send(self, call: Call[T], refreshed: bool = False) -> T:
        for attempt in range(RETRIES + 1):
            try:
                response = self._http.request(
                    call.method,
                    call.path,
                    params=call.params,
                    json=call.json,
                    headers={**self._auth(), **call.headers},
                )
            except httpx.TransportError:
                if not call.retry_safe or attempt == RETRIES:
                    raise
                time.sleep(self.backoff.delay(attempt))
                continue
            if response.status_code == 401 and self.token_provider and not refreshed:
                self.token = self.token_provider()
                return self._send(call, refreshed=True)
            if response.status_code == 503 and call.retry_safe and attempt < RETRIES:
                time.sleep(self.backoff.delay(attempt))
                continue
            return call.read(response)
        raise AssertionError("unreachable")


def _remaining(deadline: float | None, default: float | None) -> float | None:
    """Seconds to the deadline (TimeoutError once passed), or `default` without one."""
    if deadline is None:
        return default
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the tail's timeout passed")
    return left


__all__ = ["ApiError", "AuthenticationError", "Client"]
