"""Where events and read models live: SQLite files in the data directory, or PostgreSQL."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from uuid import UUID

import sqlalchemy as sa
from eventsourcing.persistence import Notification
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresDatastore,
)

from agent_ledger.application.executions import Executions
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.histories import HistoriesBySql
from agent_ledger.infrastructure.store.pool import harden
from agent_ledger.infrastructure.store.sql_files import sql_file

EVENTS_TABLE = "executions_events"
SQLITE_EVENTS_TABLE = "stored_events"
_SCHEMA_LOCK = zlib.crc32(b"agent-ledger:schema")


def append_only_ddl() -> str:
    """Triggers that make PostgreSQL refuse `UPDATE`, `DELETE` and `TRUNCATE` on the events."""
    return sql_file(__package__, "append_only_triggers.sql", events_table=EVENTS_TABLE)


def postgres_url(settings: Settings) -> sa.URL:
    assert settings.database_url is not None
    url = sa.make_url(settings.database_url)
    return url.set(drivername="postgresql+psycopg")


def libpq_dsn(settings: Settings) -> str:
    """The database URL as libpq takes it (for LISTEN and DDL connections)."""
    return postgres_url(settings).set(drivername="postgresql").render_as_string(hide_password=False)


def event_store_env(settings: Settings, *, create_tables: bool) -> dict[str, str]:
    """Environment for the eventsourcing library's persistence module."""
    env = {"CREATE_TABLE": "y" if create_tables else "n"}
    if settings.uses_postgres:
        url = postgres_url(settings)
        env.update(
            PERSISTENCE_MODULE="eventsourcing.postgres",
            POSTGRES_DBNAME=url.database or "postgres",
            POSTGRES_HOST=url.host or "127.0.0.1",
            POSTGRES_PORT=str(url.port or 5432),
            POSTGRES_USER=url.username or "postgres",
            POSTGRES_PASSWORD=url.password or "",
            POSTGRES_POOL_SIZE=str(settings.db_pool_size),
            POSTGRES_MAX_OVERFLOW=str(settings.db_max_overflow),
            POSTGRES_LOCK_TIMEOUT="5",
            APPLICATION_RECORDER_TOPIC="agent_ledger.infrastructure.store.work_queue:PostgresWorkRecorder",
        )
    else:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        env.update(
            PERSISTENCE_MODULE="eventsourcing.sqlite",
            SQLITE_DBNAME=str(settings.data_dir / "events.sqlite"),
            SQLITE_LOCK_TIMEOUT="10",
            APPLICATION_RECORDER_TOPIC="agent_ledger.infrastructure.store.work_queue:SQLiteWorkRecorder",
        )
    if settings.cipher_key:
        env.update(CIPHER_TOPIC="eventsourcing.cipher:AESCipher", CIPHER_KEY=settings.cipher_key)
    return env


def read_model_engine(settings: Settings) -> sa.Engine:
    """SQLAlchemy engine for the read side (same database as events in PostgreSQL mode)."""
    if settings.uses_postgres:
        engine = sa.create_engine(
            postgres_url(settings),
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_pre_ping=True,
            # a plan per execution, sized by the tables as they are now: a prepared
            # statement's generic plan, made while a table was young, keeps scanning all of
            # it until autovacuum analyzes it (read-model tables grow fast, from empty)
            connect_args={"options": "-c plan_cache_mode=force_custom_plan"},
        )
        # the projector's many-row inserts as multi-row statements, not one statement a row
        engine.dialect.use_insertmanyvalues_wo_returning = True
        return engine
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        f"sqlite:///{settings.data_dir / 'read_model.sqlite'}",
        connect_args={"timeout": 30, "check_same_thread": False},
    )

    @sa.event.listens_for(engine, "connect")
    def _wal(dbapi_connection: object, _record: object) -> None:
        cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def open_executions(settings: Settings) -> Executions:
    """The Executions application on the configured store (schema must exist)."""
    executions = Executions(env=event_store_env(settings, create_tables=False))
    executions.history_reader = HistoryBySql(executions)
    snapshots = executions.snapshots.recorder if executions.snapshots is not None else None
    for recorder in (executions.recorder, snapshots):
        datastore = getattr(recorder, "datastore", None)
        if isinstance(datastore, PostgresDatastore):
            harden(datastore.pool)  # bounded reconnects, fast failures while unreachable
    if isinstance(executions.recorder, PostgresAggregateRecorder) and isinstance(
        snapshots, PostgresAggregateRecorder
    ):
        executions.histories_reader = HistoriesBySql(executions.recorder, snapshots)
    return executions


class HistoryBySql:
    """One execution's notifications, read through the index on the originator id."""

    def __init__(self, executions: Executions):
        self.recorder = executions.recorder
        self.postgres = isinstance(self.recorder, PostgresApplicationRecorder)

    def __call__(self, execution_id: UUID, after: int, limit: int) -> Sequence[Notification]:
        datastore = self.recorder.datastore  # type: ignore[attr-defined]
        if self.postgres:
            statement = (
                f"SELECT notification_id, originator_id, originator_version, topic, state "
                f"FROM {datastore.schema}.{EVENTS_TABLE} WHERE originator_id = %s "
                f"AND notification_id > %s ORDER BY originator_version LIMIT %s"
            )
            params: tuple[object, ...] = (execution_id, after, limit)
        else:
            statement = (
                f"SELECT rowid AS notification_id, originator_id, originator_version, topic, "
                f"state FROM {SQLITE_EVENTS_TABLE} WHERE originator_id = ? AND rowid > ? "
                f"ORDER BY originator_version LIMIT ?"
            )
            params = (execution_id.hex, after, limit)
        with datastore.transaction(commit=False) as cursor:
            cursor.execute(statement, params)
            rows = cursor.fetchall()
        return [
            Notification(
                id=row["notification_id"],
                originator_id=UUID(str(row["originator_id"])),
                originator_version=row["originator_version"],
                topic=row["topic"],
                state=bytes(row["state"]),
            )
            for row in rows
        ]
