"""Where the `Schedule` aggregates' events live: an event store of their own, beside the
executions' (so no reader of the executions' log ever meets a schedule's event).

PostgreSQL: the tables `schedules_events` and `schedules_snapshots` in the same database,
created the first time a process needs them, under the lock that serialises schema set-up
(without the library's insert function, which nothing calls). Embedded: the file
`schedules.sqlite` in the data directory.
"""

from __future__ import annotations

import zlib

import psycopg
import psycopg.sql

from agent_ledger.application.schedules import Schedules
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.persistence import event_store_env, libpq_dsn
from agent_ledger.infrastructure.store.pool import harden

SCHEMA_LOCK = zlib.crc32(b"agent-ledger:schema")
"""The advisory lock every process takes to set up the schema (`infrastructure.schema`)."""
TABLES = ("schedules_events", "schedules_snapshots")


def schedules_env(settings: Settings) -> dict[str, str]:
    """The executions' store settings, with the library's own recorder and, embedded, a file
    of its own."""
    env = event_store_env(settings, create_tables=not settings.uses_postgres)
    env.pop("APPLICATION_RECORDER_TOPIC")
    if not settings.uses_postgres:
        env["SQLITE_DBNAME"] = str(settings.data_dir / "schedules.sqlite")
    return env


def open_schedules(settings: Settings) -> Schedules:
    """The schedules' store, its tables created if this is the first process to need them."""
    schedules = Schedules(env=schedules_env(settings))
    if settings.uses_postgres:
        _create_tables(settings, schedules)
        for recorder in (schedules.recorder, getattr(schedules.snapshots, "recorder", None)):
            datastore = getattr(recorder, "datastore", None)
            if datastore is not None:
                harden(datastore.pool)
    return schedules


def _create_tables(settings: Settings, schedules: Schedules) -> None:
    with psycopg.connect(libpq_dsn(settings), autocommit=True) as connection:
        if _present(connection):
            return
        connection.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK,))
        try:
            if _present(connection):
                return
            recorders = [schedules.recorder, getattr(schedules.snapshots, "recorder", None)]
            with connection.transaction():
                for recorder in recorders:
                    for statement in getattr(recorder, "sql_create_statements", []):
                        text = statement.as_string(connection)
                        if (
                            text.lstrip()
                            .upper()
                            .startswith(("CREATE TABLE", "CREATE UNIQUE INDEX"))
                        ):
                            connection.execute(text.encode())
        finally:
            connection.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK,))


def _present(connection: psycopg.Connection[tuple[object, ...]]) -> bool:
    for table in TABLES:
        if connection.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,):
            return False
    return True
