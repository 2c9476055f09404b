"""Fans the change feed out to live subscribers, each with a bounded queue."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from application.event_messages import to_message
from application.executions import LoggedEvent

Message = dict[str, Any]


@dataclass(eq=False)
class Subscriber:
    """One live connection: what it may see, and what is waiting to be sent to it."""

    user_id: str | None  # None: every user's events (auditors)
    execution_id: str | None
    max_queue: int
    queue: asyncio.Queue[Message | None] = field(default_factory=asyncio.Queue)
    overflowed: bool = False

    def accepts(self, message: Message) -> bool:
        return (self.user_id is None or message["user_id"] == self.user_id) and (
            self.execution_id is None or message["execution_id"] == self.execution_id
        )


class TailHub:
    """Receives batches from the change feed's thread and queues them on the API's loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_queue: int = 10_000):
        self.loop = loop
        self.max_queue = max_queue
        self.subscribers: set[Subscriber] = set()

    def publish(self, events: list[LoggedEvent]) -> None:
        """Called on the change feed's thread."""
        messages = [to_message(e) for e in events]
        self.loop.call_soon_threadsafe(self._fan_out, messages)

    def add(self, user_id: str | None, execution_id: str | None) -> Subscriber:
        subscriber = Subscriber(user_id, execution_id, self.max_queue)
        self.subscribers.add(subscriber)
        return subscriber

    def remove(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    def close_all(self) -> None:
        for subscriber in self.subscribers:
            subscriber.queue.put_nowait(None)
        self.subscribers.clear()

    def _fan_out(self, messages: list[Message]) -> None:
        for subscriber in list(self.subscribers):
            for message in messages:
                if not subscriber.accepts(message):
                    continue
                if subscriber.queue.qsize() >= subscriber.max_queue:
                    subscriber.overflowed = True  # closed rather than buffered without bound
                    subscriber.queue.put_nowait(None)
                    self.subscribers.discard(subscriber)
                    break
                subscriber.queue.put_nowait(message)
