"""A worker SIGKILLed while an execution waits for a signal, then the signal arrives: the
execution held no lease, so the next worker takes it at once and it completes exactly once."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from agent_ledger.application.agents import AgentRegistry
from agent_ledger.application.builtin_agents import register_builtin_agents
from agent_ledger.application.event_log import to_message
from agent_ledger.application.signals import SignalRequest, send_signal
from agent_ledger.application.starter import StartRequest, start_execution
from agent_ledger.infrastructure.catalog.sql import SqlProcessCatalog
from agent_ledger.infrastructure.runtime import registration_checks
from agent_ledger.infrastructure.schema import initialize_schema
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.persistence import open_executions, read_model_engine
from tests.support.stores import short_lease_settings
from tests.support.waiting import wait_until
from tests.support.workers import worker_environment

pytestmark = pytest.mark.postgres

SECRET = "signal-kill-secret-" + "k" * 30
PROCESS = {
    "name": "signal_kill",
    "steps": [
        {"id": "review", "type": "wait_for_signal", "signal": "approval"},
        {"id": "after", "type": "agent_task", "agent": "echo", "depends_on": ["review"]},
    ],
    "output": "{{ steps.review.output }}",
}


def start_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "agent-ledger"), "worker"],
            env=worker_environment(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_a_signal_to_an_execution_whose_worker_was_killed_completes_it_once(
    postgres_url: str, tmp_path: Path
) -> None:
    settings = short_lease_settings(postgres_url, SECRET, tmp_path)
    initialize_schema(settings)
    agents = AgentRegistry()
    register_builtin_agents(agents)
    read_engine = read_model_engine(settings)
    catalog = SqlProcessCatalog(read_engine, checks=registration_checks(settings, agents))
    registered, _ = catalog.register(PROCESS)
    read_engine.dispose()
    executions = open_executions(settings)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        execution_id = start_execution(
            executions, StartRequest(user_id="user-k", process=registered, input={})
        ).execution_id
        workers.append(start_worker(settings, tmp_path / "worker-1.log"))
        wait_until(
            lambda: executions.get_execution(execution_id).status.value == "waiting",
            timeout=30,
            what="the execution to wait for its signal",
        )
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(10)

        send_signal(
            executions,
            SignalRequest(execution_id, "approval", {"ok": 1}, "user-k", frozenset({"user"})),
        )
        workers.append(start_worker(settings, tmp_path / "worker-2.log"))
        execution = wait_until(
            lambda: (e := executions.get_execution(execution_id)).status.is_terminal and e,
            timeout=30,
            what="the next worker to finish the execution",
        )

        assert execution.status.value == "completed", (tmp_path / "worker-2.log").read_text()
        assert execution.output == {"ok": 1}
        history = [to_message(e) for e in executions.get_history(execution_id)]
        counts = Counter(m["type"] for m in history)
        assert counts["execution_completed"] == 1
        assert counts["signal_received"] == 1
        assert counts["signal_awaited"] == 1
        assert counts["execution_taken_over"] == 0  # it held no lease to take over
        review = [m for m in history if m["data"].get("step_id") == "review"]
        assert [m["type"] for m in review].count("step_completed") == 1
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)
        executions.close()
