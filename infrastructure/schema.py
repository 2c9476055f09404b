"""The schema every role makes sure of at start-up: the event store's tables and DDL, the
read model's migrations and the audit tables' guards, under one lock.

It sits above the store, the read models and audit, which each own a part of it.
"""

from __future__ import annotations

import fcntl
import hashlib
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import psycopg.sql

from agent_ledger.application.executions import Executions
from agent_ledger.infrastructure.audit.sql import audit_append_only_ddl
from agent_ledger.infrastructure.read_models import migrations
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.persistence import (
    append_only_ddl,
    event_store_env,
    libpq_dsn,
    read_model_engine,
)

_SCHEMA_LOCK = zlib.crc32(b"agent-ledger:schema")


@contextmanager
def _schema_lock(settings: Settings) -> Iterator[None]:
    """Serialise schema creation between processes starting at once: an advisory lock on
    PostgreSQL, a lock on a file of the data directory on SQLite (processes that switch a
    new database to WAL at once meet "database is locked", which no busy timeout covers)."""
    if not settings.uses_postgres:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        with (settings.data_dir / ".schema.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return
    with psycopg.connect(libpq_dsn(settings), autocommit=True) as connection:
        connection.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))
        try:
            yield
        finally:
            connection.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK,))


def initialize_schema(settings: Settings) -> None:
    """Create the event store and migrate the read model; safe when processes start together.

    On PostgreSQL nothing is done when the schema recorded in `SCHEMA_TABLE` is this code's:
    DDL on tables in use (`CREATE INDEX IF NOT EXISTS` locks its table even when the index
    exists) deadlocks with writes, so a process restarting beside live writers must not run
    it.
    """
    with _schema_lock(settings):
        digest = _schema_digest(settings) if settings.uses_postgres else None
        if digest is not None and _recorded_digest(settings) == digest:
            return  # the store's DDL ran, and the read model is at the newest revision
        Executions(env=event_store_env(settings, create_tables=True)).close()
        engine = read_model_engine(settings)
        try:
            migrations.upgrade(engine)
        finally:
            engine.dispose()
        if digest is not None:
            with psycopg.connect(libpq_dsn(settings), autocommit=True) as connection:
                connection.execute(append_only_ddl().encode())
                connection.execute(audit_append_only_ddl().encode())
                connection.execute(
                    f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} "
                    "(name text PRIMARY KEY, digest text NOT NULL)"
                )
                connection.execute(
                    f"INSERT INTO {SCHEMA_TABLE} (name, digest) VALUES ('store', %s) "
                    "ON CONFLICT (name) DO UPDATE SET digest = excluded.digest",
                    (digest,),
                )


SCHEMA_TABLE = "agent_ledger_schema"
"""The digest of the DDL and migrations that made the PostgreSQL schema."""


def _schema_digest(settings: Settings) -> str:
    """A digest of every statement `initialize_schema` would run, and the newest migration."""
    executions = Executions(env=event_store_env(settings, create_tables=False))
    try:
        recorders: list[object] = [executions.recorder]
        if executions.snapshots is not None:
            recorders.append(executions.snapshots.recorder)
        parts = [
            _statement_text(statement)
            for recorder in recorders
            for statement in getattr(recorder, "sql_create_statements", [])
        ]
    finally:
        executions.close()
    parts += [append_only_ddl(), audit_append_only_ddl(), str(migrations.head_revision())]
    return hashlib.sha256("\n;\n".join(parts).encode()).hexdigest()


def _statement_text(statement: object) -> str:
    if isinstance(statement, psycopg.sql.Composable):
        return statement.as_string(None)
    return str(statement)


def _recorded_digest(settings: Settings) -> str | None:
    """The recorded digest, if the read model is still at the revision it was recorded at."""
    with psycopg.connect(libpq_dsn(settings), autocommit=True) as connection:
        for table in (SCHEMA_TABLE, "alembic_version"):
            if connection.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,):
                return None
        row = connection.execute(
            f"SELECT digest FROM {SCHEMA_TABLE} WHERE name = 'store' "
            "AND EXISTS (SELECT 1 FROM alembic_version WHERE version_num = %s)",
            (migrations.head_revision(),),
        ).fetchone()
    return None if row is None else str(row[0])
