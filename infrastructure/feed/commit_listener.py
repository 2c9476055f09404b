"""Wakes a reader whenever events are committed: LISTEN in PostgreSQL, saves in this process."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from application.executions import Executions
from infrastructure.feed.reconnect import listen_forever

log = logging.getLogger(__name__)


class CommitListener:
    """Calls `wake()` on every commit to the events table, without reading any event."""

    def __init__(
        self,
        executions: Executions,
        wake: Callable[..., None],
        listen_dsn: str | None,
        channel: str = "executions_events",
    ):
        self.executions = executions
        self.wake = wake
        self.listen_dsn = listen_dsn
        self.channel = channel
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.executions.add_listener(self.wake)
        if self.listen_dsn:
            self._thread = threading.Thread(target=self._listen, name="commits", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self.executions.remove_listener(self.wake)
        if self._thread is not None:
            self._thread.join(5)

    def _listen(self) -> None:
        assert self.listen_dsn is not None
        listen_forever(
            self.listen_dsn,
            self.channel,
            stopped=self._stopped,
            connected=self.wake,  # anything committed before LISTEN took effect
            notice=self.wake,
            log=log,
            what="commit notifications",
            stop_after=1,
        )
