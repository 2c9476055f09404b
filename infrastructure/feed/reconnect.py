"""Staying connected to PostgreSQL through its restarts: what an outage looks like, and
where a connection goes (for logs). `StoreNotices` is the LISTEN loop that reconnects."""

from __future__ import annotations

import eventsourcing.persistence as store_errors
import psycopg
import sqlalchemy as sa

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
