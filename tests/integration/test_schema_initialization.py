"""A process starting beside live writers runs no DDL once the schema is this code's."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import psycopg
import pytest

from agent_ledger.infrastructure.schema import SCHEMA_TABLE, initialize_schema
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.persistence import libpq_dsn
from agent_ledger.infrastructure.store.work_queue import WORK_TABLE

pytestmark = pytest.mark.postgres


def test_a_restart_beside_an_open_write_neither_waits_for_it_nor_deadlocks(
    postgres_url: str, tmp_path: Path
) -> None:
    settings = Settings(database_url=postgres_url, jwt_secret="x" * 40, data_dir=tmp_path)
    initialize_schema(settings)
    with psycopg.connect(libpq_dsn(settings)) as writer:
        # a write under way, as a group commit holds it: the work table is locked for rows
        writer.execute(
            f"INSERT INTO {WORK_TABLE} (execution_id, user_id, ready_at) VALUES (%s, 'u', 0)",
            (uuid.uuid4(),),
        )
        restarted = threading.Thread(target=initialize_schema, args=(settings,), daemon=True)
        restarted.start()
        restarted.join(10)  # `CREATE INDEX IF NOT EXISTS` would wait for the writer's commit
        assert not restarted.is_alive(), "initialize_schema waited for a write"
        writer.rollback()


def test_a_schema_made_by_other_code_is_made_again(postgres_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=postgres_url, jwt_secret="x" * 40, data_dir=tmp_path)
    initialize_schema(settings)
    with psycopg.connect(libpq_dsn(settings), autocommit=True) as connection:
        connection.execute(f"UPDATE {SCHEMA_TABLE} SET digest = 'older code'")
        connection.execute(f"DROP INDEX {WORK_TABLE}_user")
    initialize_schema(settings)
    with psycopg.connect(libpq_dsn(settings), autocommit=True) as connection:
        index = connection.execute("SELECT to_regclass(%s)", (f"{WORK_TABLE}_user",)).fetchone()
        digest = connection.execute(f"SELECT digest FROM {SCHEMA_TABLE}").fetchone()
    assert index == (f"{WORK_TABLE}_user",)
    assert digest not in (None, ("older code",))
