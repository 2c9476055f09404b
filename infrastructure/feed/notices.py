"""A process's one PostgreSQL LISTEN connection, shared by every role it runs."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg

from agent_ledger.application.backoff import Backoff
from agent_ledger.infrastructure.feed.reconnect import unavailable, where

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5
"""Seconds the listener waits for a connection (an unreachable host would hang for minutes)."""

Notice = Callable[[str], None]
"""Called with a notice's payload, on the listener's thread: it must return at once."""

Missed = Callable[[], None]
"""Called on every (re)connect, once LISTEN is in effect: notices may have been missed."""


class StoreNotices:
    """LISTENs on one connection to every channel its subscribers need and hands each
    notice to that channel's subscribers, in the order PostgreSQL sent them.

    Notices sent while the connection is down are lost: on every (re)connect each
    subscriber's `missed()` is called, so it can look at the store itself. A lost
    connection is retried with `Backoff` (0.1 s, doubling to 1 s), logged once per step.
    Subscribe before `start()`: the channels are listened to as the connection opens.
    """

    def __init__(self, dsn: str):
        self.dsn = dsn
        self._notices: dict[str, list[Notice]] = {}
        self._missed: list[Missed] = []
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def subscribe(self, channel: str, notice: Notice, missed: Missed) -> None:
        """Hand `channel`'s notices to `notice`; call `missed()` on every (re)connect."""
        if self._thread is not None:
            raise RuntimeError("subscribe to store notices before they start")
        self._notices.setdefault(channel, []).append(notice)
        self._missed.append(missed)

    @property
    def channels(self) -> frozenset[str]:
        """The channels listened to."""
        return frozenset(self._notices)

    def start(self) -> None:
        """Connect and listen on a thread of its own (nothing to do without subscribers)."""
        if self._thread is not None or not self._notices:
            return
        self._thread = threading.Thread(target=self._listen, name="store-notices", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(5)

    def _listen(self) -> None:
        backoff = Backoff(f"store notices ({where(self.dsn)})", log, expected=unavailable)
        while not self._stopped.is_set():
            try:
                with psycopg.connect(
                    self.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT
                ) as connection:
                    for channel in self._notices:
                        connection.execute(f'LISTEN "{channel}"')
                    backoff.succeeded()
                    for missed in self._missed:
                        self._call(missed)
                    while not self._stopped.is_set():
                        for notify in connection.notifies(timeout=1.0, stop_after=1):
                            for notice in self._notices.get(notify.channel, ()):
                                self._call(notice, notify.payload)
            except psycopg.Error as error:
                self._stopped.wait(backoff.failed(error))

    @staticmethod
    def _call(subscriber: Callable[..., None], *payload: str) -> None:
        try:
            subscriber(*payload)
        except Exception:  # one subscriber's failure neither stops the others nor the listening
            log.exception("a store notice subscriber failed")
