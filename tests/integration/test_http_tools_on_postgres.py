"""HTTP tools on PostgreSQL: admins register them over the API, and a model (the OpenAI stub)
calls them through the real worker, against a small real HTTP server."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from uuid import UUID

import pytest
import sqlalchemy as sa

from agent_ledger.application.agents import AgentRun, ToolError
from agent_ledger.domain.execution_state import ExecutionStatus
from agent_ledger.infrastructure.agents.egress import AgentUrlPolicy
from agent_ledger.infrastructure.agents.http_tools import SqlHttpTools
from agent_ledger.infrastructure.read_models.tables import http_tools
from agent_ledger.infrastructure.settings import Settings
from tests.support.asgi_client import TestClient, serving
from tests.support.engine_scenarios import Engine, Message, events_of
from tests.support.openai_stub import OpenAiStub, Reply
from tests.support.server import free_port
from tests.support.tokens import bearer

pytestmark = pytest.mark.postgres

SECRET = "http-tools-secret-" + "t" * 32
ADMIN = bearer(SECRET, "ada", "admin")
USER = bearer(SECRET, "user-a")
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city"],
    "additionalProperties": False,
}


@dataclass
class ToolServer:
    """A tool server: what it received, by path; `/slow` answers once `release` is set."""

    base_url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[tuple[str, dict[str, str], dict[str, Any]]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def received(self, path: str, execution_id: UUID | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [
                payload
                for seen, _, payload in self.requests
                if seen == path
                and (execution_id is None or payload["execution_id"] == str(execution_id))
            ]

    def headers_of(self, path: str) -> list[dict[str, str]]:
        with self.lock:
            return [headers for seen, headers, _ in self.requests if seen == path]


def handler_for(server: ToolServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests read what they need from `server`."""

        def do_POST(self) -> None:
            payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with server.lock:
                server.requests.append((self.path, dict(self.headers), payload))
            if self.path == "/weather":
                city = payload["arguments"]["city"]
                self.answer(200, {"result": {"city": city, "forecast": "sunny"}})
            elif self.path == "/broken":
                self.answer(500, {"error": "the forecast database is down"})
            elif self.path == "/reported":
                self.answer(200, {"error": "no such city"})
            elif self.path == "/not-json":
                self.answer(200, b"<html>hello</html>")
            elif self.path == "/slow":
                server.release.wait(10)  # longer than the tool's time limit
                self.answer(200, {"result": "too late"})

        def answer(self, status: int, body: Any) -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the caller gave up first (a timed-out call)

    return Handler


@pytest.fixture(scope="module")
def tool_server() -> Iterator[ToolServer]:
    server = ToolServer()
    http = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(server))
    server.base_url = f"http://127.0.0.1:{http.server_address[1]}"
    thread = threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        http.shutdown()
        http.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def stub() -> Iterator[OpenAiStub]:
    with OpenAiStub.running() as running:
        yield running


@pytest.fixture(scope="module")
def settings(
    postgres_url: str, stub: OpenAiStub, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    return Settings(
        database_url=postgres_url,
        jwt_secret=SECRET,
        data_dir=tmp_path_factory.mktemp("tools"),
        poll_interval=0.1,
        shutdown_grace=0.0,
        agent_url_allow="127.0.0.0/8",
        llm_base_url=stub.base_url,
        llm_api_key="sk-test",
    )


@pytest.fixture(scope="module")
def served(settings: Settings) -> Iterator[tuple[Engine, TestClient]]:
    with serving(settings) as (runtime, client):
        yield Engine(runtime), client


@pytest.fixture
def client(served: tuple[Engine, TestClient]) -> TestClient:
    return served[1]


@pytest.fixture
def engine(served: tuple[Engine, TestClient]) -> Engine:
    return served[0]


def registration(url: str, **changes: Any) -> dict[str, Any]:
    return {"url": url, "description": "The weather of a city.", "parameters": WEATHER, **changes}


def register_tool(client: TestClient, name: str, url: str, **changes: Any) -> dict[str, Any]:
    response = client.put(f"/v1/tools/{name}", json=registration(url, **changes), headers=ADMIN)
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- the API ------------------------------------------------------------------------------


def test_an_admin_registers_changes_and_removes_a_tool(
    client: TestClient, tool_server: ToolServer
) -> None:
    name = unique("weather")
    url = f"{tool_server.base_url}/weather"

    created = client.put(f"/v1/tools/{name}", json=registration(url), headers=ADMIN)
    again = client.put(f"/v1/tools/{name}", json=registration(url), headers=ADMIN)
    changed = client.put(
        f"/v1/tools/{name}",
        json=registration(url, description="Tomorrow's weather.", timeout_seconds=5),
        headers=ADMIN,
    )
    shown = client.get(f"/v1/tools/{name}", headers=USER)
    removed = client.delete(f"/v1/tools/{name}", headers=ADMIN)
    gone = client.get(f"/v1/tools/{name}", headers=USER)
    removed_again = client.delete(f"/v1/tools/{name}", headers=ADMIN)

    assert created.status_code == 201
    assert created.json() == {
        "name": name,
        "kind": "http",
        "description": "The weather of a city.",
        "parameters": WEATHER,
        "timeout_seconds": 30.0,
        "url": url,
        "updated_by": "ada",
        "updated_at": created.json()["updated_at"],
        "created_at": created.json()["updated_at"],
    }
    assert (again.status_code, again.json()) == (200, created.json())
    assert changed.status_code == 200
    assert (changed.json()["description"], changed.json()["timeout_seconds"]) == (
        "Tomorrow's weather.",
        5.0,
    )
    assert changed.json()["created_at"] == created.json()["created_at"]
    assert changed.json()["updated_at"] >= created.json()["updated_at"]
    assert shown.status_code == 200
    assert shown.json() == {
        "name": name,
        "kind": "http",
        "description": "Tomorrow's weather.",
        "parameters": WEATHER,
        "timeout_seconds": 5.0,
    }  # no URL, no who or when: users see what a model sees
    assert removed.status_code == 204
    assert gone.status_code == 404
    assert gone.headers["content-type"].startswith("application/problem+json")
    assert removed_again.status_code == 404


def test_everyone_lists_builtin_and_http_tools_and_only_admins_see_urls(
    client: TestClient, tool_server: ToolServer
) -> None:
    name = unique("listed")
    secret_url = f"http://tools:hunter2@127.0.0.1:{free_port()}/weather"
    register_tool(client, name, secret_url)

    by_user = {t["name"]: t for t in client.get("/v1/tools", headers=USER).json()}
    by_admin = {t["name"]: t for t in client.get("/v1/tools", headers=ADMIN).json()}
    builtin = client.get("/v1/tools/spend_overview", headers=USER)

    assert by_user["spend_overview"]["kind"] == "builtin"
    assert by_user["spend_overview"]["parameters"]["properties"]["days"]["type"] == "integer"
    assert by_user[name]["kind"] == "http"
    assert "url" not in by_user[name]
    assert by_admin[name]["url"] == secret_url.replace("tools:hunter2@", "")
    assert "hunter2" not in json.dumps(by_admin)
    assert (builtin.status_code, builtin.json()["kind"]) == (200, "builtin")
    assert "url" not in by_admin["spend_overview"]


def test_only_admins_register_or_remove_tools(client: TestClient, tool_server: ToolServer) -> None:
    name = unique("mine")
    url = f"{tool_server.base_url}/weather"

    registered = client.put(f"/v1/tools/{name}", json=registration(url), headers=USER)
    register_tool(client, name, url)
    removed = client.delete(f"/v1/tools/{name}", headers=USER)

    for refused in (registered, removed):
        assert refused.status_code == 403
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["type"] == "/problems/forbidden"
    assert client.get(f"/v1/tools/{name}", headers=USER).status_code == 200


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"parameters": {"type": "array"}}, '"type": "object"'),
        ({"parameters": {"type": "object", "properties": {"a": {"type": "text"}}}}, "text"),
        ({"url": "ftp://127.0.0.1/weather"}, "http:// or https://"),
        ({"url": "http://10.1.2.3/weather"}, "private address"),
        ({"url": "http://169.254.169.254/latest"}, "link-local address"),
        ({"timeout_seconds": 0}, "greater than 0"),
        ({"timeout_seconds": 301}, "less than or equal to 300"),
        ({"description": ""}, "at least 1 character"),
        ({"headers": {"x": "y"}}, "Extra inputs are not permitted"),
    ],
)
def test_a_bad_registration_is_refused_with_422_naming_the_problem(
    client: TestClient, changes: dict[str, Any], named: str
) -> None:
    name = unique("bad")
    body = {**registration("http://127.0.0.1:9/weather"), **changes}

    refused = client.put(f"/v1/tools/{name}", json=body, headers=ADMIN)

    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert named in refused.json()["detail"]
    assert client.get(f"/v1/tools/{name}", headers=ADMIN).status_code == 404


@pytest.mark.parametrize("name", ["9lives", "has space", "x" * 65, "semi;colon"])
def test_a_tool_name_models_cannot_call_is_refused(client: TestClient, name: str) -> None:
    refused = client.put(
        f"/v1/tools/{name}", json=registration("http://127.0.0.1:9/x"), headers=ADMIN
    )

    assert refused.status_code == 422


def test_a_builtin_tools_name_cannot_be_registered_or_removed(client: TestClient) -> None:
    registered = client.put(
        "/v1/tools/spend_overview", json=registration("http://127.0.0.1:9/x"), headers=ADMIN
    )
    removed = client.delete("/v1/tools/spend_overview", headers=ADMIN)

    for refused in (registered, removed):
        assert refused.status_code == 409
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert "built-in" in refused.json()["detail"]


def test_a_process_may_name_an_http_tool_once_it_is_registered(
    client: TestClient, tool_server: ToolServer
) -> None:
    name = unique("later")
    document = llm_process("gpt-later", [name])

    before = client.put(f"/v1/processes/{document['name']}", json=document, headers=ADMIN)
    register_tool(client, name, f"{tool_server.base_url}/weather")
    after = client.put(f"/v1/processes/{document['name']}", json=document, headers=ADMIN)

    assert before.status_code == 422
    assert name in before.json()["detail"]
    assert after.status_code == 201, after.text


# -- a model calling HTTP tools through the worker ----------------------------------------


def llm_process(model: str, tools: list[str]) -> dict[str, Any]:
    return {
        "name": unique("ask"),
        "steps": [
            {
                "id": "answer",
                "type": "agent_task",
                "agent": {"llm": {"model": model, "prompt": "{{ input.q }}", "tools": tools}},
            }
        ],
        "output": "{{ steps.answer.output }}",
    }


@dataclass
class Model:
    """The model (the OpenAI stub) and the service it answers, through the API."""

    engine: Engine
    client: TestClient
    stub: OpenAiStub


@pytest.fixture
def model(engine: Engine, client: TestClient, stub: OpenAiStub) -> Model:
    return Model(engine, client, stub)


def run_model(
    model: Model, tools: list[str], *calls: tuple[str, dict[str, Any]]
) -> tuple[UUID, list[Message], list[dict[str, Any]]]:
    """Run a model that calls `calls` in its first turn and then answers "Done."; the
    execution's id, its events and the requests the model received."""
    engine, client, stub = model.engine, model.client, model.stub
    name = unique("gpt")
    document = llm_process(name, tools)
    registered = client.put(f"/v1/processes/{document['name']}", json=document, headers=ADMIN)
    assert registered.status_code == 201, registered.text
    stub.queue(name, Reply(tool_calls=list(calls)), Reply(text="Done."))
    started = client.post(
        "/v1/executions",
        json={"process": document["name"], "input": {"q": "Weather?"}},
        headers=USER,
    )
    assert started.status_code == 201, started.text
    execution_id = UUID(started.json()["id"])
    execution = engine.finish(execution_id)
    assert execution.status is ExecutionStatus.COMPLETED
    assert execution.output == "Done."
    return execution_id, engine.history(execution_id), stub.bodies(name)


def tool_messages(request: dict[str, Any]) -> list[Any]:
    """What the model was told of its tool calls, in order."""
    return [json.loads(m["content"]) for m in request["messages"] if m["role"] == "tool"]


def test_a_model_calls_an_http_tool_and_gets_its_result(
    model: Model, tool_server: ToolServer
) -> None:
    name = unique("weather")
    register_tool(model.client, name, f"{tool_server.base_url}/weather")

    execution_id, messages, requests = run_model(model, [name], (name, {"city": "Oslo"}))

    (payload,) = tool_server.received("/weather", execution_id)
    assert payload == {
        "tool": name,
        "arguments": {"city": "Oslo"},
        "execution_id": str(execution_id),
        "step_id": "answer",
        "attempt": 1,
        "user_id": "user-a",
    }
    offered = requests[0]["tools"][0]["function"]
    assert offered == {"name": name, "description": "The weather of a city.", "parameters": WEATHER}
    assert tool_messages(requests[1]) == [{"city": "Oslo", "forecast": "sunny"}]
    (started,) = events_of(messages, "tool_executing")
    (completed,) = events_of(messages, "tool_completed")
    assert (started["data"]["tool"], started["data"]["args"]) == (name, {"city": "Oslo"})
    assert completed["data"]["result"] == {"city": "Oslo", "forecast": "sunny"}


@pytest.mark.parametrize(
    ("path", "args", "timeout", "told"),
    [
        ("/broken", {"city": "Oslo"}, 30, "answered HTTP 500: the forecast database is down"),
        ("/reported", {"city": "Atlantis"}, 30, "no such city"),
        ("/not-json", {"city": "Oslo"}, 30, "answered with invalid JSON"),
        ("/slow", {"city": "Oslo"}, 0.3, "did not answer within 0.3s"),
        ("/weather", {"city": 5}, 30, "at arguments.city: 5 is not of type 'string'"),
        ("/weather", {"town": "Oslo"}, 30, "'city' is a required property"),
    ],
)
def test_a_failing_tool_is_recorded_and_told_to_the_model_which_still_answers(
    model: Model,
    tool_server: ToolServer,
    path: str,
    args: dict[str, Any],
    timeout: float,
    told: str,
) -> None:
    name = unique("failing")
    register_tool(model.client, name, f"{tool_server.base_url}{path}", timeout_seconds=timeout)

    execution_id, messages, requests = run_model(model, [name], (name, args))

    (failed,) = events_of(messages, "tool_failed")
    assert failed["data"]["tool"] == name
    assert told in failed["data"]["error"]["message"]
    assert events_of(messages, "tool_completed") == []
    (error,) = tool_messages(requests[1])
    assert told in error["error"]
    if "arguments" in told or "property" in told:
        assert tool_server.received(path, execution_id) == []  # refused before the call


def test_a_timed_out_tool_is_recorded_as_a_tool_timeout(
    model: Model, tool_server: ToolServer
) -> None:
    name = unique("slow")
    register_tool(model.client, name, f"{tool_server.base_url}/slow", timeout_seconds=0.3)

    _, messages, _ = run_model(model, [name], (name, {"city": "Oslo"}))

    (failed,) = events_of(messages, "tool_failed")
    assert failed["data"]["error"]["type"] == "ToolTimeout"


def test_an_unreachable_tool_fails_without_showing_the_urls_credentials(model: Model) -> None:
    name = unique("closed")
    register_tool(model.client, name, f"http://tools:hunter2@127.0.0.1:{free_port()}/weather")

    _, messages, requests = run_model(model, [name], (name, {"city": "Oslo"}))

    (failed,) = events_of(messages, "tool_failed")
    assert "could not be reached" in failed["data"]["error"]["message"]
    assert "hunter2" not in json.dumps(messages)
    assert "hunter2" not in json.dumps(requests)


def test_credentials_in_a_tools_url_are_sent_as_basic_auth(
    model: Model, tool_server: ToolServer
) -> None:
    name = unique("private")
    url = tool_server.base_url.replace("http://", "http://tools:hunter2@") + "/weather"
    register_tool(model.client, name, url)

    run_model(model, [name], (name, {"city": "Bergen"}))

    sent = [h.get("Authorization") for h in tool_server.headers_of("/weather")]
    assert f"Basic {base64.b64encode(b'tools:hunter2').decode()}" in sent


def test_the_egress_rule_is_applied_again_before_each_call(
    engine: Engine, client: TestClient, tool_server: ToolServer
) -> None:
    name = unique("moved")
    register_tool(client, name, f"{tool_server.base_url}/weather")
    calls_before = len(tool_server.received("/weather"))
    strict = SqlHttpTools(engine.runtime.read_engine, egress=AgentUrlPolicy())  # no exception
    run = AgentRun(user_id="user-a", execution_id=uuid.uuid4(), step_id="answer", attempt=1)

    with pytest.raises(ToolError) as refused:
        asyncio.run(strict.call(name, {"city": "Oslo"}, run))

    assert "refused" in str(refused.value)
    assert "loopback" in str(refused.value)
    assert refused.value.retryable is False
    assert len(tool_server.received("/weather")) == calls_before


URL = "http://127.0.0.1:9/weather"


def test_registrations_are_rows_of_the_read_model(engine: Engine, client: TestClient) -> None:
    name = unique("row")
    register_tool(client, name, URL, timeout_seconds=2.5)

    with engine.runtime.read_engine.connect() as connection:
        row = connection.execute(sa.select(http_tools).where(http_tools.c.name == name)).one()

    assert (row.url, row.timeout_seconds, row.updated_by) == (
        "http://127.0.0.1:9/weather",
        2.5,
        "ada",
    )
    assert row.parameters == WEATHER
