"""The read-model schema under alembic: created from nothing, adopted from `create_all`, migrated
by processes starting together, and left alone by projection rebuilds; SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from typer.testing import CliRunner

from agent_ledger.application.starter import StartRequest, start_execution
from agent_ledger.infrastructure.cli.main import app
from agent_ledger.infrastructure.read_models import migrations
from agent_ledger.infrastructure.read_models.rebuild import Rebuild
from agent_ledger.infrastructure.read_models.table_sets import (
    active_version,
    create_version,
    table_set,
)
from agent_ledger.infrastructure.read_models.tables import (
    metadata,
    process_definitions,
    projection_tracking,
    token_revocations,
)
from agent_ledger.infrastructure.runtime import Runtime
from agent_ledger.infrastructure.schema import initialize_schema
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.persistence import read_model_engine
from tests.support.databases import fresh_database

pytestmark = pytest.mark.postgres

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["postgresql", "sqlite"])
def settings(
    request: pytest.FixtureRequest, postgres_admin: str, tmp_path: Path
) -> Iterator[Settings]:
    """Settings for an empty store: a fresh PostgreSQL database, or a fresh data directory."""
    if request.param == "sqlite":
        yield Settings(database_url=None, data_dir=tmp_path)
        return
    with fresh_database(postgres_admin) as url:
        yield Settings(database_url=url, data_dir=tmp_path)


@pytest.fixture
def engine(settings: Settings) -> Iterator[sa.Engine]:
    engine = read_model_engine(settings)
    try:
        yield engine
    finally:
        engine.dispose()


def differences(engine: sa.Engine) -> list[Any]:
    """What autogenerate would write: tables.py against the database (empty when in step)."""
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"include_name": migrations.include_name}
        )
        return list(compare_metadata(context, metadata))


def table_names(engine: sa.Engine) -> set[str]:
    with engine.connect() as connection:
        return set(sa.inspect(connection).get_table_names())


def versions_recorded(engine: sa.Engine) -> list[str]:
    with engine.connect() as connection:
        return list(
            connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalars()
        )


def test_there_is_one_line_of_revisions_starting_at_the_baseline() -> None:
    scripts = ScriptDirectory.from_config(migrations.alembic_config())

    assert scripts.get_bases() == [migrations.BASELINE]
    assert len(scripts.get_heads()) == 1


def test_an_empty_database_upgraded_to_head_has_the_tables_as_defined(
    settings: Settings, engine: sa.Engine
) -> None:
    initialize_schema(settings)

    assert table_names(engine) >= set(metadata.tables)
    assert differences(engine) == []
    assert migrations.current_revision(engine) == migrations.head_revision()


ADDED_SINCE_BASELINE = {"parked_events"}  # revision 0002


def test_a_database_made_by_create_all_is_stamped_and_keeps_its_rows(
    settings: Settings, engine: sa.Engine
) -> None:
    with engine.begin() as connection:
        # what create_all made then: the tables of the baseline, not those added since
        baseline = [t for name, t in metadata.tables.items() if name not in ADDED_SINCE_BASELINE]
        metadata.create_all(connection, tables=baseline)
        connection.execute(
            sa.insert(projection_tracking).values(name="metrics", position=41, updated_at=NOW)
        )
        connection.execute(
            sa.insert(process_definitions).values(
                name="echo", version=1, content_hash="h" * 64, document={}, registered_at=NOW
            )
        )
        connection.execute(sa.insert(token_revocations).values(subject="mallory", revoked_at=1.5))
        copy = create_version(connection, "metrics", 2)  # a rebuild's table set
        connection.execute(sa.insert(copy["event_counts"]).values(type="ExecutionStarted", count=7))
    assert "alembic_version" not in table_names(engine)

    initialize_schema(settings)

    assert versions_recorded(engine) == [migrations.head_revision()]
    assert differences(engine) == []
    with engine.connect() as connection:
        tracked = sa.select(projection_tracking.c.position).order_by(projection_tracking.c.name)
        assert connection.execute(tracked).all() == [(41,), (0,)]
        assert connection.execute(sa.select(process_definitions.c.name)).scalars().all() == ["echo"]
        assert connection.execute(sa.select(token_revocations.c.revoked_at)).scalar() == 1.5
        assert connection.execute(sa.select(copy["event_counts"].c.count)).scalar() == 7


def store_env(settings: Settings) -> dict[str, str]:
    """The environment that points a command at the same store (an empty URL means SQLite)."""
    return {
        "AGENT_LEDGER_DATA_DIR": str(settings.data_dir),
        "AGENT_LEDGER_DATABASE_URL": settings.database_url or "",
    }


def test_the_db_commands_upgrade_and_report_the_revision(settings: Settings) -> None:
    runner = CliRunner()
    head = migrations.head_revision()

    before = runner.invoke(app, ["db", "current"], env=store_env(settings))
    upgraded = runner.invoke(app, ["db", "upgrade"], env=store_env(settings))

    assert (before.exit_code, before.output) == (0, f"none (head: {head})\n")
    assert (upgraded.exit_code, upgraded.output) == (0, f"{head} (head: {head})\n")


INITIALIZE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from agent_ledger.infrastructure.schema import initialize_schema
    from agent_ledger.infrastructure.settings import Settings

    ready, go = Path(sys.argv[1]), Path(sys.argv[2])
    settings = Settings()
    ready.touch()
    deadline = time.monotonic() + 60
    while not go.exists():
        assert time.monotonic() < deadline, "never told to go"
        time.sleep(0.005)
    initialize_schema(settings)
    """
)


def wait_until_ready(process: subprocess.Popen[bytes], path: Path) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert process.poll() is None, process.communicate()[0].decode()
        assert time.monotonic() < deadline, "a process never got ready"
        time.sleep(0.01)


def test_processes_starting_together_initialize_the_schema_once(
    settings: Settings, engine: sa.Engine, tmp_path: Path
) -> None:
    env = {**os.environ, **store_env(settings)}
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{n}" for n in range(3)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", INITIALIZE, str(path), str(go)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for path in ready
    ]
    try:
        for process, path in zip(processes, ready, strict=True):
            wait_until_ready(process, path)
        go.touch()
        outputs = [process.communicate(timeout=90)[0].decode() for process in processes]
    finally:
        for process in processes:
            process.kill()
            process.wait(timeout=10)

    assert [process.returncode for process in processes] == [0, 0, 0], outputs
    initialize_schema(settings)  # and once more, after them
    assert versions_recorded(engine) == [migrations.head_revision()]
    assert differences(engine) == []


def test_a_rebuild_after_migrating_works_and_migrations_leave_its_tables_alone(
    settings: Settings,
) -> None:
    runtime = Runtime.start(settings, engine=False, projector=True)
    try:
        echo = runtime.catalog.get("echo")
        started = [
            start_execution(
                runtime.executions, StartRequest(user_id="ada", process=echo, input={"n": n})
            )
            for n in range(3)
        ]
        assert runtime.wait_for_projection(started[-1].position, timeout=30)

        final = Rebuild(runtime.executions, runtime.read_engine, "execution_status").run(0)

        assert (final.version, final.switched) == (2, True)
        for run in started:
            row = runtime.statuses.get(run.execution_id, "ada")
            assert row is not None
    finally:
        runtime.stop()

    initialize_schema(settings)  # a later start migrates beside the rebuilt tables

    engine = read_model_engine(settings)
    try:
        rebuilt = table_set("execution_status", 2)["execution_status"]
        with engine.connect() as connection:
            assert active_version(connection, "execution_status") == 2
            assert connection.execute(sa.select(sa.func.count()).select_from(rebuilt)).scalar() == 3
        assert migrations.current_revision(engine) == migrations.head_revision()
        # the rebuild dropped version 1's tables; nothing proposes to touch the `_v2` ones
        assert not any("_v2" in repr(change) for change in differences(engine))
    finally:
        engine.dispose()
