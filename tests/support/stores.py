"""The event store of a test, its schema created first, and settings for short leases."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agent_ledger.application.executions import Executions
from agent_ledger.infrastructure.schema import initialize_schema
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.persistence import open_executions

SECRET = "x" * 40
"""The token secret of tests that mint no token."""


@contextmanager
def opened_store(settings: Settings) -> Iterator[Executions]:
    """The schema of `settings` created (or migrated), then its store, closed afterwards."""
    initialize_schema(settings)
    opened = open_executions(settings)
    try:
        yield opened
    finally:
        opened.close()


@contextmanager
def postgres_store(database_url: str, data_dir: Path) -> Iterator[Executions]:
    """`opened_store` on the PostgreSQL database at `database_url`."""
    settings = Settings(database_url=database_url, jwt_secret=SECRET, data_dir=data_dir)
    with opened_store(settings) as opened:
        yield opened


def short_lease_settings(database_url: str, secret: str, data_dir: Path) -> Settings:
    """Leases of 1.5 s, polls every 0.2 s and 100 executions a user: a worker that dies
    loses its executions to another within seconds."""
    return Settings(
        database_url=database_url,
        jwt_secret=secret,
        data_dir=data_dir,
        lease_seconds=1.5,
        poll_interval=0.2,
        per_user_limit=100,
    )
