"""Read models on PostgreSQL: metrics equal an independent count of the raw events, steps,
filters, read-your-writes, readiness and the Prometheus scrape."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from agent_ledger.application.agents import AgentContext, AgentError
from agent_ledger.application.event_log import to_message
from agent_ledger.infrastructure.api.app import create_app
from agent_ledger.infrastructure.auth.tokens import issue_token
from agent_ledger.infrastructure.runtime import Runtime
from agent_ledger.infrastructure.settings import Settings
from tests.support import tokens
from tests.support.asgi_client import TestClient
from tests.support.raw_metrics import agent_figures_from_events
from tests.support.waiting import wait_until

pytestmark = pytest.mark.postgres

SECRET = "read-models-secret-" + "s" * 32
USERS = ("metrics-a", "metrics-b")
MODES = ("ok", "retry", "timeout", "fail", "tool_fail", "slow", "cancel")
RETRY = {
    "max_attempts": 2,
    "initial_interval": 0.01,
    "backoff_coefficient": 1,
    "max_interval": 0.01,
}
FLAKY = {
    "name": "flaky",
    "config": {"parallel_execution": False, "stop_on_failure": True, "timeout_seconds": 60},
    "steps": [
        {
            "id": "plan",
            "type": "agent_task",
            "agent": "planner",
            "input": {"m": "{{ input.mode }}"},
        },
        {
            "id": "work",
            "type": "agent_task",
            "agent": "doer",
            "depends_on": ["plan"],
            "input": {"m": "{{ input.mode }}"},
            "timeout_seconds": 0.5,
            "retry": RETRY,
        },
    ],
}


bearer = partial(tokens.bearer, SECRET)
AUDITOR = bearer("auditor-1", "auditor")


async def planner(context: AgentContext, step_input: Any) -> Any:
    await context.think("planning")
    found = await context.call_tool("lookup", key=step_input["m"])
    return {"plan": found}


async def doer(context: AgentContext, step_input: Any) -> Any:
    mode, attempt = step_input["m"], context.run.attempt
    if mode == "retry" and attempt == 1:
        raise AgentError("first attempt fails")
    if mode == "timeout" and attempt == 1:
        await asyncio.sleep(5)
    if mode == "fail":
        raise AgentError("never works", retryable=False)
    if mode == "tool_fail":
        await context.call_tool("lookup", key="boom")
    if mode in ("slow", "cancel"):
        deadline = time.monotonic() + (0.15 if mode == "slow" else 10)
        while time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    return {"done": mode}


def lookup(key: str) -> Any:
    if key == "boom":
        from agent_ledger.application.agents import ToolError

        raise ToolError("lookup exploded", retryable=False)
    return {"key": key}


@pytest.fixture(scope="module")
def runtime(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    settings = Settings(
        database_url=postgres_url,
        jwt_secret=SECRET,
        data_dir=tmp_path_factory.mktemp("data"),
        sla_agent_seconds={"doer": 0.1, "planner": 5.0},
    )
    started = Runtime.start(settings)
    started.agents.register_agent("planner", planner)
    started.agents.register_agent("doer", doer)
    started.agents.register_tool("lookup", lookup)
    started.catalog.register(FLAKY)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime.settings, runtime)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def burst(runtime: Runtime, client: TestClient) -> dict[str, str]:
    """Executions of every mode for two users, two of them cancelled while running."""
    ids: dict[str, str] = {}
    for index, mode in enumerate(MODES * 2):
        user = USERS[index % 2]
        body = {"process": "flaky", "input": {"mode": mode}}
        response = client.post("/v1/executions", json=body, headers=bearer(user))
        assert response.status_code == 201, response.text
        ids[f"{mode}-{index}"] = response.json()["id"]
    for key, execution_id in ids.items():
        if key.startswith("cancel"):
            owner = bearer(USERS[int(key.split("-")[1]) % 2])
            wait_until(
                lambda e=execution_id, o=owner: (
                    "work"
                    in client.get(f"/v1/executions/{e}", headers=o).json().get("current_steps", [])
                ),
                timeout=30,
                what="the cancellable step to run",
            )
            assert (
                client.post(f"/v1/executions/{execution_id}/cancel", headers=owner).status_code
                == 202
            )

    def all_finished() -> bool:
        page = client.get("/v1/executions", params={"limit": 200}, headers=AUDITOR).json()
        return all(item["status"] not in ("pending", "running") for item in page["items"])

    wait_until(all_finished, timeout=60, what="every execution to finish")
    return ids


def raw_messages(runtime: Runtime) -> list[dict[str, Any]]:
    messages, position = [], 0
    while page := runtime.executions.read_log(after=position):
        messages.extend(to_message(e) for e in page)
        position = page[-1].position
    return messages


@pytest.mark.parametrize("who", ["auditor", "metrics-a"])
def test_every_agent_figure_equals_a_count_of_the_raw_events(
    runtime: Runtime, client: TestClient, burst: dict[str, str], who: str
) -> None:
    head = runtime.executions.last_position()
    headers = AUDITOR if who == "auditor" else bearer(who)
    response = client.get("/v1/metrics/agents", params={"after": head}, headers=headers)
    assert response.status_code == 200, response.text
    messages = [m for m in raw_messages(runtime) if who == "auditor" or m["user_id"] == who]
    expected = agent_figures_from_events(messages, {"doer": 100.0, "planner": 5000.0})

    body = response.json()
    assert body["position"] >= head
    got = {item["name"]: item for item in body["items"]}
    assert set(got) == set(expected) == {"planner", "doer"}
    for name, figures in expected.items():
        assert got[name]["totals"] == figures["totals"], name
        assert got[name]["series"] == figures["series"], name
    doer_totals = got["doer"]["totals"]
    assert doer_totals["failures"] >= 1
    assert doer_totals["timeouts"] >= 1
    assert doer_totals["retries"] >= 1
    assert doer_totals["cancelled"] >= 1
    assert doer_totals["sla_breaches"] >= 1


def test_a_retried_execution_shows_each_step_with_its_attempts(
    client: TestClient, burst: dict[str, str]
) -> None:
    execution_id = burst["retry-1"]
    body = client.get(f"/v1/executions/{execution_id}", headers=bearer(USERS[1])).json()

    assert body["status"] == "completed"
    steps = {s["id"]: s for s in body["steps"]}
    assert [s["id"] for s in body["steps"]] == ["plan", "work"]
    assert (steps["plan"]["status"], steps["plan"]["retries"]) == ("completed", 0)
    assert steps["work"]["status"] == "completed"
    assert (steps["work"]["attempt"], steps["work"]["retries"]) == (2, 1)
    assert steps["work"]["agent"] == "doer"
    assert steps["work"]["duration_ms"] > 0


def test_a_user_sees_only_their_own_runs_and_tools_and_processes_are_counted(
    client: TestClient, burst: dict[str, str]
) -> None:
    mine = client.get("/v1/metrics/processes", headers=bearer(USERS[0])).json()
    everyone = client.get("/v1/metrics/processes", headers=AUDITOR).json()
    tools = client.get("/v1/metrics/tools", headers=AUDITOR).json()

    assert mine["items"][0]["totals"]["runs"] == len(MODES)
    assert everyone["items"][0]["totals"]["runs"] == 2 * len(MODES)
    assert everyone["items"][0]["totals"]["cancelled"] == 2
    lookup_totals = tools["items"][0]["totals"]
    assert tools["items"][0]["name"] == "lookup"
    assert (lookup_totals["failures"], lookup_totals["runs"]) == (2, 2 * len(MODES) + 2)


def test_a_time_range_narrows_executions_and_metrics(
    client: TestClient, burst: dict[str, str]
) -> None:
    later = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    earlier = (datetime.now(UTC) - timedelta(hours=1)).isoformat()

    future = client.get("/v1/executions", params={"from": later}, headers=AUDITOR).json()
    past = client.get("/v1/executions", params={"to": earlier}, headers=AUDITOR).json()
    recent = client.get("/v1/executions", params={"from": earlier}, headers=AUDITOR).json()
    none = client.get("/v1/metrics/agents", params={"from": later}, headers=AUDITOR).json()

    assert future["items"] == []
    assert past["items"] == []
    assert len(recent["items"]) == 2 * len(MODES)
    assert none["items"] == []


def test_a_backwards_time_range_is_a_problem(client: TestClient) -> None:
    backwards = client.get(
        "/v1/metrics/agents",
        params={"from": "2025-01-02T00:00:00Z", "to": "2025-01-01T00:00:00Z"},
        headers=AUDITOR,
    )

    assert backwards.status_code == 422
    assert backwards.headers["content-type"] == "application/problem+json"
    assert backwards.json()["type"] == "/problems/invalid-range"


@pytest.mark.parametrize(
    ("path", "name", "value"),
    [
        ("/v1/metrics/tools", "from", "2025-01-01T00:00:00"),  # no time zone
        ("/v1/metrics/agents", "to", "0.5"),  # not read as a Unix time
        ("/v1/executions", "from", "2025-01-01"),
        ("/v1/executions", "to", "0001-01-01T00:00:00+01:00"),  # before year 1 in UTC
    ],
)
def test_an_instant_that_is_not_an_rfc_3339_date_time_with_a_zone_is_refused(
    client: TestClient, path: str, name: str, value: str
) -> None:
    response = client.get(path, params={name: value}, headers=AUDITOR)

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/invalid-request"
    assert response.json()["errors"][0]["loc"] == ["query", name]


def test_waiting_for_a_position_the_store_never_reaches_is_a_503_problem(
    runtime: Runtime, client: TestClient
) -> None:
    runtime.settings.read_wait_timeout = 0.2
    try:
        beyond = runtime.executions.last_position() + 1000
        response = client.get("/v1/metrics/agents", params={"after": beyond}, headers=AUDITOR)
    finally:
        runtime.settings.read_wait_timeout = 5.0

    assert response.status_code == 503
    assert response.json()["type"] == "/problems/projection-lagging"


def test_readiness_reports_every_projection_caught_up(
    runtime: Runtime, client: TestClient, burst: dict[str, str]
) -> None:
    head = runtime.executions.last_position()
    assert runtime.wait_for_projection(head, 10, "metrics")
    assert runtime.wait_for_projection(head, 10, "execution_status")

    body = client.get("/readyz").json()

    assert body["status"] == "ready"
    for name in ("execution_status", "metrics"):
        assert body["projections"][name]["position"] >= head
        assert body["projections"][name]["lag_seconds"] == 0.0


def test_the_prometheus_scrape_counts_events_executions_and_step_latencies(
    runtime: Runtime, client: TestClient, burst: dict[str, str]
) -> None:
    head = runtime.executions.last_position()
    assert runtime.wait_for_projection(head, 10, "metrics")
    messages = raw_messages(runtime)

    text = client.get("/metrics").text

    started = sum(m["type"] == "execution_started" for m in messages)
    assert f'agent_ledger_events_appended_total{{type="execution_started"}} {started:.1f}' in text
    assert 'agent_ledger_executions{status="cancelled"} 2.0' in text
    assert 'agent_ledger_projection_lag_seconds{projection="metrics"}' in text
    finished_work = sum(
        m["type"] in ("step_completed", "step_failed") and m["data"]["step_id"] == "work"
        for m in messages
        if m["execution_id"] in set(burst.values())
    )
    assert (
        f'agent_ledger_step_duration_seconds_count{{process="flaky",step="work"}} '
        f"{finished_work:.1f}" in text
    )


def test_the_openapi_document_has_examples_for_the_metrics(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()

    assert {"/v1/metrics/agents", "/v1/metrics/tools", "/v1/metrics/processes", "/metrics"} <= set(
        spec["paths"]
    )
    assert spec["components"]["schemas"]["MetricsPage"]["examples"]


def test_an_embedded_service_serves_the_same_endpoints(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    embedded = Runtime.start(settings, engine=False)
    try:
        secret = settings.resolved_jwt_secret()
        headers = {"Authorization": f"Bearer {issue_token(secret, 'solo')}"}
        with TestClient(create_app(settings, embedded)) as local:
            body = {"process": "echo", "input": {"n": 1}}
            position = local.post("/v1/executions", json=body, headers=headers).json()["position"]
            metrics = local.get(
                "/v1/metrics/processes", params={"after": position}, headers=headers
            ).json()
            scrape = local.get("/metrics")
    finally:
        embedded.stop()

    assert metrics["items"][0]["totals"]["runs"] == 1
    assert metrics["items"][0]["totals"]["running"] == 1
    assert scrape.status_code == 200
