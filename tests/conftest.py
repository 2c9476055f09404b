"""Fixtures shared by every tier: a real PostgreSQL database per test module."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_url() -> str:
    """Where the tests may create databases: `AGENT_LEDGER_TEST_DATABASE_URL` or the local one."""
    return os.environ.get("AGENT_LEDGER_TEST_DATABASE_URL", DEFAULT_ADMIN_URL)


@pytest.fixture(scope="session")
def postgres_admin() -> str:
    """A reachable PostgreSQL server, or a loud failure: these tests are never skipped."""
    url = admin_url()
    try:
        with psycopg.connect(url, connect_timeout=5) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as error:
        pytest.fail(
            f"PostgreSQL is required for this test and none answers at {url!r}: {error}. "
            "Start one or point AGENT_LEDGER_TEST_DATABASE_URL at a server where the user "
            "may CREATE DATABASE.",
            pytrace=False,
        )
    return url


@pytest.fixture(scope="module")
def postgres_url(postgres_admin: str) -> Iterator[str]:
    """A fresh, empty database for one test module, dropped afterwards."""
    name = f"agent_ledger_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = sa.make_url(postgres_admin).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with psycopg.connect(postgres_admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
