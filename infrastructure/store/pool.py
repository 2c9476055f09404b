"""The event store's connection pool through database restarts.

The eventsourcing library's pool (psycopg_pool's) replaces a lost connection with attempts
1, 2, 4, 8... seconds apart, for up to five minutes: after a 40-second outage it took about
20 seconds more to connect again. And while no connection can be made, every caller waits
the pool's whole timeout for one, then the library retries it ten times: a request hung for
minutes instead of failing. `harden()` changes both on a store's pool.
"""

from __future__ import annotations

import logging
from typing import Any

from eventsourcing.postgres import ConnectionPool
from psycopg_pool.base import AttemptWithBackoff

log = logging.getLogger(__name__)

RECONNECT_FIRST = 0.1
RECONNECT_CAP = 1.0
"""Seconds between attempts to replace a lost connection: doubling from the first, bounded."""

UNREACHABLE_WAIT = 0.25
"""Seconds a caller waits for a connection while the last attempt to connect failed."""


class _BoundedAttempt(AttemptWithBackoff):
    """psycopg_pool's back-off, from RECONNECT_FIRST and never longer than RECONNECT_CAP."""

    INITIAL_DELAY = RECONNECT_FIRST

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, RECONNECT_CAP)


class StorePool(ConnectionPool[Any]):
    """The library's pool, reconnecting with bounded back-off, failing fast while the
    database cannot be reached (so the library's retries end in seconds: the API answers
    503, a worker's loops back off by themselves)."""

    unreachable = False
    """The last attempt to connect failed (and none has succeeded since)."""

    def _connect(self, timeout: float | None = None) -> Any:
        try:
            connection = super()._connect(timeout=timeout)
        except Exception:
            self.unreachable = True
            raise
        self.unreachable = False
        return connection

    def _add_connection(self, attempt: AttemptWithBackoff | None, growing: bool = False) -> None:
        if attempt is None:
            attempt = _BoundedAttempt(timeout=self.reconnect_timeout)
        super()._add_connection(attempt, growing=growing)

    def getconn(self, timeout: float | None = None) -> Any:
        if timeout is None and self.unreachable:
            timeout = min(self.timeout, UNREACHABLE_WAIT)
        return super().getconn(timeout)


def harden(pool: object) -> None:
    """Make a store's pool a `StorePool` (it adds behaviour only, no state).

    The library builds its pool itself and offers no way to choose its class, hence the
    class is changed in place; a pool of any other class (a library upgrade) is left alone.
    """
    if type(pool) is ConnectionPool:
        pool.__class__ = StorePool
    elif not isinstance(pool, StorePool):
        log.warning("the store's pool is a %s: reconnects as the library does", type(pool))
