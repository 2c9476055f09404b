"""Wake-ups for a worker process on PostgreSQL, read from a notification channel alone.

The store notifies `WORK_CHANNEL` on commit when executions are queued (empty payload) or
asked to cancel (the execution's id), so a worker reads no event to learn of new work:
it is woken only by the writes that concern it, not by every commit to the store.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from uuid import UUID

from infrastructure.feed.reconnect import listen_forever
from infrastructure.store.work_queue import WORK_CHANNEL

log = logging.getLogger(__name__)


class WorkNotifications:
    """Listens on `WORK_CHANNEL` and hands each notice to the worker.

    `notice(None)` says work was queued, `notice(id)` that an execution was asked to
    cancel. Notices sent while the connection was down are lost, so on every (re)connect
    `missed()` is called: the worker then claims and checks its executions for
    cancellation requests, as its lease renewals do periodically anyway.
    """

    def __init__(
        self,
        listen_dsn: str,
        notice: Callable[[UUID | None], None],
        missed: Callable[[], None],
    ):
        self.listen_dsn = listen_dsn
        self.notice = notice
        self.missed = missed
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._listen, name="work-notices", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(5)

    def _listen(self) -> None:
        listen_forever(
            self.listen_dsn,
            WORK_CHANNEL,
            stopped=self._stopped,
            connected=self.missed,
            notice=self._deliver,
            log=log,
            what="work notifications",
        )

    def _deliver(self, payload: str) -> None:
        try:
            self.notice(UUID(payload) if payload else None)
        except ValueError:
            log.warning("ignored a work notice with a bad payload: %r", payload)
