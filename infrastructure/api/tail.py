"""Fans the event feed out to live subscribers, each with a bounded queue."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict, deque
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from agent_ledger.application.event_log import LoggedEvent, to_message
from agent_ledger.application.path_timing import mark
from agent_ledger.application.tail_filter import TailFilter


class CloseCode(IntEnum):
    """Why the server ended a subscription (WebSocket close codes; SSE `close` messages)."""

    SERVICE_RESTART = 1012  # the server is stopping: reconnect and resume
    BAD_REQUEST = 4400
    UNAUTHENTICATED = 4401  # no, bad or expired token: get a new one, then resume
    FORBIDDEN = 4403  # token revoked, or asked for what the caller may not see
    NOT_FOUND = 4404
    TOO_SLOW = 4408  # fell behind: resume from the last position received
    TOO_MANY = 4429  # this user has too many open subscriptions


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message encoded once for every subscriber that receives it."""

    position: int
    message: dict[str, Any]
    text: str


@dataclass(frozen=True, slots=True)
class Ended:
    """The subscription is over, with a close code and a reason."""

    code: CloseCode
    reason: str


class TooManySubscriptionsError(Exception):
    """The user already holds as many open subscriptions as allowed."""


class Subscriber:
    """One open subscription: what it selects, whose it is, and what waits to be sent."""

    __slots__ = ("_ready", "ended", "issued_at", "max_queue", "pending", "selection", "subject")

    def __init__(self, subject: str, issued_at: float, selection: TailFilter, max_queue: int):
        self.subject = subject
        self.issued_at = issued_at
        self.selection = selection
        self.max_queue = max_queue
        self.pending: deque[Outgoing] = deque()
        self.ended: Ended | None = None
        self._ready = asyncio.Event()

    def push(self, item: Outgoing) -> bool:
        """Queue an event; False (and ended) if the queue is full."""
        if len(self.pending) >= self.max_queue:
            self.end(CloseCode.TOO_SLOW, "subscriber too slow")
            return False
        self.pending.append(item)
        self._ready.set()
        return True

    def end(self, code: CloseCode, reason: str) -> None:
        if self.ended is None:
            self.ended = Ended(code, reason)
        self._ready.set()

    async def next(self, timeout: float) -> Outgoing | Ended | None:
        """The next queued event, the end, or None when idle for `timeout` seconds."""
        if not self.pending and self.ended is None:
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return None
        if self.ended is not None:
            return self.ended
        return self.pending.popleft()


class TailHub:
    """Receives batches from the event feed's thread and queues them on the API's loop.

    Subscribers are kept by the user they follow, so an event costs work only for its own
    user's subscribers and the every-user ones (auditors), however many are connected.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, max_queue: int = 5000, max_per_user: int = 20
    ):
        self.loop = loop
        self.max_queue = max_queue
        self.max_per_user = max_per_user
        self.position = 0  # every event up to here has been queued to its subscribers
        self._by_user: dict[str | None, set[Subscriber]] = defaultdict(set)
        self._per_subject: dict[str, int] = defaultdict(int)
        self._revoked: dict[str, float] = {}
        self._types: frozenset[str] | None = frozenset()  # followed by someone; None: all

    def wanted_types(self) -> frozenset[str] | None:
        """The event types some subscriber here follows (None: every type)."""
        return self._types

    def publish(self, events: list[LoggedEvent], upto: int | None = None) -> None:
        """Called on the event feed's thread: encode once, then fan out on the loop.

        Events of users or types nobody here follows are not encoded at all. A subscription
        that registers meanwhile misses nothing: it catches up from the store after it
        registers.
        """
        if not events:
            if upto is not None:  # nothing anyone here follows: still, everything up to here
                self.loop.call_soon_threadsafe(self._fan_out, [], upto)
            return
        everyone = None in self._by_user  # read-only peeks from this thread are safe
        types = self._types
        batch = []
        for logged in events:
            if types is not None and logged.type not in types:
                continue  # not even decoded
            if not everyone and getattr(logged.event, "user_id", None) not in self._by_user:
                continue
            message = to_message(logged)
            batch.append(Outgoing(logged.position, message, json.dumps(message)))
        self.loop.call_soon_threadsafe(self._fan_out, batch, max(events[-1].position, upto or 0))

    def add(self, subject: str, issued_at: float, selection: TailFilter) -> Subscriber:
        """Register a subscription; it receives every event fanned out from now on."""
        if self._per_subject[subject] >= self.max_per_user:
            raise TooManySubscriptionsError(
                f"{subject!r} already has {self.max_per_user} open subscriptions"
            )
        subscriber = Subscriber(subject, issued_at, selection, self.max_queue)
        self._per_subject[subject] += 1
        self._by_user[selection.user_id].add(subscriber)
        self._follow_types()
        return subscriber

    def remove(self, subscriber: Subscriber) -> None:
        followers = self._by_user.get(subscriber.selection.user_id)
        if followers is None or subscriber not in followers:
            return
        followers.discard(subscriber)
        if not followers:
            del self._by_user[subscriber.selection.user_id]
        self._per_subject[subscriber.subject] -= 1
        if self._per_subject[subscriber.subject] <= 0:
            del self._per_subject[subscriber.subject]
        self._follow_types()

    def renew(self, subscriber: Subscriber) -> Subscriber:
        """A fresh registration in place of one that overflowed (used during catch-up)."""
        self.remove(subscriber)
        renewed = Subscriber(
            subscriber.subject, subscriber.issued_at, subscriber.selection, self.max_queue
        )
        self._per_subject[renewed.subject] += 1
        self._by_user[renewed.selection.user_id].add(renewed)
        self._follow_types()
        return renewed

    def _follow_types(self) -> None:
        """Which event types anyone here follows (read by `publish` on the feed's thread)."""
        types: set[str] = set()
        for followers in self._by_user.values():
            for subscriber in followers:
                if not subscriber.selection.types:
                    self._types = None
                    return
                types |= subscriber.selection.types
        self._types = frozenset(types)

    @property
    def count(self) -> int:
        return sum(len(s) for s in self._by_user.values())

    @property
    def revoked(self) -> dict[str, float]:
        return dict(self._revoked)

    def is_revoked(self, subject: str, issued_at: float) -> bool:
        revoked_at = self._revoked.get(subject)
        return revoked_at is not None and issued_at <= revoked_at

    def apply_revocations(self, revocations: dict[str, float]) -> None:
        """End every subscription whose token was issued at or before its subject's revocation."""
        self._revoked = dict(revocations)
        for followers in list(self._by_user.values()):
            for subscriber in list(followers):
                if self.is_revoked(subscriber.subject, subscriber.issued_at):
                    subscriber.end(CloseCode.FORBIDDEN, "token revoked")
                    self.remove(subscriber)

    def close_all(self, code: CloseCode = CloseCode.SERVICE_RESTART) -> None:
        """End every subscription (server shutdown: clients reconnect and resume)."""
        for followers in list(self._by_user.values()):
            for subscriber in list(followers):
                subscriber.end(code, "server shutting down")
                self.remove(subscriber)

    def _fan_out(self, batch: list[Outgoing], last: int | None = None) -> None:
        mark("tail.fan_out", last)
        everyone = self._by_user.get(None, set())
        for item in batch:
            user_id = item.message["user_id"]
            own = self._by_user.get(user_id, ()) if user_id is not None else ()
            for followers in (own, everyone):
                for subscriber in list(followers):
                    if subscriber.selection.accepts(item.message) and not subscriber.push(item):
                        self.remove(subscriber)
        if last is None and batch:
            last = batch[-1].position
        self.position = max(self.position, last or 0)
