"""The walking skeleton on real PostgreSQL: the API, the engine, the projector and the tail."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from starlette.websockets import WebSocketDisconnect

from agent_ledger.application.agents import AgentContext, AgentError
from agent_ledger.application.builtin_agents import register_builtin_agents
from agent_ledger.application.event_log import to_message
from agent_ledger.application.starter import StartRequest, start_execution
from agent_ledger.infrastructure import runtime as runtime_module
from agent_ledger.infrastructure.auth.tokens import issue_token
from agent_ledger.infrastructure.runtime import Runtime
from agent_ledger.infrastructure.schema import initialize_schema
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.persistence import EVENTS_TABLE
from agent_ledger.projections.execution_status import ExecutionStatusProjection
from tests.support import asgi_client, tokens
from tests.support.asgi_client import TestClient, receive_json
from tests.support.walking_skeleton import (
    START_COST_OPTIMIZATION,
    Message,
    assert_agent_steps_stream_in_order,
    assert_positions_strictly_increase,
    assert_problem,
    ends,
    oversized_start,
    same_events,
)

pytestmark = pytest.mark.postgres

SECRET = "integration-secret-" + "s" * 32
SLOW_PROCESS = {
    "name": "slow",
    "config": {"parallel_execution": False},
    "steps": [{"id": "wait", "type": "agent_task", "agent": "sleepy", "input": {}}],
}


def bearer(user: str, ttl: int = 600) -> dict[str, str]:
    return tokens.bearer(SECRET, user, ttl=ttl)


USER_A = bearer("user-a")
USER_B = bearer("user-b")


@dataclass
class Service:
    """One running Runtime and a TestClient on its app."""

    runtime: Runtime
    client: TestClient

    def start(self, body: dict[str, Any], headers: dict[str, str], **extra: Any) -> str:
        response = self.client.post("/v1/executions", json=body, headers={**headers, **extra})
        assert response.status_code == 201, response.text
        execution_id: str = response.json()["id"]
        return execution_id

    def follow(
        self,
        headers: dict[str, str],
        execution_id: str,
        *,
        query: str = "after=0",
        until: str | None = None,
    ) -> list[Message]:
        """Stream messages until `execution_id` ends (or an event of type `until` arrives)."""
        messages: list[Message] = []
        with self.client.websocket_connect(f"/v1/stream?{query}", headers=headers) as ws:
            while True:
                message = receive_json(ws, timeout=10)
                messages.append(message)
                if ends(message, execution_id) or message["type"] == until:
                    return messages

    def store_position(self) -> int:
        body = self.client.get("/readyz").json()
        assert body["status"] == "ready", body
        position: int = body["store_position"]
        return position

    def history(self, execution_id: str, headers: dict[str, str]) -> list[Message]:
        response = self.client.get(
            f"/v1/executions/{execution_id}/events", params={"limit": 1000}, headers=headers
        )
        assert response.status_code == 200, response.text
        items: list[Message] = response.json()["items"]
        return items


@pytest.fixture
def own_settings(empty_database: str, tmp_path: Path) -> Settings:
    """A database of the test's own, for tests that run several runtimes (engines) on it."""
    return Settings(database_url=empty_database, jwt_secret=SECRET, data_dir=tmp_path)


@contextmanager
def serving(
    settings: Settings, *, engine: bool = True, projector: bool = True
) -> Iterator[Service]:
    with asgi_client.serving(settings, engine=engine, projector=projector) as running:
        yield Service(*running)


@pytest.fixture(scope="module")
def service(settings: Settings) -> Iterator[Service]:
    """One service for the module; tests that restart it start their own."""
    with serving(settings) as running:
        yield running


@dataclass
class SleepyAgent:
    """An agent that waits, in small steps, until the test releases it."""

    started: threading.Event
    release: threading.Event

    async def __call__(self, context: AgentContext, _input: Any) -> Any:
        self.started.set()
        await context.think("waiting to be released")
        deadline = time.monotonic() + 30
        while not self.release.is_set():
            if time.monotonic() > deadline:
                raise AgentError("the test never released the agent", retryable=False)
            await asyncio.sleep(0.01)
        return {"released": True}


@pytest.fixture
def sleepy() -> Iterator[SleepyAgent]:
    agent = SleepyAgent(threading.Event(), threading.Event())
    yield agent
    agent.release.set()


def install_slow_process(runtime: Runtime, agent: SleepyAgent) -> None:
    runtime.agents.register_agent("sleepy", agent)
    runtime.catalog.register(SLOW_PROCESS)


def count_in_store(runtime: Runtime, event_type: str) -> int:
    count, position = 0, 0
    while page := runtime.executions.read_log(after=position):
        count += sum(to_message(e)["type"] == event_type for e in page)
        position = page[-1].position
    return count


# -- 1. a started execution streams its agent steps, in order, and completes ----------------


def test_a_started_execution_streams_every_agent_step_in_order_and_completes_with_savings(
    service: Service,
) -> None:
    response = service.client.post("/v1/executions", json=START_COST_OPTIMIZATION, headers=USER_A)
    assert response.status_code == 201, response.text
    execution_id = response.json()["id"]
    assert response.headers["Location"] == f"/v1/executions/{execution_id}"

    messages = service.follow(USER_A, execution_id)

    assert_agent_steps_stream_in_order(messages, execution_id)
    last = messages[-1]["position"]
    view = service.client.get(
        f"/v1/executions/{execution_id}", params={"after": last}, headers=USER_A
    )
    assert view.status_code == 200, view.text
    assert view.json()["status"] == "completed"
    assert view.json()["output"]["projected_monthly_savings_usd"] > 0


def test_a_subscriber_of_one_execution_gets_exactly_its_history_then_the_end(
    service: Service,
) -> None:
    execution_id = service.start(START_COST_OPTIMIZATION, USER_A)

    messages = service.follow(USER_A, execution_id, query=f"after=0&execution_id={execution_id}")

    assert {m["execution_id"] for m in messages} == {execution_id}
    assert_agent_steps_stream_in_order(messages, execution_id)
    assert same_events(messages) == same_events(service.history(execution_id, USER_A))


def test_a_subscriber_that_reconnects_after_its_last_position_misses_and_repeats_nothing(
    service: Service,
) -> None:
    execution_id = service.start(START_COST_OPTIMIZATION, USER_A)
    service.follow(USER_A, execution_id, query=f"after=0&execution_id={execution_id}")
    first: list[Message] = []
    with service.client.websocket_connect("/v1/stream?after=0", headers=USER_A) as ws:
        while len(first) < 10 or first[-1]["execution_id"] != execution_id:
            first.append(receive_json(ws))

    rest = service.follow(USER_A, execution_id, query=f"after={first[-1]['position']}")

    own = [m for m in first + rest if m["execution_id"] == execution_id]
    assert_positions_strictly_increase(first + rest)
    assert same_events(own) == same_events(service.history(execution_id, USER_A))


@pytest.mark.parametrize(
    ("query", "headers"),
    [
        ("after=0", {}),
        ("after=0", {"Authorization": "Bearer not.a.token"}),
        ("after=0", bearer("user-a", -60)),
        (f"after=0&access_token={issue_token(SECRET, 'user-a', ttl_seconds=-60)}", {}),
    ],
    ids=["no token", "invalid token", "expired token", "expired token in the query"],
)
def test_a_stream_without_a_valid_token_closes_as_unauthenticated(
    service: Service, query: str, headers: dict[str, str]
) -> None:
    with (
        pytest.raises(WebSocketDisconnect) as closed,
        service.client.websocket_connect(f"/v1/stream?{query}", headers=headers) as ws,
    ):
        receive_json(ws)

    assert closed.value.code == 4401


# -- 2. another user's execution does not exist for the caller ---------------------------------


def test_another_users_execution_is_not_found_and_never_streamed(service: Service) -> None:
    a_execution = service.start(START_COST_OPTIMIZATION, USER_A)
    service.follow(USER_A, a_execution)

    for method, path in [("GET", ""), ("GET", "/events"), ("POST", "/cancel")]:
        response = service.client.request(
            method, f"/v1/executions/{a_execution}{path}", headers=USER_B
        )
        assert_problem(response, 404, "not-found")
    b_execution = service.start({"process": "echo", "input": {"n": 1}}, USER_B)
    b_messages = service.follow(USER_B, b_execution)
    with (
        pytest.raises(WebSocketDisconnect) as closed,
        service.client.websocket_connect(
            f"/v1/stream?after=0&execution_id={a_execution}", headers=USER_B
        ) as ws,
    ):
        receive_json(ws)

    assert closed.value.code == 4404
    assert {m["user_id"] for m in b_messages} == {"user-b"}
    assert b_execution in {m["execution_id"] for m in b_messages}
    assert a_execution not in {m["execution_id"] for m in b_messages}
    a_view = service.client.get(f"/v1/executions/{a_execution}", headers=USER_A).json()
    assert a_view["status"] == "completed"
    assert a_view["cancellation_requested"] is False


# -- 3. a bad request gets a clear problem and stores nothing ----------------------------------


BAD_REQUESTS = {
    "malformed JSON": (
        dict(
            content=b'{"process": "echo", "input": {',
            headers={**USER_A, "Content-Type": "application/json"},
        ),
        400,
        "malformed-json",
        "JSON",
    ),
    "unknown process": (
        dict(json={"process": "no_such_process", "input": {}}, headers=USER_A),
        422,
        "unknown-process",
        "no_such_process",
    ),
    "oversized input": (
        dict(json=oversized_start(), headers=USER_A),
        413,
        "input-too-large",
        "limit",
    ),
    "missing token": (dict(json={"process": "echo", "input": {}}), 401, "unauthenticated", "token"),
    "invalid token": (
        dict(
            json={"process": "echo", "input": {}}, headers={"Authorization": "Bearer not.a.token"}
        ),
        401,
        "unauthenticated",
        "invalid",
    ),
    "token signed with another secret": (
        dict(
            json={"process": "echo", "input": {}},
            headers={
                "Authorization": f"Bearer {issue_token('another-secret-' + 'x' * 32, 'user-a')}"
            },
        ),
        401,
        "unauthenticated",
        "invalid",
    ),
    "expired token": (
        dict(json={"process": "echo", "input": {}}, headers=bearer("user-a", -60)),
        401,
        "unauthenticated",
        "expired",
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_bad_start_request_gets_a_problem_and_stores_nothing(service: Service, case: str) -> None:
    request, status, kind, mentioned = BAD_REQUESTS[case]
    head = service.store_position()
    listed = service.client.get("/v1/executions", headers=USER_A).json()

    response = service.client.post("/v1/executions", **request)  # type: ignore[arg-type]

    body = assert_problem(response, status, kind)
    assert mentioned.lower() in body["detail"].lower() + body["title"].lower()
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert service.store_position() == head
    assert service.client.get("/v1/executions", headers=USER_A).json() == listed


def test_an_input_with_nan_is_malformed_json_and_stores_nothing(service: Service) -> None:
    head = service.store_position()

    response = service.client.post(
        "/v1/executions",
        content=b'{"process": "echo", "input": {"x": NaN, "y": Infinity}}',
        headers={**USER_A, "Content-Type": "application/json"},
    )

    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert service.store_position() == head


# -- 4. restarts and idempotent starts ---------------------------------------------------------


def test_a_restarted_service_keeps_every_execution_and_event(own_settings: Settings) -> None:
    with serving(own_settings) as first:
        execution_id = first.start(START_COST_OPTIMIZATION, USER_A)
        first.follow(USER_A, execution_id)
        history = first.history(execution_id, USER_A)
        head = first.store_position()
        listed = first.client.get("/v1/executions", params={"after": head}, headers=USER_A).json()

    with serving(own_settings) as second:
        assert second.history(execution_id, USER_A) == history
        assert second.store_position() == head
        assert (
            second.client.get("/v1/executions", params={"after": head}, headers=USER_A).json()
            == listed
        )
        view = second.client.get(f"/v1/executions/{execution_id}", headers=USER_A).json()
    assert history[-1]["type"] == "execution_completed"
    assert view["status"] == "completed"
    assert view["last_position"] == history[-1]["position"]


def interrupt_by_a_restart(
    settings: Settings, sleepy: SleepyAgent, monkeypatch: pytest.MonkeyPatch, process: Any
) -> tuple[list[Message], dict[str, Any]]:
    """Stop the service while the sleepy agent runs, release it, start again; the outcome."""

    def builtin_and_sleepy(agents: Any) -> None:
        register_builtin_agents(agents)
        agents.register_agent("sleepy", sleepy)  # before the new engine resumes anything

    monkeypatch.setattr(runtime_module, "register_builtin_agents", builtin_and_sleepy)
    with serving(settings) as first:
        first.runtime.catalog.register(process)
        execution_id = first.start({"process": process["name"], "input": {}}, USER_A)
        stream = f"after=0&execution_id={execution_id}"
        first.follow(USER_A, execution_id, query=stream, until="agent_thinking")
    sleepy.release.set()

    with serving(settings) as second:
        messages = second.follow(USER_A, execution_id, query=stream)
        view = second.client.get(
            f"/v1/executions/{execution_id}",
            params={"after": messages[-1]["position"]},
            headers=USER_A,
        )
    assert view.status_code == 200, view.text
    assert_positions_strictly_increase(messages)
    return messages, view.json()


def test_an_execution_interrupted_by_a_restart_retries_the_attempt_and_completes(
    own_settings: Settings, sleepy: SleepyAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    retrying_process = {
        **SLOW_PROCESS,
        "name": "slow_with_retries",
        "steps": [
            {**SLOW_PROCESS["steps"][0], "retry": {"max_attempts": 2, "initial_interval": 0.01}}
        ],
    }

    messages, view = interrupt_by_a_restart(own_settings, sleepy, monkeypatch, retrying_process)

    types = [m["type"] for m in messages]
    assert types.count("execution_started") == 1
    assert types.count("step_completed") == 1
    assert types[-1] == "execution_completed"
    retrying = next(m for m in messages if m["type"] == "step_retrying")
    assert retrying["data"]["attempt"] == 1
    assert retrying["data"]["error"]["type"] == "WorkerLost"
    assert messages[-2]["data"]["attempt"] == 2
    assert view["status"] == "completed"
    assert view["output"] == {"wait": {"released": True}}


def test_a_restart_does_not_fail_a_running_step_that_has_no_retries(
    own_settings: Settings, sleepy: SleepyAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages, view = interrupt_by_a_restart(own_settings, sleepy, monkeypatch, SLOW_PROCESS)

    assert view["status"] == "completed", messages[-1]


def test_a_repeated_start_with_the_same_idempotency_key_starts_nothing_new(
    own_settings: Settings,
) -> None:
    key = {"Idempotency-Key": f"key-{uuid.uuid4()}"}
    with serving(own_settings) as first:
        execution_id = first.start(START_COST_OPTIMIZATION, USER_A, **key)
        first.follow(USER_A, execution_id)
        replayed = first.client.post(
            "/v1/executions", json=START_COST_OPTIMIZATION, headers={**USER_A, **key}
        )
        started = count_in_store(first.runtime, "execution_started")
        head = first.store_position()

    with serving(own_settings) as second:
        after_restart = second.client.post(
            "/v1/executions", json=START_COST_OPTIMIZATION, headers={**USER_A, **key}
        )
        conflicting = second.client.post(
            "/v1/executions",
            json={**START_COST_OPTIMIZATION, "input": {"question": "other"}},
            headers={**USER_A, **key},
        )
        assert second.runtime.wait_for_projection(head, 5)
        assert count_in_store(second.runtime, "execution_started") == started
        assert second.store_position() == head

    for response in (replayed, after_restart):
        assert response.status_code == 200, response.text
        assert response.headers["Idempotent-Replayed"] == "true"
        assert response.json()["id"] == execution_id
        assert response.json()["created"] is False
    assert_problem(conflicting, 409, "idempotency-key-reused")


def test_concurrent_starts_with_the_same_idempotency_key_start_one_execution(
    service: Service,
) -> None:
    key = {"Idempotency-Key": f"race-{uuid.uuid4()}"}
    body = {"process": "echo", "input": {"race": True}}
    before = count_in_store(service.runtime, "execution_started")

    def post(_: int) -> Any:
        return service.client.post("/v1/executions", json=body, headers={**USER_A, **key})

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(post, range(8)))

    assert sorted(r.status_code for r in responses) == [200] * 7 + [201], [
        r.text for r in responses
    ]
    (execution_id,) = {r.json()["id"] for r in responses}
    service.follow(USER_A, execution_id, query=f"after=0&execution_id={execution_id}")
    assert count_in_store(service.runtime, "execution_started") == before + 1


def test_the_same_idempotency_key_of_two_users_starts_two_executions(service: Service) -> None:
    key = {"Idempotency-Key": f"shared-{uuid.uuid4()}"}

    a_execution = service.start({"process": "echo", "input": {}}, USER_A, **key)
    b_execution = service.start({"process": "echo", "input": {}}, USER_B, **key)
    service.follow(USER_A, a_execution, query=f"after=0&execution_id={a_execution}")
    service.follow(USER_B, b_execution, query=f"after=0&execution_id={b_execution}")

    assert a_execution != b_execution


# -- 5. cancellation -----------------------------------------------------------------------------


def test_cancelling_a_running_execution_stops_it_and_streams_execution_cancelled(
    service: Service, sleepy: SleepyAgent
) -> None:
    install_slow_process(service.runtime, sleepy)
    execution_id = service.start({"process": "slow", "input": {}}, USER_A)
    messages: list[Message] = []
    with service.client.websocket_connect(
        f"/v1/stream?after=0&execution_id={execution_id}", headers=USER_A
    ) as ws:
        while not messages or messages[-1]["type"] != "agent_thinking":
            messages.append(receive_json(ws))
        cancel = service.client.post(
            f"/v1/executions/{execution_id}/cancel",
            json={"reason": "no longer needed"},
            headers=USER_A,
        )
        while not ends(messages[-1], execution_id):
            messages.append(receive_json(ws))

    assert cancel.status_code == 202, cancel.text
    assert_positions_strictly_increase(messages)
    types = [m["type"] for m in messages]
    assert types[-1] == "execution_cancelled"
    assert "execution_cancellation_requested" in types
    assert "step_cancelled" in types
    assert "agent_completed" not in types
    assert not sleepy.release.is_set()
    view = service.client.get(
        f"/v1/executions/{execution_id}", params={"after": messages[-1]["position"]}, headers=USER_A
    )
    assert view.json()["status"] == "cancelled"


def test_cancelling_a_finished_execution_is_a_conflict_and_stores_nothing(
    service: Service,
) -> None:
    execution_id = service.start({"process": "echo", "input": {}}, USER_A)
    service.follow(USER_A, execution_id, query=f"after=0&execution_id={execution_id}")
    head = service.store_position()

    response = service.client.post(f"/v1/executions/{execution_id}/cancel", headers=USER_A)

    assert_problem(response, 409, "conflict")
    assert service.store_position() == head


# -- the store and the read model on PostgreSQL --------------------------------------------------


def test_the_events_table_refuses_update_delete_and_truncate(
    service: Service, postgres_url: str
) -> None:
    execution_id = service.start({"process": "echo", "input": {"keep": "me"}}, USER_A)
    service.follow(USER_A, execution_id)
    statements = [
        f"UPDATE {EVENTS_TABLE} SET state = state",
        f"DELETE FROM {EVENTS_TABLE}",
        f"TRUNCATE {EVENTS_TABLE}",
    ]
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        rows = connection.execute(f"SELECT count(*) FROM {EVENTS_TABLE}").fetchone()
        for statement in statements:
            with pytest.raises(psycopg.Error, match="append-only"):
                connection.execute(statement.encode())
        after = connection.execute(f"SELECT count(*) FROM {EVENTS_TABLE}").fetchone()

    assert rows is not None
    assert rows[0] > 0
    assert after == rows


def _create_schema_with_the_others(database_url: str, ready: Any) -> None:
    ready.wait(timeout=60)  # all four processes begin together
    initialize_schema(Settings(database_url=database_url, jwt_secret=SECRET))


def test_four_processes_creating_the_schema_at_once_on_an_empty_database_all_succeed(
    empty_database: str,
) -> None:
    context = multiprocessing.get_context("spawn")
    ready = context.Barrier(4)
    processes = [
        context.Process(target=_create_schema_with_the_others, args=(empty_database, ready))
        for _ in range(4)
    ]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join(timeout=60)
        exit_codes = [process.exitcode for process in processes]
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(timeout=10)
            process.close()

    assert exit_codes == [0, 0, 0, 0]
    with psycopg.connect(empty_database) as connection:
        tables = {
            r[0]
            for r in connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        }
        triggers = {
            r[0] for r in connection.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
        }
    assert {
        EVENTS_TABLE,
        "execution_status",
        "projection_tracking",
        "process_definitions",
    } <= tables
    assert {"agent_ledger_append_only", "agent_ledger_no_truncate"} <= triggers


def test_the_status_projection_tracks_the_store_head_once_executions_finish(
    service: Service, postgres_url: str
) -> None:
    started = [service.start({"process": "echo", "input": {"n": n}}, USER_A) for n in range(3)]
    for execution_id in started:
        service.follow(USER_A, execution_id, query=f"after=0&execution_id={execution_id}")
    head = service.store_position()

    assert service.runtime.wait_for_projection(head, 10)
    with psycopg.connect(postgres_url) as connection:
        tracked = connection.execute(
            "SELECT position FROM projection_tracking WHERE name = %s",
            (ExecutionStatusProjection.name,),
        ).fetchone()
        stored = connection.execute(f"SELECT max(notification_id) FROM {EVENTS_TABLE}").fetchone()
    assert tracked is not None
    assert stored is not None
    assert tracked[0] == stored[0] == head
    ready = service.client.get("/readyz").json()
    status_view = ready["projections"]["execution_status"]
    assert (status_view["position"], status_view["lag"]) == (head, 0)


def test_an_event_written_by_one_runtime_reaches_a_subscriber_of_another(
    own_settings: Settings, sleepy: SleepyAgent
) -> None:
    # The reader polls only once a minute: within the bounded wait below, only a
    # PostgreSQL notification from the writer's commits can wake it.
    reader_settings = own_settings.model_copy(update={"poll_interval": 60.0})
    writer = Runtime.start(own_settings)
    try:
        install_slow_process(writer, sleepy)
        with serving(reader_settings, engine=False, projector=False) as reader:
            head = reader.store_position()
            messages: list[Message] = []
            with reader.client.websocket_connect(f"/v1/stream?after={head}", headers=USER_A) as ws:
                process = writer.catalog.get("slow")
                started = start_execution(
                    writer.executions, StartRequest(user_id="user-a", process=process, input={})
                )
                execution_id = str(started.execution_id)
                while not messages or messages[-1]["type"] != "agent_thinking":
                    messages.append(receive_json(ws))
                sleepy.release.set()  # everything from here on is written after catch-up
                while not ends(messages[-1], execution_id):
                    messages.append(receive_json(ws))
            view = reader.client.get(
                f"/v1/executions/{execution_id}",
                params={"after": messages[-1]["position"]},
                headers=USER_A,
            )
    finally:
        writer.stop()

    assert_positions_strictly_increase(messages)
    assert messages[0]["type"] == "execution_started"
    assert messages[-1]["type"] == "execution_completed"
    assert {"agent_completed", "step_completed"} <= {m["type"] for m in messages}
    assert view.status_code == 200, view.text
    assert view.json()["status"] == "completed"
