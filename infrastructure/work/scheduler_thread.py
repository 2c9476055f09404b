"""The scheduler's thread in a worker process: it sleeps until the next tick of any running
schedule, or until a schedule changes.

Changes reach every process: on PostgreSQL by the notices on `SCHEDULES_CHANNEL` (through the
process's `StoreNotices`; on a reconnect, when notices may have been missed, it looks
again), in this process by the index's listeners. Besides, it looks again at least every
`fallback` seconds (on the embedded store, the only way to see another process's change).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from agent_ledger.application.scheduler import Scheduler
from agent_ledger.infrastructure.feed.notices import StoreNotices
from agent_ledger.infrastructure.read_models.schedules import SCHEDULES_CHANNEL, SqlScheduleIndex

log = logging.getLogger(__name__)

POSTGRES_FALLBACK = 30.0
"""Seconds between looks when notices tell of every change (PostgreSQL)."""
FAILED_PASS_PAUSE = 1.0


class SchedulerThread:
    """Runs `scheduler.run_pass()` at each due tick and on each change of a schedule."""

    def __init__(
        self,
        scheduler: Scheduler,
        index: SqlScheduleIndex,
        notices: StoreNotices | None,
        fallback: float,
    ):
        self.scheduler = scheduler
        self.fallback = POSTGRES_FALLBACK if notices is not None else fallback
        self._woken = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        index.add_listener(self._woken.set)
        if notices is not None:  # before the process's notices start
            notices.subscribe(SCHEDULES_CHANNEL, lambda _: self._woken.set(), self._woken.set)

    def start(self) -> None:
        self._thread.start()
        log.info("scheduler running (worker %s)", self.scheduler.name)

    def stop(self) -> None:
        self._stopped.set()
        self._woken.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._woken.clear()
            try:
                upcoming = self.scheduler.run_pass()
            except Exception:  # the store is unreachable, say: look again shortly
                log.exception("the scheduler's pass failed")
                self._stopped.wait(FAILED_PASS_PAUSE)
                continue
            self._woken.wait(self._seconds_until(upcoming))

    def _seconds_until(self, upcoming: datetime | None) -> float:
        if upcoming is None:
            return self.fallback
        left = (upcoming - self.scheduler.now()).total_seconds()
        return min(self.fallback, max(left, 0.0))
