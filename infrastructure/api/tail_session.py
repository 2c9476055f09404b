"""One tail subscription, whatever carries it: checks at open, catch-up, then live."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import jwt
from fastapi.concurrency import run_in_threadpool
from sse_starlette.sse import AppStatus

from agent_ledger.application.backoff import Backoff
from agent_ledger.application.event_log import to_message
from agent_ledger.application.executions import ExecutionNotFoundError
from agent_ledger.application.tail_filter import TailFilter, UnknownEventTypeError, parse_types
from agent_ledger.infrastructure.api.bounds import INT64_MAX
from agent_ledger.infrastructure.api.tail import (
    CloseCode,
    Ended,
    Outgoing,
    Subscriber,
    TailHub,
    TooManySubscriptionsError,
)
from agent_ledger.infrastructure.api.tail_reader import TailReader
from agent_ledger.infrastructure.auth.revocations import TokenRevocations
from agent_ledger.infrastructure.auth.tokens import AuthenticationError, Caller, authenticate
from agent_ledger.infrastructure.feed.reconnect import unavailable
from agent_ledger.infrastructure.runtime import Runtime
from agent_ledger.infrastructure.settings import Settings

log = logging.getLogger(__name__)


class TailRefusedError(Exception):
    """The subscription cannot open: a close code for WebSocket, a problem for SSE."""

    def __init__(self, code: CloseCode, status: int, kind: str, detail: str):
        super().__init__(detail)
        self.code, self.status, self.kind, self.detail = code, status, kind, detail


@dataclass(frozen=True)
class Heartbeat:
    """Sent when idle: every event of the subscription up to `position` has been sent."""

    position: int

    @property
    def text(self) -> str:
        return json.dumps({"type": "heartbeat", "position": self.position})


Frame = Outgoing | Heartbeat | Ended


@dataclass(frozen=True)
class TailRequest:
    """What a client asked for, from its query string (and SSE's `Last-Event-ID`)."""

    after: int | None = None
    execution_id: UUID | None = None
    types: frozenset[str] = frozenset()
    all_users: bool = False
    user_id: str | None = None

    @classmethod
    def parse(cls, query: Mapping[str, str], last_event_id: str | None = None) -> TailRequest:
        """Validate the parameters; a bad one refuses the subscription with a clear reason."""
        try:
            after_text = last_event_id or query.get("after")
            after = None if after_text in (None, "") else int(str(after_text))
            if after is not None and not 0 <= after <= INT64_MAX:
                raise ValueError(f"after must be a position, 0 to {INT64_MAX}")
            execution = query.get("execution_id")
            all_users = (query.get("all_users") or "false").lower()
            if all_users not in {"true", "false", "1", "0"}:
                raise ValueError("all_users must be true or false")
            return cls(
                after=after,
                execution_id=UUID(execution) if execution else None,
                types=parse_types(query.get("types")),
                all_users=all_users in {"true", "1"},
                user_id=query.get("user_id") or None,
            )
        except (ValueError, UnknownEventTypeError) as error:
            raise TailRefusedError(
                CloseCode.BAD_REQUEST, 422, "invalid-request", f"invalid stream request: {error}"
            ) from None


@dataclass
class TailService:
    """What every subscription in this process shares."""

    runtime: Runtime
    hub: TailHub
    reader: TailReader
    revocations: TokenRevocations
    jwt_secret: str
    heartbeat_interval: float = 15.0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    def start(cls, runtime: Runtime, settings: Settings, jwt_secret: str) -> TailService:
        """Subscribe to this process's event feed and watch for revocations and shutdown."""
        hub = TailHub(
            asyncio.get_running_loop(),
            max_queue=settings.tail_queue_size,
            max_per_user=settings.tail_max_per_user,
        )
        service = cls(
            runtime,
            hub,
            TailReader(runtime.executions, runtime.read_engine),
            TokenRevocations(runtime.read_engine),
            jwt_secret,
            heartbeat_interval=settings.tail_heartbeat_interval,
        )
        runtime.feed.subscribe(hub.publish, hub.wanted_types)
        service._spawn(service._watch(settings.revocation_check_interval))
        return service

    async def stop(self) -> None:
        """Close every subscriber with 1012 (reconnect and resume) and stop watching."""
        self.hub.close_all()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def revoke(self, subject: str) -> float:
        """Void `subject`'s tokens issued up to now; ends their subscriptions here at once."""
        revoked_at = await run_in_threadpool(self.revocations.revoke, subject)
        self.hub.apply_revocations({**self.hub.revoked, subject: revoked_at})
        return revoked_at

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _watch(self, revocation_interval: float) -> None:
        """Re-read revocations now and then; on server shutdown, close every subscriber."""
        next_read = 0.0
        failures = Backoff(  # logged once when reading fails, once when it works again
            "reading token revocations",
            log,
            first=revocation_interval,
            cap=revocation_interval,
            expected=unavailable,
        )
        while not AppStatus.should_exit:
            now = time.monotonic()
            if now >= next_read:
                next_read = now + revocation_interval
                try:
                    revoked = await run_in_threadpool(self.revocations.all)
                except Exception as error:
                    failures.failed(error)
                else:
                    failures.succeeded()
                    self.hub.apply_revocations(revoked)
            await asyncio.sleep(0.1)
        self.hub.close_all()  # before uvicorn drops the connections, so each gets a reason

    async def open(self, token: str | None, request: TailRequest) -> TailSession:
        """Authenticate, authorise and register a subscription, or refuse it."""
        caller, issued_at, expires_at = self._credentials(token)
        revoked_at = await run_in_threadpool(self.revocations.revoked_at, caller.user_id)
        if revoked_at is not None and issued_at <= revoked_at:
            raise TailRefusedError(CloseCode.FORBIDDEN, 403, "forbidden", "the token was revoked")
        selection = await self._selection(caller, request)
        try:
            subscriber = self.hub.add(caller.user_id, issued_at, selection)
        except TooManySubscriptionsError as error:
            raise TailRefusedError(
                CloseCode.TOO_MANY, 429, "too-many-subscriptions", str(error)
            ) from None
        return TailSession(self, subscriber, request.after, expires_at)

    def _credentials(self, token: str | None) -> tuple[Caller, float, float]:
        try:
            caller = authenticate(token, self.jwt_secret)
        except AuthenticationError as error:
            raise TailRefusedError(
                CloseCode.UNAUTHENTICATED, 401, "unauthenticated", str(error)
            ) from None
        claims = jwt.decode(str(token), options={"verify_signature": False})  # verified above
        return caller, float(claims.get("iat", 0)), float(claims["exp"])

    async def _selection(self, caller: Caller, request: TailRequest) -> TailFilter:
        wanted = request.user_id or caller.user_id
        if (request.all_users or wanted != caller.user_id) and not caller.is_auditor:
            raise TailRefusedError(
                CloseCode.FORBIDDEN, 403, "forbidden", "only auditors may follow other users"
            )
        if request.execution_id is not None:
            try:
                await run_in_threadpool(
                    self.runtime.executions.get_execution,
                    request.execution_id,
                    user_id=caller.owner_filter,
                    version=1,
                )
            except ExecutionNotFoundError:
                raise TailRefusedError(
                    CloseCode.NOT_FOUND, 404, "not-found", "execution not found"
                ) from None
            wanted = caller.owner_filter  # type: ignore[assignment]
        user_id = None if request.all_users else wanted
        return TailFilter(user_id, request.execution_id, request.types)


class TailSession:
    """Catch-up from the store after `after`, then the live queue, with no gap or repeat."""

    def __init__(
        self, service: TailService, subscriber: Subscriber, after: int | None, expires_at: float
    ):
        self.service = service
        self.subscriber = subscriber
        self.after = after
        self.start = service.hub.position  # live-only: everything after this arrives queued
        delay = max(0.0, expires_at - time.time())
        self._expiry = service.hub.loop.call_later(delay, self._expire)

    async def frames(self) -> AsyncIterator[Frame]:
        """Every frame to send, in order; ends with the reason the subscription ended."""
        hub, reader = self.service.hub, self.service.reader
        last = self.start if self.after is None else self.after
        while self.after is not None:  # catch-up: the live queue is already filling
            ended = self.subscriber.ended
            if ended is not None and ended.code is CloseCode.TOO_SLOW:
                # the live queue filled while catching up: the store still has it all
                self.subscriber = hub.renew(self.subscriber)
            elif ended is not None:
                yield Ended(ended.code, f"{ended.reason}; resume with after={last}")
                return
            events, reached = await run_in_threadpool(reader.page, self.subscriber.selection, last)
            for logged in events:
                message = to_message(logged)
                yield Outgoing(logged.position, message, json.dumps(message))
            if reached == last:
                break
            last = reached
        while True:
            item = await self.subscriber.next(self.service.heartbeat_interval)
            if item is None:
                yield Heartbeat(last if self.subscriber.pending else max(last, hub.position))
            elif isinstance(item, Ended):
                yield Ended(item.code, f"{item.reason}; resume with after={last}")
                return
            elif item.position > last:
                last = item.position
                yield item

    def close(self) -> None:
        """Release the subscription's place in the hub."""
        self._expiry.cancel()
        self.service.hub.remove(self.subscriber)

    def _expire(self) -> None:
        self.subscriber.end(CloseCode.UNAUTHENTICATED, "token expired")
        self.service.hub.remove(self.subscriber)
