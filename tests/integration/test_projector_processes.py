"""`agent-ledger projector` processes killed with SIGKILL, and `projections rebuild` under load:
the tables always equal a rebuild from scratch, and clients never see an error."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from agent_ledger.application.starter import StartRequest, start_execution
from agent_ledger.infrastructure.api.app import create_app
from agent_ledger.infrastructure.auth.tokens import issue_token
from agent_ledger.infrastructure.read_models.rebuild import build_copy
from agent_ledger.infrastructure.read_models.registry import all_projection_names
from agent_ledger.infrastructure.read_models.table_sets import active_tables, drop_version
from agent_ledger.infrastructure.read_models.tables import event_index
from agent_ledger.infrastructure.read_models.tracking import active_position
from agent_ledger.infrastructure.runtime import Runtime
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.persistence import EVENTS_TABLE
from tests.support.asgi_client import TestClient
from tests.support.waiting import wait_until

pytestmark = pytest.mark.postgres

SECRET = "projector-secret-" + "s" * 32
AGENT_LEDGER = shutil.which("agent-ledger", path=os.path.dirname(sys.executable))
AUDITOR = {"Authorization": f"Bearer {issue_token(SECRET, 'auditor', ['auditor'])}"}


class Projectors:
    """Two `agent-ledger projector` processes; the test kills and restarts them."""

    def __init__(self, env: dict[str, str], log_dir: Path):
        assert AGENT_LEDGER, "the agent-ledger console script is not installed next to python"
        self.env = env
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        with (self.log_dir / f"projector-{len(self.processes)}.log").open("ab") as log:
            process = subprocess.Popen(
                [AGENT_LEDGER, "projector", "--log-level", "warning"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(process)
        return process

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.processes if p.poll() is None]

    def stop_all(self) -> None:
        for process in self.alive():
            process.kill()
        for process in self.processes:
            process.wait(timeout=10)


def lock_holders(dsn: str) -> set[int]:
    """OS process ids of the projectors holding a projection lock (named by application)."""
    with psycopg.connect(dsn) as connection:
        rows = connection.execute(
            "SELECT DISTINCT a.application_name FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted "
            "AND a.application_name LIKE 'agent-ledger projector %'"
        ).fetchall()
    return {int(str(r[0]).rsplit(" ", 1)[1]) for r in rows}


@pytest.fixture(scope="module")
def writer(settings: Settings) -> Iterator[Runtime]:
    """The engine alone: it writes the events; projections run in other processes."""
    runtime = Runtime.start(settings, engine=True, projector=False)
    try:
        yield runtime
    finally:
        runtime.stop()


@pytest.fixture(scope="module")
def projectors(
    settings: Settings, writer: Runtime, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Projectors]:
    env = {
        **os.environ,
        "AGENT_LEDGER_DATABASE_URL": str(settings.database_url),
        "AGENT_LEDGER_JWT_SECRET": SECRET,
        "AGENT_LEDGER_DATA_DIR": str(settings.data_dir),
        "AGENT_LEDGER_POLL_INTERVAL": "0.1",
    }
    running = Projectors(env, tmp_path_factory.mktemp("logs"))
    running.start()
    running.start()
    try:
        yield running
    finally:
        running.stop_all()


def start_executions(runtime: Runtime, count: int, tag: str) -> int:
    position = 0
    for index in range(count):
        process = runtime.catalog.get("cost_optimization" if index % 3 == 0 else "echo")
        started = start_execution(
            runtime.executions,
            StartRequest(
                user_id=f"user-{index % 4}", process=process, input={"question": tag, "n": index}
            ),
        )
        position = started.position
    return position


def caught_up(engine: sa.Engine, head: int) -> bool:
    with engine.connect() as connection:
        return all(active_position(connection, n) >= head for n in all_projection_names())


def rows(engine: sa.Engine, table: sa.Table) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        query = sa.select(table).order_by(*table.primary_key.columns)
        return [tuple(r) for r in connection.execute(query)]


def assert_equal_to_a_rebuild(runtime: Runtime) -> None:
    """Once quiet, every projection's live tables equal a fresh build from the whole log."""
    engine = runtime.read_engine
    wait_until(lambda: not runtime.statuses.unfinished_ids(), 60, "every execution to finish")
    head = runtime.executions.last_position()
    wait_until(lambda: caught_up(engine, head), 60, "the projectors to apply the last events")
    for name in ("execution_status", "metrics"):
        copy = build_copy(runtime.executions, engine, name)
        try:
            with engine.connect() as connection:
                live = active_tables(connection, name)
            for base, table in live.tables.items():
                assert rows(engine, table) == rows(engine, copy[base]), f"{name}.{base}"
        finally:
            with engine.begin() as connection:
                drop_version(connection, name, copy.version)
    with engine.connect() as connection:
        indexed = connection.execute(sa.select(sa.func.count()).select_from(event_index)).scalar()
        stored = connection.execute(sa.text(f"SELECT count(*) FROM {EVENTS_TABLE}")).scalar()
    assert indexed == stored


def test_projectors_killed_repeatedly_leave_tables_equal_to_a_rebuild(
    settings: Settings, writer: Runtime, projectors: Projectors
) -> None:
    dsn = str(settings.database_url)
    wait_until(lambda: lock_holders(dsn), 30, "a projector to take the locks")
    for round_ in range(6):
        head = start_executions(writer, 8, f"round {round_}")
        wait_until(
            lambda h=head: caught_up(writer.read_engine, h - 20), 30, "the projectors to move"
        )
        victims = lock_holders(dsn)
        for process in projectors.alive():
            if process.pid in victims:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        projectors.start()

    assert len(projectors.processes) == 8
    assert_equal_to_a_rebuild(writer)


def test_a_rebuild_while_clients_query_switches_versions_without_an_error(
    settings: Settings, writer: Runtime, projectors: Projectors
) -> None:
    head = start_executions(writer, 6, "before the rebuild")
    wait_until(lambda: caught_up(writer.read_engine, head), 30, "the projectors")
    statuses: list[int] = []
    stop = threading.Event()
    with TestClient(create_app(settings, writer)) as client:
        before = client.get("/v1/metrics/processes", headers=AUDITOR).json()["items"]
        versions = {n: p["version"] for n, p in client.get("/readyz").json()["projections"].items()}

        def query() -> None:
            while not stop.is_set():
                for path in ("/v1/metrics/agents", "/v1/executions", "/v1/metrics/processes"):
                    statuses.append(client.get(path, headers=AUDITOR).status_code)

        clients = [threading.Thread(target=query) for _ in range(2)]
        for thread in clients:
            thread.start()
        try:
            results = [
                subprocess.run(
                    [AGENT_LEDGER, "projections", "rebuild", name, "--grace", "0.5"],
                    env=projectors.env,
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )
                for name in ("metrics", "execution_status")
            ]
        finally:
            stop.set()
            for thread in clients:
                thread.join(timeout=30)
        after = client.get("/v1/metrics/processes", headers=AUDITOR).json()["items"]
        ready = client.get("/readyz").json()

    for result in results:
        assert result.returncode == 0, result.stderr
        assert "events/s" in result.stderr
        assert "switched at position" in result.stderr
    assert statuses
    assert set(statuses) == {200}
    for name in ("metrics", "execution_status"):
        assert ready["projections"][name]["version"] > versions[name]
    assert [i["totals"]["runs"] for i in after] == [i["totals"]["runs"] for i in before]
    assert_equal_to_a_rebuild(writer)
