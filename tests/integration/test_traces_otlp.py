"""The sample process's trace reaches a real OTLP/HTTP receiver, continuing the caller's."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from uuid import UUID

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agent_ledger.domain.execution_state import ExecutionStatus
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.telemetry.trace_export import TraceExport
from agent_ledger.projections.traces import trace_of
from tests.support.asgi_client import serving
from tests.support.tokens import bearer
from tests.support.waiting import wait_until

pytestmark = pytest.mark.postgres

SECRET = "traces-secret-0123456789-0123456789"
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


class Receiver:
    """An OTLP/HTTP collector of one route, `POST /v1/traces` (protobuf)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans: list[tuple[str, Span]] = []  # (service.name, span)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                with receiver.lock:
                    for resource_spans in request.resource_spans:
                        service = next(
                            a.value.string_value
                            for a in resource_spans.resource.attributes
                            if a.key == "service.name"
                        )
                        for scope_spans in resource_spans.scope_spans:
                            receiver.spans.extend((service, s) for s in scope_spans.spans)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def received(self) -> list[tuple[str, Span]]:
        with self.lock:
            return list(self.spans)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def test_the_sample_process_shows_in_the_receiver_as_one_trace_under_the_callers_span(
    receiver: Receiver,
    postgres_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "ledger-under-test")
    settings = Settings(
        database_url=postgres_url,
        jwt_secret=SECRET,
        data_dir=tmp_path_factory.mktemp("data"),
        poll_interval=0.1,
    )
    with serving(settings) as (_, client):
        started = client.post(
            "/v1/executions",
            json={"process": "cost_optimization", "input": {"question": "Where?"}},
            headers={
                **bearer(SECRET, "user-a"),
                "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01",
            },
        )
        assert started.status_code == 201, started.text
        execution_id = started.json()["id"]

        def root() -> Span | None:
            return next(
                (s for _, s in receiver.received() if s.name == "execution cost_optimization"),
                None,
            )

        wait_until(root, timeout=30, what="the execution's span in the receiver")

    spans = [s for _, s in receiver.received()]
    assert {service for service, _ in receiver.received()} == {"ledger-under-test"}
    assert {s.trace_id.hex() for s in spans} == {CALLER_TRACE}
    assert len({s.span_id for s in spans}) == len(spans)  # each exported once
    by_id = {s.span_id: s for s in spans}
    (execution,) = [s for s in spans if s.name == "execution cost_optimization"]
    assert execution.parent_span_id.hex() == CALLER_SPAN
    steps = {s.name: s for s in spans if s.parent_span_id == execution.span_id}
    assert set(steps) == {"step triage", "step data", "step optimization", "step summary"}
    agents = [s for s in spans if s.name.startswith("invoke_agent ")]
    assert len(agents) == 4
    assert all(by_id[a.parent_span_id].name.startswith("step ") for a in agents)
    tools = [s for s in spans if s.name.startswith("execute_tool ")]
    assert tools
    assert all(by_id[t.parent_span_id].name.startswith("invoke_agent ") for t in tools)
    attributes = {a.key: a.value for a in execution.attributes}
    assert attributes["agent_ledger.execution_id"].string_value == execution_id
    assert attributes["agent_ledger.user_id"].string_value == "user-a"
    assert attributes["agent_ledger.position"].int_value > 0


def test_a_restarted_export_continues_from_its_tracked_position_losing_and_repeating_nothing(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = Settings(
        database_url=postgres_url, jwt_secret=SECRET, data_dir=tmp_path_factory.mktemp("data")
    )
    with serving(settings, projector=False) as (runtime, client):
        started = client.post(
            "/v1/executions",
            json={"process": "cost_optimization", "input": {"question": "Where?"}},
            headers=bearer(SECRET, "user-a"),
        )
        execution_id = UUID(started.json()["id"])
        wait_until(
            lambda: (
                runtime.executions.get_execution(execution_id).status is ExecutionStatus.COMPLETED
            ),
            timeout=30,
            what="the execution to complete",
        )
        before, after = InMemorySpanExporter(), InMemorySpanExporter()
        first = TraceExport(
            runtime.executions, runtime.read_engine, before, batch_size=1, name="restart"
        )
        while not ours(before.get_finished_spans(), execution_id):
            assert first.run_once()  # stop once the first span of the execution is out
        second = TraceExport(runtime.executions, runtime.read_engine, after, name="restart")
        second.catch_up()  # another process, or this one restarted
        history = runtime.executions.get_history(execution_id)

    exported = ours(before.get_finished_spans(), execution_id) + ours(
        after.get_finished_spans(), execution_id
    )
    assert len(ours(after.get_finished_spans(), execution_id)) > 1  # the rest, after the restart
    assert sorted(exported) == sorted(s.span_id for s in trace_of(execution_id, history))


def ours(spans: Sequence[ReadableSpan], execution_id: UUID) -> list[int]:
    wanted = str(execution_id)
    return [
        s.context.span_id
        for s in spans
        if s.attributes is not None and s.attributes["agent_ledger.execution_id"] == wanted
    ]
