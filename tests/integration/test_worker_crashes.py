"""Worker processes killed with SIGKILL at random moments: every execution still finishes once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import psycopg
import pytest

from agent_ledger.application.executions import Executions
from agent_ledger.application.starter import StartRequest, start_execution
from agent_ledger.domain.event_names import event_type
from agent_ledger.infrastructure.catalog.sql import SqlProcessCatalog
from agent_ledger.infrastructure.schema import initialize_schema
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.persistence import open_executions, read_model_engine
from agent_ledger.infrastructure.store.work_queue import WORK_TABLE
from tests.support.stores import short_lease_settings
from tests.support.workers import worker_environment

EXECUTIONS = 60
WORKERS = 3
KILLS = 6
SECRET = "crash-test-secret-" + "x" * 30
TERMINAL = {"execution_completed", "execution_failed", "execution_cancelled", "execution_timed_out"}

CRASHABLE = {
    "name": "crashable",
    "config": {"parallel_execution": True},
    "steps": [
        {"id": "first", "type": "agent_task", "agent": "echo", "input": {"n": "{{ input.n }}"}},
        {"id": "pause", "type": "timer", "seconds": 1.0, "depends_on": ["first"]},
        {
            "id": "side",
            "type": "agent_task",
            "agent": "echo",
            "input": {"side": True},
            "depends_on": ["first"],
        },
        {
            "id": "last",
            "type": "agent_task",
            "agent": "echo",
            "input": {"n": "{{ steps.first.output.n }}"},
            "depends_on": ["pause", "side"],
        },
    ],
    "output": "{{ steps.last.output }}",
}


@pytest.fixture
def settings(postgres_url: str, tmp_path: Path) -> Settings:
    return short_lease_settings(postgres_url, SECRET, tmp_path)


class Workers:
    """Real `agent-ledger worker` processes that the test kills and replaces."""

    def __init__(self, settings: Settings, log_dir: Path):
        self.environment = worker_environment(settings)
        self.command = [
            str(Path(sys.executable).parent / "agent-ledger"),
            "worker",
            "--log-level",
            "info",
        ]
        self.log_dir = log_dir
        self.running: list[subprocess.Popen[bytes]] = []
        self.started = 0

    def start(self) -> None:
        self.started += 1
        with (self.log_dir / f"worker-{self.started}.log").open("wb") as log:
            self.running.append(
                subprocess.Popen(
                    self.command, env=self.environment, stdout=log, stderr=subprocess.STDOUT
                )
            )

    def wait_until_running(self, timeout: float = 30) -> None:
        """Every worker started so far has announced that it is claiming work."""
        deadline = time.monotonic() + timeout
        logs = [self.log_dir / f"worker-{n}.log" for n in range(1, self.started + 1)]
        while time.monotonic() < deadline:
            if all("running (worker" in log.read_text() for log in logs):
                return
            time.sleep(0.05)
        raise TimeoutError("the workers did not start")

    def kill_one(self, chooser: random.Random, holders: set[int]) -> bool:
        """SIGKILL a worker, preferring one that holds leases; True if it held any."""
        holding = [p for p in self.running if p.pid in holders]
        victim = chooser.choice(holding or self.running)
        self.running.remove(victim)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        return victim in holding

    def stop_all(self) -> None:
        for process in self.running:
            process.kill()
        for process in self.running:
            process.wait(10)
        self.running.clear()


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[Workers]:
    initialize_schema(settings)
    pool = Workers(settings, tmp_path)
    try:
        yield pool
    finally:
        pool.stop_all()


def lease_holders(settings: Settings) -> set[int]:
    """Process ids of the workers holding a lease right now (names are host:pid:suffix)."""
    with psycopg.connect(str(settings.database_url)) as connection:
        rows = connection.execute(
            f"SELECT DISTINCT lease_owner FROM {WORK_TABLE} WHERE lease_owner IS NOT NULL"
        ).fetchall()
    return {int(owner.split(":")[1]) for (owner,) in rows}


def wait_until_finished(executions: Executions, ids: list[UUID], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    waiting = set(ids)
    while waiting and time.monotonic() < deadline:
        waiting = {i for i in waiting if not executions.get_execution(i).status.is_terminal}
        if waiting:
            time.sleep(0.2)
    assert not waiting, f"{len(waiting)} executions never finished"


def test_killing_workers_at_random_loses_no_execution_and_completes_nothing_twice(
    settings: Settings, workers: Workers
) -> None:
    chooser = random.Random(os.environ.get("CRASH_SEED", "7"))
    executions = open_executions(settings)
    engine = read_model_engine(settings)
    try:
        catalog = SqlProcessCatalog(engine)
        process, _ = catalog.register(CRASHABLE)
        for _ in range(WORKERS):
            workers.start()
        workers.wait_until_running()
        ids = [
            start_execution(
                executions, StartRequest(user_id=f"user-{n % 5}", process=process, input={"n": n})
            ).execution_id
            for n in range(EXECUTIONS)
        ]
        landed = 0
        for _ in range(KILLS):
            time.sleep(chooser.uniform(0.2, 0.7))  # a random moment of the run
            landed += workers.kill_one(chooser, lease_holders(settings))
            workers.start()

        wait_until_finished(executions, ids, timeout=90)

        taken_over = 0
        for n, execution_id in enumerate(ids):
            history = [event_type(e.event) for e in executions.get_history(execution_id)]
            events = [e.event for e in executions.get_history(execution_id)]
            assert sum(t in TERMINAL for t in history) == 1
            assert executions.get_execution(execution_id).output == {"n": n}
            completed = Counter(e.step_id for e in events if event_type(e) == "step_completed")
            assert completed == {"first": 1, "pause": 1, "side": 1, "last": 1}
            taken_over += history.count("execution_taken_over")
        assert workers.started == WORKERS + KILLS
        assert landed >= 1, "no kill landed while a worker held an execution"
        assert taken_over >= 1
    finally:
        executions.close()
        engine.dispose()
