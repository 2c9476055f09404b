"""Fixtures shared by the tiers that need PostgreSQL (integration, e2e): the server, a fresh
database per test module (`postgres_url`) or per test (`empty_database`). Each tier has its
own conftest.py besides; helpers live in tests/support.

When the selected tests need PostgreSQL and none answers, the run stops at once with one
line saying so (`pytest_collection_finish`), rather than a failure per test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest

from agent_ledger.infrastructure.cli.preflight import connection_failure
from agent_ledger.infrastructure.redact import mask_url
from tests.support.databases import fresh_database

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_url() -> str:
    """Where the tests may create databases: `AGENT_LEDGER_TEST_DATABASE_URL` or the local one."""
    return os.environ.get("AGENT_LEDGER_TEST_DATABASE_URL", DEFAULT_ADMIN_URL)


NO_POSTGRES_EXIT = pytest.ExitCode.USAGE_ERROR
"""The run's exit status when the selected tests need PostgreSQL and none answers."""


def postgres_unreachable(url: str) -> str | None:
    """None when PostgreSQL answers at `url`, else one line: where (password masked), why,
    and what to do."""
    try:
        with psycopg.connect(url, connect_timeout=5) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as error:
        return (
            f"PostgreSQL is required and none answers at {mask_url(url)} "
            f"({connection_failure(error)}): start one, or point AGENT_LEDGER_TEST_DATABASE_URL "
            "at a server where the user may CREATE DATABASE"
        )
    return None


def needs_postgres(item: pytest.Item) -> bool:
    """Asks for the shared server, directly or as a `postgres`/`postgresql` parameter of a
    fixture that requests it by name (`request.getfixturevalue`)."""
    if "postgres_admin" in getattr(item, "fixturenames", ()):
        return True
    callspec = getattr(item, "callspec", None)
    params = callspec.params.values() if callspec is not None else ()
    return any(value in ("postgres", "postgresql") for value in params)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Check PostgreSQL once, before any test runs, if a selected test needs it."""
    if session.config.option.collectonly:
        return
    needing = sum(needs_postgres(item) for item in session.items)
    if needing and (problem := postgres_unreachable(admin_url())) is not None:
        pytest.exit(f"{problem} ({needing} selected tests need it)", returncode=NO_POSTGRES_EXIT)


@pytest.fixture(scope="session")
def postgres_admin() -> str:
    """A reachable PostgreSQL server, or the run stops with one line: these tests are never
    skipped, and one message says more than a failure per test."""
    url = admin_url()
    if (problem := postgres_unreachable(url)) is not None:
        pytest.exit(problem, returncode=NO_POSTGRES_EXIT)
    return url


@pytest.fixture(scope="module")
def postgres_url(postgres_admin: str) -> Iterator[str]:
    """A fresh, empty database for one test module, dropped afterwards."""
    with fresh_database(postgres_admin) as url:
        yield url


@pytest.fixture
def empty_database(postgres_admin: str) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    with fresh_database(postgres_admin) as url:
        yield url
