"""The unit tier: no database server, no subprocess, under 60 s on 2 cores (`make test-unit`).

Tests here use the in-memory twins or the embedded SQLite store in a temporary directory.
A test that asks for PostgreSQL (the `postgres_*` fixtures) stops the run at collection, and
one that opens a PostgreSQL connection anyway fails: such a test belongs in
tests/integration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

import psycopg
import pytest

from tests.conftest import needs_postgres

UNIT = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse, before anything runs, a unit test that asks for PostgreSQL."""
    misplaced = [i.nodeid for i in items if UNIT in i.path.parents and needs_postgres(i)]
    if misplaced:
        raise pytest.UsageError(
            "tests/unit runs without a database; move these to tests/integration: "
            + ", ".join(misplaced)
        )


def _refuse(*args: Any, **kwargs: Any) -> NoReturn:
    raise AssertionError("a unit test opened a PostgreSQL connection: move it to tests/integration")


@pytest.fixture(autouse=True)
def _no_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    """No connection to PostgreSQL, and no `AGENT_LEDGER_DATABASE_URL` from the shell."""
    monkeypatch.delenv("AGENT_LEDGER_DATABASE_URL", raising=False)
    monkeypatch.setattr(psycopg, "connect", _refuse)
    monkeypatch.setattr(psycopg.Connection, "connect", classmethod(_refuse))
    monkeypatch.setattr(psycopg.AsyncConnection, "connect", classmethod(_refuse))
