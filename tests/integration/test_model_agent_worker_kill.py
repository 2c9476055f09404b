"""A worker SIGKILLed while a model streams: the attempt is run again by another worker, and
what the first attempt recorded (its tool call, its model call, its partial answer) stays."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_ledger.application.agents import AgentRegistry
from agent_ledger.application.builtin_agents import register_builtin_agents
from agent_ledger.application.event_log import to_message
from agent_ledger.application.starter import StartRequest, start_execution
from agent_ledger.infrastructure.catalog.sql import SqlProcessCatalog
from agent_ledger.infrastructure.runtime import registration_checks
from agent_ledger.infrastructure.schema import initialize_schema
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.persistence import open_executions, read_model_engine
from tests.support.openai_stub import OpenAiStub, Reply
from tests.support.stores import short_lease_settings
from tests.support.waiting import wait_until
from tests.support.workers import worker_environment

pytestmark = pytest.mark.postgres

SECRET = "model-kill-secret-" + "k" * 30
ANSWER = "Idle GPU capacity is the first thing to cut; then move batch traffic to a smaller model."
MODEL = "kill-test-model"

PROCESS = {
    "name": "model_kill",
    "steps": [
        {
            "id": "analyst",
            "type": "agent_task",
            "agent": {
                "llm": {"model": MODEL, "prompt": "{{ input.q }}", "tools": ["idle_capacity"]}
            },
        }
    ],
    "output": "{{ steps.analyst.output }}",
}


@pytest.fixture
def stub() -> Iterator[OpenAiStub]:
    with OpenAiStub.running() as stub:
        yield stub


@pytest.fixture
def settings(postgres_url: str, tmp_path: Path, stub: OpenAiStub) -> Settings:
    base = short_lease_settings(postgres_url, SECRET, tmp_path)
    return base.model_copy(update={"llm_base_url": stub.base_url})


def start_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    environment = {
        **worker_environment(settings),
        "AGENT_LEDGER_LLM_BASE_URL": str(settings.llm_base_url),
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "agent-ledger"), "worker"],
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_a_worker_killed_mid_stream_leaves_its_attempt_recorded_and_another_finishes(
    settings: Settings, stub: OpenAiStub, tmp_path: Path
) -> None:
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
        stub.queue(
            MODEL,
            Reply(tool_calls=[("idle_capacity", {"days": 30})]),
            Reply(text=ANSWER, piece=2, pause_after=10),  # the first worker dies here
            Reply(tool_calls=[("idle_capacity", {"days": 30})]),
            Reply(text=ANSWER, piece=2),
        )
        started = start_execution(
            executions, StartRequest(user_id="user-k", process=registered, input={"q": "cut?"})
        )
        execution_id = started.execution_id

        def messages() -> list[dict[str, Any]]:
            return [to_message(e) for e in executions.get_history(execution_id)]

        workers.append(start_worker(settings, tmp_path / "worker-1.log"))
        assert stub.paused.wait(30), "the model's stream did not start"
        wait_until(
            lambda: any(m["type"] == "agent_output_delta" for m in messages()),
            what="a piece of the answer to be recorded before the kill",
        )
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(10)

        workers.append(start_worker(settings, tmp_path / "worker-2.log"))
        execution = wait_until(
            lambda: (e := executions.get_execution(execution_id)).status.is_terminal and e,
            timeout=60,
            what="another worker to finish the execution",
        )
        assert execution.status.value == "completed", (tmp_path / "worker-2.log").read_text()
        assert execution.output == ANSWER

        history = messages()
        by_attempt = {
            attempt: [m for m in history if m["data"].get("attempt") == attempt]
            for attempt in (1, 2)
        }
        first, second = by_attempt[1], by_attempt[2]
        assert [m["type"] for m in first if m["type"] == "tool_completed"] == ["tool_completed"]
        assert [m["type"] for m in first if m["type"] == "llm_call_completed"] == [
            "llm_call_completed"
        ]
        partial = "".join(m["data"]["text"] for m in first if m["type"] == "agent_output_delta")
        assert partial
        assert ANSWER.startswith(partial)
        assert partial != ANSWER
        retried = [m for m in history if m["type"] == "step_retrying"]
        assert retried[0]["data"]["error"]["type"] == "WorkerLost"
        streamed = "".join(m["data"]["text"] for m in second if m["type"] == "agent_output_delta")
        assert streamed == ANSWER
        completed = next(m for m in second if m["type"] == "agent_completed")
        assert completed["data"]["usage"]["model_calls"] == 2
        assert stub.abandoned == 1  # the killed worker's stream was cut, not finished
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)
        executions.close()
