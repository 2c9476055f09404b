"""Work notices: wake-ups for a worker process on PostgreSQL, from the work channel alone.

The store notifies `WORK_CHANNEL` on commit when executions are queued (empty payload) or
asked to cancel (the execution's id), so a worker reads no event to learn of new work:
it is woken only by the writes that concern it, not by every commit to the store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from uuid import UUID

from agent_ledger.infrastructure.feed.notices import StoreNotices
from agent_ledger.infrastructure.store.work_queue import WORK_CHANNEL

log = logging.getLogger(__name__)


class WorkNotices:
    """Hands each notice on `WORK_CHANNEL` (through the process's `StoreNotices`) to the
    worker.

    `notice(None)` says work was queued, `notice(id)` that an execution was asked to
    cancel. Notices sent while the connection was down are lost, so on every (re)connect
    `missed()` is called: the worker then claims and checks its executions for
    cancellation requests, as its lease renewals do periodically anyway.
    """

    def __init__(
        self,
        notices: StoreNotices,
        notice: Callable[[UUID | None], None],
        missed: Callable[[], None],
    ):
        self.notices = notices
        self.notice = notice
        self.missed = missed

    def start(self) -> None:
        self.notices.subscribe(WORK_CHANNEL, self._deliver, self.missed)

    def stop(self) -> None:
        """Nothing to stop: the process's `StoreNotices` stops listening."""

    def _deliver(self, payload: str) -> None:
        try:
            self.notice(UUID(payload) if payload else None)
        except ValueError:
            log.warning("ignored a work notice with a bad payload: %r", payload)
