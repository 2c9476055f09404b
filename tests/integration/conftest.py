"""The integration tier: the application over a real PostgreSQL (and the embedded SQLite
store where a test compares the two), in-process or with the CLI's own processes, within
4 minutes on 2 cores (`make test-integration`).

The PostgreSQL fixtures (`postgres_admin`, `postgres_url`, `empty_database`) come from
tests/conftest.py; helpers from tests/support.
"""

from __future__ import annotations

import pytest

from agent_ledger.infrastructure.settings import Settings


@pytest.fixture(scope="module")
def settings(
    request: pytest.FixtureRequest, postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """The module's database, a data directory of its own and the module's `SECRET` as the
    token secret; a module that needs other settings defines its own `settings`."""
    secret: str = request.module.SECRET
    return Settings(
        database_url=postgres_url, jwt_secret=secret, data_dir=tmp_path_factory.mktemp("data")
    )
