"""The embedded work feed: wake-ups for a worker process on the embedded store (SQLite,
no notifications): new executions and cancellation requests, nothing else.

A worker alone does not need every event decoded (the API's event feed does that for
the live tail); it polls the store (and is woken by saves in its own process) and reads
only the two kinds of event it reacts to, filtered by topic in SQL. On PostgreSQL a
worker uses `WorkNotices` instead and reads no event at all.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from agent_ledger.application.backoff import Backoff
from agent_ledger.application.event_log import LoggedEvent
from agent_ledger.application.executions import Executions
from agent_ledger.domain.executions import Execution

log = logging.getLogger(__name__)

PAGE = 10_000

TOPICS = (Execution.ExecutionStarted.TOPIC, Execution.ExecutionCancellationRequested.TOPIC)


class EmbeddedWorkFeed:
    """Follows the store for the events that concern workers and hands them on."""

    def __init__(
        self,
        executions: Executions,
        deliver: Callable[[list[LoggedEvent]], None],
        poll_interval: float = 0.5,
    ):
        self.executions = executions
        self.deliver = deliver
        self.poll_interval = poll_interval
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self.executions.add_listener(self.wake)
        self._spawn(self._follow)

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        self.executions.remove_listener(self.wake)
        for thread in self._threads:
            thread.join(5)

    def wake(self, *_: object) -> None:
        self._wake.set()

    def _spawn(self, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name="embedded-work-feed", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _follow(self) -> None:
        position = self.executions.last_position()
        backoff = Backoff("embedded work feed reading the store", log)
        while not self._stopped.is_set():
            self._wake.clear()
            try:
                head = self.executions.last_position()
                if head > position:
                    notifications = self.executions.recorder.select_notifications(
                        start=position,
                        limit=PAGE,
                        stop=head,
                        topics=TOPICS,
                        inclusive_of_start=False,
                    )
                    events = [
                        LoggedEvent.stored(n.id, n, self.executions.mapper) for n in notifications
                    ]
                    if events:
                        self.deliver(events)
                    if len(notifications) == PAGE:
                        position = events[-1].position
                        continue  # more to read: at once
                    position = head
                backoff.succeeded()
            except Exception as error:
                self._stopped.wait(backoff.failed(error))
                continue
            self._wake.wait(self.poll_interval)
