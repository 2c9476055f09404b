"""Executions' traces, built from their recorded events, through the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any, cast
from uuid import UUID, uuid4

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from agent_ledger.application.agents import AgentContext, AgentRun, RemoteAgentContext
from agent_ledger.application.starter import StartRequest, start_execution
from agent_ledger.application.work import Fence
from agent_ledger.domain.processes import HttpAgent
from agent_ledger.infrastructure.agents.egress import AgentUrlPolicy
from agent_ledger.infrastructure.agents.http import HttpAgentClient
from agent_ledger.infrastructure.telemetry.caller_traces import CallerTraces
from agent_ledger.infrastructure.telemetry.spans import readable_span
from agent_ledger.projections.traces import (
    attempt_traceparent,
    parse_traceparent,
    span_id_of,
    spans_ended_between,
    trace_of,
)
from tests.support.engine_harness import EngineHarness

CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def exported(harness: EngineHarness, execution_id: UUID) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    history = harness.executions.get_history(execution_id)
    resource = Resource.create({"service.name": "agent-ledger"})
    exporter.export([readable_span(s, resource) for s in trace_of(execution_id, history)])
    return list(exporter.get_finished_spans())


def sample_run(traceparent: str | None = None) -> tuple[EngineHarness, UUID]:
    harness = EngineHarness()
    execution_id = start_execution(
        harness.executions,
        StartRequest(
            user_id="user-a",
            process=harness.catalog.get("cost_optimization"),
            input={"question": "Where can we cut our LLM spend?"},
            correlation_id=traceparent,
        ),
    ).execution_id
    asyncio.run(harness.run(execution_id))
    return harness, execution_id


def test_the_sample_process_is_one_trace_of_execution_steps_attempts_and_tool_calls() -> None:
    harness, execution_id = sample_run()

    spans = exported(harness, execution_id)

    assert {s.context.trace_id for s in spans} == {execution_id.int}
    by_id = {s.context.span_id: s for s in spans}
    (root,) = [s for s in spans if s.parent is None]
    assert root.name == "execution cost_optimization"
    steps = [s for s in spans if s.name.startswith("step ")]
    assert sorted(s.name for s in steps) == [
        "step data",
        "step optimization",
        "step summary",
        "step triage",
    ]
    assert all(s.parent is not None and s.parent.span_id == root.context.span_id for s in steps)
    agents = [s for s in spans if s.name.startswith("invoke_agent ")]
    assert len(agents) == 4
    for agent in agents:
        assert agent.parent is not None
        assert (
            by_id[agent.parent.span_id].name == f"step {agent.attributes['agent_ledger.step_id']}"
        )
        assert agent.attributes["gen_ai.operation.name"] == "invoke_agent"
    tools = [s for s in spans if s.name.startswith("execute_tool ")]
    assert tools
    for tool in tools:
        assert tool.parent is not None
        assert by_id[tool.parent.span_id].name.startswith("invoke_agent ")
        assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
        assert tool.start_time is not None
        assert tool.end_time is not None
        assert tool.start_time <= tool.end_time
    for span in spans:
        assert span.attributes["agent_ledger.execution_id"] == str(execution_id)
        assert span.attributes["agent_ledger.user_id"] == "user-a"
        assert isinstance(span.attributes["agent_ledger.position"], int)
    assert root.start_time is not None
    assert root.end_time is not None
    assert all(root.start_time <= s.start_time <= s.end_time <= root.end_time for s in spans)  # type: ignore[operator]


def test_a_callers_traceparent_makes_the_execution_a_child_of_the_callers_span() -> None:
    harness, execution_id = sample_run(CALLER)

    spans = exported(harness, execution_id)

    assert {s.context.trace_id for s in spans} == {0x4BF92F3577B34DA6A3CE929D0E0E4736}
    (root,) = [s for s in spans if s.name == "execution cost_optimization"]
    assert root.parent is not None
    assert root.parent.span_id == 0x00F067AA0BA902B7
    assert root.parent.is_remote


def test_spans_exported_batch_by_batch_equal_the_rebuilt_trace() -> None:
    harness, execution_id = sample_run()
    history = harness.executions.get_history(execution_id)
    positions = [e.position for e in history]

    live = []
    after = 0
    for upto in [*positions[2::3], positions[-1]]:  # a follower that reads every third event
        live += spans_ended_between(
            execution_id, [e for e in history if e.position <= upto], after, upto
        )
        after = upto

    assert live == trace_of(execution_id, history)


def test_a_takeover_by_another_worker_continues_the_same_trace() -> None:
    harness = EngineHarness()

    async def work(context: AgentContext, data: Any) -> Any:
        return {"attempt": context.run.attempt}

    harness.agent("work", work)
    name = harness.process(
        {
            "name": "flow",
            "config": {"parallel_execution": False},
            "steps": [{"id": "a", "type": "agent_task", "agent": "work", "input": {}}],
        }
    )
    execution_id = harness.start(name)
    assert harness.queue.claim("dead-worker", 1, lease_seconds=-1)
    execution = harness.executions.get_execution(execution_id)
    execution.schedule_step("a", 1)
    execution.start_step("a", 1)
    harness.executions.save(execution, work=[Fence(execution_id, "dead-worker")])
    before = [e.position for e in harness.executions.get_history(execution_id)][-1]

    asyncio.run(harness.run(execution_id))  # worker-1 takes it over

    history = harness.executions.get_history(execution_id)
    spans = trace_of(execution_id, history)
    assert {s.trace_id for s in spans} == {execution_id.int}
    attempts = {s.name: s for s in spans if s.name.startswith(("attempt", "invoke_agent"))}
    assert set(attempts) == {"attempt a#1", "invoke_agent work"}
    assert attempts["attempt a#1"].error is not None  # lost with its worker, then retried
    step = next(s for s in spans if s.name == "step a")
    assert all(a.parent_id == step.span_id for a in attempts.values())
    assert [s for s in spans if s.ended_at <= before] == []  # nothing had ended before
    # the second attempt's span is the one the worker announced to the agent
    assert attempt_traceparent(execution_id, "a", 2) == (
        f"00-{execution_id.int:032x}-{span_id_of(execution_id, 'attempt', 'a', 2):016x}-01"
    )
    assert attempts["invoke_agent work"].span_id == span_id_of(execution_id, "attempt", "a", 2)


def test_a_failed_tool_call_and_step_carry_an_error_status() -> None:
    harness = EngineHarness()

    async def broken(context: AgentContext, data: Any) -> Any:
        await context.report_tool_started("c1", "lookup", {})
        await context.report_tool_finished("c1", error="no such row")
        raise RuntimeError("boom")

    harness.agent("broken", broken)
    name = harness.process(
        {
            "name": "broken",
            "config": {"parallel_execution": False},
            "steps": [{"id": "a", "type": "agent_task", "agent": "broken", "input": {}}],
        }
    )
    execution_id = harness.start(name)
    asyncio.run(harness.run(execution_id))

    spans = {s.name: s for s in exported(harness, execution_id)}

    assert spans["execute_tool lookup"].status.status_code is StatusCode.ERROR
    assert spans["execute_tool lookup"].attributes["gen_ai.tool.call.id"] == "c1"
    assert spans["execute_tool lookup"].attributes["error.type"] == "ToolError"
    assert spans["execution broken"].status.status_code is StatusCode.ERROR


def test_only_a_w3c_traceparent_is_taken_as_the_callers() -> None:
    assert parse_traceparent(CALLER) == (0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7)
    assert parse_traceparent("req-42") is None
    assert parse_traceparent("00-" + "0" * 32 + "-00f067aa0ba902b7-01") is None


@dataclass
class Logged:
    position: int
    type: str
    event: Any


def test_a_model_call_is_a_chat_span_with_its_model_and_token_usage() -> None:
    execution_id, start = uuid4(), datetime(2026, 12, 1, tzinfo=UTC)

    def at(seconds: float, **fields: Any) -> SimpleNamespace:
        return SimpleNamespace(timestamp=start + timedelta(seconds=seconds), **fields)

    step = {"step_id": "answer", "attempt": 1}
    history = [
        Logged(1, "execution_started", at(0, user_id="u", process_name="llm", correlation_id=None)),
        Logged(2, "step_started", at(1, **step)),
        Logged(3, "agent_started", at(1, agent="model", **step)),
        Logged(
            4,
            "llm_call_completed",
            at(
                3,
                model="gpt-4o-mini",
                prompt_tokens=120,
                completion_tokens=30,
                duration_ms=1500.0,
                cost_usd=0.0001,
                **step,
            ),
        ),
        Logged(5, "step_completed", at(4, output="ok", **step)),
        Logged(6, "step_skipped", at(4, step_id="fallback", attempt=0, reason="not taken")),
        Logged(7, "execution_completed", at(4, output="ok")),
    ]

    spans = {s.name: s for s in trace_of(execution_id, history)}

    chat = spans["chat gpt-4o-mini"]
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert chat.attributes["gen_ai.usage.input_tokens"] == 120
    assert chat.attributes["gen_ai.usage.output_tokens"] == 30
    assert chat.end_ns - chat.start_ns == 1_500_000_000
    assert chat.parent_id == spans["invoke_agent model"].span_id
    assert spans["invoke_agent model"].parent_id == spans["step answer"].span_id
    assert spans["step answer"].parent_id == spans["execution llm"].span_id
    assert chat.attributes["agent_ledger.position"] == 4
    assert spans["step fallback"].parent_id == spans["execution llm"].span_id
    assert not [name for name in spans if name.startswith("attempt fallback")]  # never ran
    assert readable_span(chat, Resource.create({})).kind is SpanKind.CLIENT


def test_an_http_agent_is_sent_the_attempts_traceparent_in_the_callers_trace() -> None:
    harness, execution_id = sample_run(CALLER)
    seen: list[str | None] = []

    class Agent(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(self.headers.get("traceparent"))
            body = json.dumps({"output": "ok"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Agent)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    run = AgentRun("user-a", execution_id, "data", 1)
    client = HttpAgentClient(
        egress=AgentUrlPolicy.from_setting("127.0.0.0/8"),
        traceparent=CallerTraces(harness.executions).traceparent,
    )

    async def call() -> Any:
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/run"
            return await client(
                HttpAgent(url), cast(RemoteAgentContext, SimpleNamespace(run=run)), {}
            )
        finally:
            await client.aclose()

    try:
        assert asyncio.run(call()) == "ok"
    finally:
        server.shutdown()
        server.server_close()

    attempt = span_id_of(execution_id, "attempt", "data", 1)
    assert seen == [f"00-4bf92f3577b34da6a3ce929d0e0e4736-{attempt:016x}-01"]
    spans = trace_of(execution_id, harness.executions.get_history(execution_id))
    assert attempt in {s.span_id for s in spans}  # the agent's caller is a span of the trace
