"""HTTP agents (SPEC §3.3) against a small real HTTP server, on real PostgreSQL."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agent_ledger.domain.execution_state import ExecutionStatus
from agent_ledger.infrastructure.catalog.sql import SqlProcessCatalog
from tests.support.engine_scenarios import (
    Engine,
    agent_step,
    engine_settings,
    events_of,
    of_step,
    process,
    running_engine,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.postgres

NDJSON = "application/x-ndjson"


@dataclass
class AgentServer:
    """What the HTTP agent server received, and which requests the client abandoned."""

    base_url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    waiting: set[str] = field(default_factory=set)
    disconnected: set[str] = field(default_factory=set)

    def url(self, path: str) -> dict[str, str]:
        return {"url": f"{self.base_url}{path}"}

    def received(self, path: str, execution_id: Any) -> list[dict[str, Any]]:
        with self.lock:
            return [
                p for r, p in self.requests if r == path and p["execution_id"] == str(execution_id)
            ]

    def is_waiting(self, execution_id: Any) -> bool:
        with self.lock:
            return str(execution_id) in self.waiting

    def saw_disconnect(self, execution_id: Any) -> bool:
        with self.lock:
            return str(execution_id) in self.disconnected


def handler_for(server: AgentServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test reads what it needs from `server`."""

        def do_POST(self) -> None:
            payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with server.lock:
                server.requests.append((self.path, payload))
            route = getattr(self, "route_" + self.path.strip("/").replace("-", "_"))
            route(payload)

        def answer(self, status: int, body: Any, content_type: str = "application/json") -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def stream(self, *lines: dict[str, Any] | float) -> None:
            """Send NDJSON lines; a number is a pause, in seconds, between lines."""
            self.send_response(200)
            self.send_header("Content-Type", NDJSON)
            self.end_headers()
            for line in lines:
                if isinstance(line, float):
                    time.sleep(line)
                    continue
                self.wfile.write(json.dumps(line).encode() + b"\n")
                self.wfile.flush()

        def route_json(self, payload: dict[str, Any]) -> None:
            self.answer(200, {"output": {"echo": payload["input"], "attempt": payload["attempt"]}})

        def route_stream(self, payload: dict[str, Any]) -> None:
            self.stream(
                {"type": "thinking", "message": "looking it up"},
                {"type": "tool_executing", "call_id": "c1", "tool": "search", "args": {"q": "x"}},
                0.05,
                {"type": "tool_completed", "call_id": "c1", "result": {"hits": 2}},
                {"type": "result", "output": {"answer": 42}},
            )

        def route_failing_tool(self, payload: dict[str, Any]) -> None:
            self.stream(
                {"type": "tool_executing", "call_id": "t9", "tool": "lookup", "args": {}},
                {"type": "tool_failed", "call_id": "t9", "error": "index offline"},
                {"type": "error", "message": "cannot continue", "retryable": False},
            )

        def route_broken(self, payload: dict[str, Any]) -> None:
            self.stream({"type": "thinking", "message": "about to drop the line"})

        def route_unavailable_twice(self, payload: dict[str, Any]) -> None:
            if payload["attempt"] <= 2:
                self.answer(503, {"error": "busy"})
            else:
                self.answer(200, {"output": {"attempt": payload["attempt"]}})

        def route_bad_request(self, payload: dict[str, Any]) -> None:
            self.answer(400, {"error": "bad input"})

        def route_hang(self, payload: dict[str, Any]) -> None:
            """Answer nothing; note when the client gives up and closes the connection."""
            execution_id = payload["execution_id"]
            with server.lock:
                server.waiting.add(execution_id)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                readable, _, _ = select.select([self.connection], [], [], 0.02)
                if readable and self.connection.recv(1, socket.MSG_PEEK) == b"":
                    with server.lock:
                        server.disconnected.add(execution_id)
                    return

    return Handler


@pytest.fixture(scope="module")
def agent_server() -> Iterator[AgentServer]:
    server = AgentServer()
    http = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(server))
    server.base_url = f"http://127.0.0.1:{http.server_address[1]}"
    thread = threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        http.shutdown()
        http.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def engine(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    settings = engine_settings(
        postgres_url, tmp_path_factory.mktemp("http"), agent_url_allow="127.0.0.0/8"
    )
    with running_engine(settings) as running:
        yield running


RETRY_THREE_TIMES = {"max_attempts": 3, "initial_interval": 0.05}


def test_an_http_agent_answering_json_gives_the_step_its_output(
    engine: Engine, agent_server: AgentServer
) -> None:
    document = process(
        "http-json", agent_step("remote", agent_server.url("/json"), input={"q": "{{ input.q }}"})
    )

    execution_id, execution = engine.run(document, {"q": "cost"}, user="http-user")

    messages = engine.history(execution_id)
    assert execution.status is ExecutionStatus.COMPLETED
    assert execution.output == {"remote": {"echo": {"q": "cost"}, "attempt": 1}}
    (payload,) = agent_server.received("/json", execution_id)
    assert payload == {
        "execution_id": str(execution_id),
        "step_id": "remote",
        "attempt": 1,
        "user_id": "http-user",
        "thread_id": None,
        "thread_history": [],
        "input": {"q": "cost"},
    }
    (started,) = events_of(messages, "agent_started")
    assert started["data"]["agent"] == f"{agent_server.base_url}/json"


def test_an_http_agents_ndjson_stream_becomes_thinking_tool_and_result_events(
    engine: Engine, agent_server: AgentServer
) -> None:
    document = process("http-stream", agent_step("remote", agent_server.url("/stream")))

    execution_id, execution = engine.run(document)

    messages = engine.history(execution_id)
    assert execution.status is ExecutionStatus.COMPLETED
    assert execution.output == {"remote": {"answer": 42}}
    assert of_step(messages, "remote") == [
        "step_scheduled",
        "step_started",
        "agent_started",
        "agent_thinking",
        "tool_executing",
        "tool_completed",
        "agent_completed",
        "step_completed",
    ]
    assert events_of(messages, "agent_thinking")[0]["data"]["message"] == "looking it up"
    (executing,) = events_of(messages, "tool_executing")
    (completed,) = events_of(messages, "tool_completed")
    assert (executing["data"]["call_id"], executing["data"]["tool"]) == ("c1", "search")
    assert executing["data"]["args"] == {"q": "x"}
    assert (completed["data"]["call_id"], completed["data"]["tool"]) == ("c1", "search")
    assert completed["data"]["result"] == {"hits": 2}
    (agent_completed,) = events_of(messages, "agent_completed")
    assert 0 < completed["data"]["duration_ms"] <= agent_completed["data"]["duration_ms"]
    assert agent_completed["data"]["duration_ms"] >= 50  # the server paused inside the call
    assert agent_completed["data"]["output"] == {"answer": 42}


def test_an_http_agent_streaming_a_failed_tool_and_a_final_error_fails_without_retry(
    engine: Engine, agent_server: AgentServer
) -> None:
    document = process(
        "http-tool-failed",
        agent_step("remote", agent_server.url("/failing-tool"), retry=RETRY_THREE_TIMES),
    )

    execution_id, execution = engine.run(document)

    messages = engine.history(execution_id)
    assert execution.status is ExecutionStatus.FAILED
    assert of_step(messages, "remote") == [
        "step_scheduled",
        "step_started",
        "agent_started",
        "tool_executing",
        "tool_failed",
        "agent_failed",
        "step_failed",
    ]
    (failed_tool,) = events_of(messages, "tool_failed")
    assert failed_tool["data"]["error"] == {"type": "ToolError", "message": "index offline"}
    assert execution.error is not None
    assert (execution.error["type"], execution.error["message"]) == (
        "AgentReportedError",
        "cannot continue",
    )
    assert len(agent_server.received("/failing-tool", execution_id)) == 1


def test_an_http_agent_answering_503_twice_is_retried_and_succeeds(
    engine: Engine, agent_server: AgentServer
) -> None:
    document = process(
        "http-503",
        agent_step("remote", agent_server.url("/unavailable-twice"), retry=RETRY_THREE_TIMES),
    )

    execution_id, execution = engine.run(document)

    messages = engine.history(execution_id)
    assert execution.status is ExecutionStatus.COMPLETED
    assert execution.output == {"remote": {"attempt": 3}}
    assert [p["attempt"] for p in agent_server.received("/unavailable-twice", execution_id)] == [
        1,
        2,
        3,
    ]
    retrying = events_of(messages, "step_retrying")
    assert [m["data"]["error"]["type"] for m in retrying] == ["AgentUnavailable"] * 2
    assert "503" in retrying[0]["data"]["error"]["message"]
    assert [m["data"]["delay_seconds"] for m in retrying] == [0.05, 0.1]


def test_an_http_agent_answering_400_is_not_retried_and_fails_the_step(
    engine: Engine, agent_server: AgentServer
) -> None:
    document = process(
        "http-400",
        agent_step("remote", agent_server.url("/bad-request"), retry=RETRY_THREE_TIMES),
    )

    execution_id, execution = engine.run(document)

    messages = engine.history(execution_id)
    assert execution.status is ExecutionStatus.FAILED
    assert len(agent_server.received("/bad-request", execution_id)) == 1
    assert "step_retrying" not in [m["type"] for m in messages]
    (failed,) = events_of(messages, "agent_failed")
    assert failed["data"]["error"]["type"] == "AgentRejected"
    assert "400" in failed["data"]["error"]["message"]
    assert execution.error is not None
    assert (execution.error["type"], execution.error["attempt"]) == ("AgentRejected", 1)


def test_a_hanging_http_agent_times_out_and_its_request_is_aborted(
    engine: Engine, agent_server: AgentServer
) -> None:
    document = process(
        "http-hang", agent_step("remote", agent_server.url("/hang"), timeout_seconds=0.3)
    )

    execution_id, execution = engine.run(document)

    messages = engine.history(execution_id)
    assert execution.status is ExecutionStatus.FAILED
    assert of_step(messages, "remote") == [
        "step_scheduled",
        "step_started",
        "agent_started",
        "step_timed_out",
        "step_failed",
    ]
    wait_until(
        lambda: agent_server.saw_disconnect(execution_id),
        timeout=10,
        what="the server to see the client hang up",
    )
    assert execution.error is not None
    assert execution.error["type"] == "StepTimeout"


def test_cancelling_an_execution_aborts_its_http_agents_request_in_flight(
    engine: Engine, agent_server: AgentServer
) -> None:
    document = process("http-cancel", agent_step("remote", agent_server.url("/hang")))
    execution_id = engine.start(document, user="http-canceller")
    wait_until(lambda: agent_server.is_waiting(execution_id), what="the request to arrive")

    engine.runtime.executions.request_cancellation(
        execution_id, user_id="http-canceller", by="http-canceller", reason="stop the call"
    )
    execution = engine.finish(execution_id)

    messages = engine.history(execution_id)
    assert execution.status is ExecutionStatus.CANCELLED
    assert [m["type"] for m in messages[-2:]] == ["step_cancelled", "execution_cancelled"]
    assert messages[-1]["data"]["reason"] == "stop the call"
    wait_until(
        lambda: agent_server.saw_disconnect(execution_id),
        timeout=10,
        what="the server to see the client hang up",
    )


def test_an_http_agent_whose_stream_breaks_off_is_retried_then_fails_as_a_broken_stream(
    engine: Engine, agent_server: AgentServer
) -> None:
    document = process(
        "http-broken",
        agent_step(
            "remote",
            agent_server.url("/broken"),
            retry={"max_attempts": 2, "initial_interval": 0.05},
        ),
    )

    execution_id, execution = engine.run(document)

    messages = engine.history(execution_id)
    assert execution.status is ExecutionStatus.FAILED
    assert len(agent_server.received("/broken", execution_id)) == 2
    assert [m["data"]["error"]["type"] for m in events_of(messages, "agent_failed")] == [
        "BrokenStream",
        "BrokenStream",
    ]
    assert [m["data"]["message"] for m in events_of(messages, "agent_thinking")] == [
        "about to drop the line"
    ] * 2


def test_an_unreachable_http_agent_is_retried_then_fails_as_unreachable(engine: Engine) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # nothing listens here once the socket is closed
    document = process(
        "http-unreachable",
        agent_step(
            "remote",
            {"url": f"http://127.0.0.1:{port}/agent"},
            retry={"max_attempts": 2, "initial_interval": 0.05},
        ),
    )

    execution_id, execution = engine.run(document)

    messages = engine.history(execution_id)
    assert execution.status is ExecutionStatus.FAILED
    assert [m["data"]["error"]["type"] for m in events_of(messages, "agent_failed")] == [
        "AgentUnreachable",
        "AgentUnreachable",
    ]
    assert len(events_of(messages, "step_retrying")) == 1


def test_a_url_refused_at_call_time_fails_the_attempt_without_retrying_or_calling(
    engine: Engine, agent_server: AgentServer
) -> None:
    # registered when the rule let it through (here: past the check), refused when called:
    # a name may come to resolve to another address between registration and call
    document = process(
        "http-refused",
        agent_step("remote", {"url": "http://169.254.169.254/json"}, retry=RETRY_THREE_TIMES),
    )
    registered, _ = SqlProcessCatalog(engine.runtime.read_engine).register(document)

    execution_id = engine.start(registered.name)
    execution = engine.finish(execution_id)

    messages = engine.history(execution_id)
    assert execution.status is ExecutionStatus.FAILED
    assert of_step(messages, "remote") == [
        "step_scheduled",
        "step_started",
        "agent_started",
        "agent_failed",
        "step_failed",
    ]
    (failed,) = events_of(messages, "agent_failed")
    assert failed["data"]["error"]["type"] == "AgentUrlRefused"
    assert "169.254.169.254 is a link-local address" in failed["data"]["error"]["message"]
    assert execution.error is not None
    assert (execution.error["type"], execution.error["attempt"]) == ("AgentUrlRefused", 1)
