"""Staying connected to PostgreSQL through its restarts: what an outage looks like, and a
LISTEN loop that reconnects by itself with bounded back-off."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import eventsourcing.persistence as store_errors
import psycopg
import sqlalchemy as sa

from application.backoff import Backoff

CONNECT_TIMEOUT = 5
"""Seconds a listener waits for a connection (an unreachable host would hang for minutes)."""

UNAVAILABLE: tuple[type[Exception], ...] = (
    store_errors.OperationalError,
    store_errors.InterfaceError,
    psycopg.OperationalError,  # psycopg_pool's PoolTimeout too
    psycopg.InterfaceError,
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.TimeoutError,
)
"""What the store's, the driver's and SQLAlchemy's errors are when the database is away."""


def unavailable(error: BaseException) -> bool:
    """Whether `error` says the database could not be reached, or dropped the connection."""
    if isinstance(error, sa.exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, UNAVAILABLE)


def where(dsn: str) -> str:
    """host:port/database of a connection string, for logs (never its password)."""
    try:
        url = sa.make_url(dsn)
    except sa.exc.ArgumentError:
        return "the database"
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"


def listen_forever(
    dsn: str,
    channel: str,
    *,
    stopped: threading.Event,
    connected: Callable[[], None],
    notice: Callable[[str], None],
    log: logging.Logger,
    what: str,
    stop_after: int | None = None,
) -> None:
    """LISTEN on `channel` until `stopped`, handing each payload to `notice`.

    Notices sent while the connection is down are lost: `connected()` is called on every
    (re)connect, once LISTEN is in effect, so the caller can look at the store itself. A lost
    connection is retried with `Backoff`, logged once per step.
    """
    backoff = Backoff(f"{what} ({where(dsn)})", log, expected=unavailable)
    while not stopped.is_set():
        try:
            with psycopg.connect(
                dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT
            ) as connection:
                connection.execute(f'LISTEN "{channel}"')
                backoff.succeeded()
                connected()
                while not stopped.is_set():
                    for notify in connection.notifies(timeout=1.0, stop_after=stop_after):
                        notice(notify.payload)
        except psycopg.Error as error:
            stopped.wait(backoff.failed(error))
