"""Model usage in the read models, on PostgreSQL and SQLite: the tokens and cost of model calls
on agents, processes and users (totals and per minute) and on each execution, counted once (a
failed attempt's calls too, `AgentCompleted.usage` never), over the API and in the Prometheus
scrape, the same after a rebuild; a cost no column can hold is parked; and migration 0003 on a
database at 0002 whose projections were rebuilt."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from agent_ledger.application.event_log import to_message
from agent_ledger.domain.executions import Execution
from agent_ledger.infrastructure.read_models import migrations
from agent_ledger.infrastructure.read_models.parked import parked
from agent_ledger.infrastructure.read_models.rebuild import Rebuild
from agent_ledger.infrastructure.runtime import Runtime
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.persistence import read_model_engine
from tests.support import tokens
from tests.support.asgi_client import TestClient, serving
from tests.support.databases import fresh_database
from tests.support.openai_stub import OpenAiStub, Reply
from tests.support.waiting import wait_until

pytestmark = pytest.mark.postgres

SECRET = "model-usage-secret-" + "u" * 32
bearer = partial(tokens.bearer, SECRET)
AUDITOR = bearer("auditor-1", "auditor")
ADA, BOB = bearer("ada"), bearer("bob")
PRICE = {"input_per_million": 1.0, "output_per_million": 2.0}  # USD per million tokens
TOOL_CALL = [("spend_overview", {"days": 7})]
RETRY = {"max_attempts": 2, "initial_interval": 0.01, "max_interval": 0.01}


def llm_process(name: str, model: str, **step: Any) -> dict[str, Any]:
    llm = {"model": model, "prompt": "{{ input.q }}", "tools": ["spend_overview"]}
    return {
        "name": name,
        "steps": [{"id": "answer", "type": "agent_task", "agent": {"llm": llm}, **step}],
        "output": "{{ steps.answer.output }}",
    }


PROCESSES = (
    llm_process("ask_priced", "gpt-priced"),
    llm_process("ask_unpriced", "mystery"),
    llm_process("ask_flaky", "gpt-flaky", retry=RETRY),
)


def usage(calls: int, prompt: int, completion: int, cost: float | None, unpriced: int) -> Any:
    return {
        "model_calls": calls,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cost_usd": cost if cost is None else pytest.approx(cost, abs=1e-12),
        "unpriced_calls": unpriced,
    }


@pytest.fixture(scope="module")
def stub() -> Iterator[OpenAiStub]:
    with OpenAiStub.running() as stub:
        yield stub


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(
    request: pytest.FixtureRequest, stub: OpenAiStub, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Runtime, TestClient, dict[str, str]]]:
    """A served runtime whose users ran the model processes, one after the other (the stub's
    script is per model, so the calls of each execution are known in advance)."""
    with ExitStack() as stack:
        url = None
        if request.param == "postgresql":
            url = stack.enter_context(fresh_database(request.getfixturevalue("postgres_admin")))
        settings = Settings(
            database_url=url,
            jwt_secret=SECRET,
            data_dir=tmp_path_factory.mktemp("usage"),
            llm_base_url=stub.base_url,
            llm_prices={"gpt-priced": PRICE, "gpt-flaky": PRICE},
        )
        runtime, client = stack.enter_context(serving(settings))
        for document in PROCESSES:
            runtime.catalog.register(document)
        # two calls: a tool call, then the answer
        stub.queue(
            "gpt-priced",
            Reply(tool_calls=TOOL_CALL, prompt_tokens=100, completion_tokens=10),
            Reply(text="fine", prompt_tokens=150, completion_tokens=20),
        )
        # a model without a price
        stub.queue("mystery", Reply(text="hm", prompt_tokens=40, completion_tokens=4))
        # attempt 1 makes a call, then fails on a 500; attempt 2 answers at once
        stub.queue(
            "gpt-flaky",
            Reply(tool_calls=TOOL_CALL, prompt_tokens=100, completion_tokens=10),
            Reply(status=500),
            Reply(text="ok", prompt_tokens=100, completion_tokens=10),
        )
        ids = {
            "priced": run(client, ADA, "ask_priced"),
            "unpriced": run(client, ADA, "ask_unpriced"),
            "flaky": run(client, BOB, "ask_flaky"),
            "echo": run(client, BOB, "echo"),
        }
        yield runtime, client, ids


def run(client: TestClient, headers: dict[str, str], process: str) -> str:
    body = {"process": process, "input": {"q": "Where does the money go?"}}
    response = client.post("/v1/executions", json=body, headers=headers)
    assert response.status_code == 201, response.text
    execution_id: str = response.json()["id"]

    def finished() -> dict[str, Any] | None:
        view: dict[str, Any] = client.get(f"/v1/executions/{execution_id}", headers=headers).json()
        return view if view["status"] not in ("pending", "running") else None

    assert wait_until(finished, timeout=30, what=f"{process} to finish")["status"] == "completed"
    return execution_id


def caught_up(runtime: Runtime) -> int:
    head = runtime.executions.last_position()
    for name in ("metrics", "execution_status"):
        assert runtime.wait_for_projection(head, 10, name), name
    return head


def by_name(client: TestClient, path: str, headers: dict[str, str], **params: Any) -> Any:
    response = client.get(path, params=params, headers=headers)
    assert response.status_code == 200, response.text
    return {item["name"]: item for item in response.json()["items"]}


def raw_usage_by_agent(runtime: Runtime) -> dict[str, dict[str, Any]]:
    """Each agent's calls summed straight from the stored `llm_call_completed` events."""
    names: dict[tuple[str, str, int], str] = {}
    sums: dict[str, dict[str, Any]] = {}
    position = 0
    while page := runtime.executions.read_log(after=position):
        position = page[-1].position
        for message in map(to_message, page):
            data = message["data"]
            attempt = (message["execution_id"], data.get("step_id"), data.get("attempt"))
            if message["type"] == "agent_started":
                names[attempt] = data["agent"]
            elif message["type"] == "llm_call_completed":
                figures = sums.setdefault(
                    names[attempt],
                    {"model_calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0},
                )
                figures["model_calls"] += 1
                figures["prompt_tokens"] += data["prompt_tokens"] or 0
                figures["completion_tokens"] += data["completion_tokens"] or 0
                figures["cost"] += data["cost_usd"] or 0.0
    return sums


def test_each_agent_counts_its_calls_once_including_those_of_a_failed_attempt(
    service: tuple[Runtime, TestClient, dict[str, str]],
) -> None:
    runtime, client, _ = service
    head = caught_up(runtime)

    agents = by_name(client, "/v1/metrics/agents", AUDITOR, after=head)

    assert agents["llm:gpt-priced"]["totals"]["usage"] == usage(2, 250, 30, 0.00031, 0)
    assert agents["llm:mystery"]["totals"]["usage"] == usage(1, 40, 4, None, 1)
    flaky = agents["llm:gpt-flaky"]["totals"]
    assert (flaky["runs"], flaky["failures"], flaky["successes"]) == (2, 1, 1)
    assert flaky["usage"] == usage(2, 200, 20, 0.00024, 0)  # the failed attempt's call counts
    assert agents["echo"]["totals"]["usage"] == usage(0, 0, 0, 0.0, 0)
    for name, raw in raw_usage_by_agent(runtime).items():
        got = agents[name]["totals"]["usage"]
        assert got["model_calls"] == raw["model_calls"], name
        assert (got["prompt_tokens"], got["completion_tokens"]) == (
            raw["prompt_tokens"],
            raw["completion_tokens"],
        )
        assert (got["cost_usd"] or 0.0) == pytest.approx(raw["cost"], abs=1e-12)


def test_processes_and_users_total_their_executions_and_minutes_add_up_to_the_totals(
    service: tuple[Runtime, TestClient, dict[str, str]],
) -> None:
    runtime, client, _ = service
    head = caught_up(runtime)

    processes = by_name(client, "/v1/metrics/processes", AUDITOR, after=head)
    users = by_name(client, "/v1/metrics/users", AUDITOR, after=head)

    assert processes["ask_priced"]["totals"]["usage"] == usage(2, 250, 30, 0.00031, 0)
    assert processes["ask_unpriced"]["totals"]["usage"] == usage(1, 40, 4, None, 1)
    assert processes["ask_flaky"]["totals"]["usage"] == usage(2, 200, 20, 0.00024, 0)
    # ada's cost is what is known, and says that one call had no price
    assert users["ada"]["totals"]["runs"] == 2
    assert users["ada"]["totals"]["usage"] == usage(3, 290, 34, 0.00031, 1)
    assert users["bob"]["totals"]["usage"] == usage(2, 200, 20, 0.00024, 0)
    for item in (*processes.values(), *users.values()):
        minutes = [minute["usage"] for minute in item["series"]]
        for field in ("model_calls", "prompt_tokens", "completion_tokens", "unpriced_calls"):
            assert sum(m[field] for m in minutes) == item["totals"]["usage"][field]


def test_a_user_sees_only_their_own_usage_and_auditors_may_narrow_to_one_user(
    service: tuple[Runtime, TestClient, dict[str, str]],
) -> None:
    runtime, client, _ = service
    head = caught_up(runtime)

    own = client.get("/v1/metrics/users", params={"after": head}, headers=ADA).json()
    asked_for_bob = by_name(client, "/v1/metrics/users", ADA, user_id="bob")
    narrowed = by_name(client, "/v1/metrics/users", AUDITOR, user_id="bob")
    bobs_agents = by_name(client, "/v1/metrics/agents", BOB)

    assert own["kind"] == "user"
    assert [item["name"] for item in own["items"]] == ["ada"]
    assert set(asked_for_bob) == {"ada"}  # a user's own filter wins
    assert set(narrowed) == {"bob"}
    assert set(bobs_agents) == {"llm:gpt-flaky", "echo"}


def test_each_execution_shows_its_tokens_and_a_cost_that_is_null_when_unknown(
    service: tuple[Runtime, TestClient, dict[str, str]],
) -> None:
    runtime, client, ids = service
    caught_up(runtime)

    def figures(execution_id: str, headers: dict[str, str]) -> tuple[Any, ...]:
        view = client.get(f"/v1/executions/{execution_id}", headers=headers).json()
        keys = ("model_calls", "prompt_tokens", "completion_tokens", "cost_usd")
        return tuple(view[k] for k in keys)

    assert figures(ids["priced"], ADA) == (2, 250, 30, pytest.approx(0.00031, abs=1e-12))
    assert figures(ids["unpriced"], ADA) == (1, 40, 4, None)
    assert figures(ids["flaky"], BOB) == (2, 200, 20, pytest.approx(0.00024, abs=1e-12))
    assert figures(ids["echo"], BOB) == (0, None, None, None)
    listed = client.get("/v1/executions", headers=ADA).json()["items"]
    assert {item["id"]: item["cost_usd"] for item in listed} == {
        ids["priced"]: pytest.approx(0.00031, abs=1e-12),
        ids["unpriced"]: None,
    }


def test_the_prometheus_scrape_counts_tokens_and_cost_per_agent_and_process(
    service: tuple[Runtime, TestClient, dict[str, str]],
) -> None:
    runtime, client, _ = service
    caught_up(runtime)

    text = client.get("/metrics").text

    for line in (
        'agent_ledger_agent_model_calls_total{agent="llm:gpt-flaky"} 2.0',
        'agent_ledger_agent_tokens_total{agent="llm:gpt-priced",type="prompt"} 250.0',
        'agent_ledger_agent_tokens_total{agent="llm:gpt-priced",type="completion"} 30.0',
        'agent_ledger_agent_cost_usd_total{agent="llm:gpt-priced"} 0.00031',
        'agent_ledger_agent_unpriced_model_calls_total{agent="llm:mystery"} 1.0',
        'agent_ledger_process_tokens_total{process="ask_flaky",type="prompt"} 200.0',
        'agent_ledger_process_cost_usd_total{process="ask_flaky"} 0.00024',
        'agent_ledger_process_unpriced_model_calls_total{process="ask_unpriced"} 1.0',
    ):
        assert line in text, line
    assert "user" not in "".join(t for t in text.splitlines() if "_tokens_total" in t)


def test_a_cost_no_column_can_hold_is_parked_and_later_calls_still_count(
    service: tuple[Runtime, TestClient, dict[str, str]],
) -> None:
    runtime, client, _ = service
    execution = Execution.start(
        user_id="mallory",
        process_name="absurd",
        process_version=1,
        definition={},
        step_ids=["answer"],
        input={},
    )
    execution.schedule_step("answer", 1)
    execution.start_step("answer", 1)
    execution.start_agent("answer", 1, "llm:absurd", {})
    execution.complete_llm_call("answer", 1, "absurd", 1, 1, 1.0, 1e12)  # $10^12 a call
    execution.complete_llm_call("answer", 1, "absurd", 5, 6, 1.0, 0.5)
    position = runtime.executions.save_and_position(execution)
    assert runtime.wait_for_projection(position, 10, "metrics")

    with runtime.read_engine.connect() as connection:
        stuck = [p for p in parked(connection) if p.projection == "metrics"]
    assert [p.event_type for p in stuck] == ["llm_call_completed"]
    assert "cannot be counted" in stuck[0].error
    processes = by_name(client, "/v1/metrics/processes", AUDITOR, after=position)
    assert processes["absurd"]["totals"]["usage"] == usage(1, 5, 6, 0.5, 0)


def test_a_rebuild_counts_the_same_usage(
    service: tuple[Runtime, TestClient, dict[str, str]],
) -> None:
    runtime, client, ids = service
    caught_up(runtime)
    paths = [f"/v1/metrics/{kind}" for kind in ("agents", "processes", "users")]

    def everything() -> list[Any]:
        pages = [client.get(path, headers=AUDITOR).json()["items"] for path in paths]
        views = [client.get(f"/v1/executions/{i}", headers=AUDITOR).json() for i in ids.values()]
        scrape = client.get("/metrics").text.splitlines()
        usage_lines = sorted(line for line in scrape if "_model_calls" in line or "_cost" in line)
        return [pages, views, usage_lines]

    before = everything()
    rebuilt = [
        Rebuild(runtime.executions, runtime.read_engine, name).run(0)
        for name in ("metrics", "execution_status")
    ]
    after = everything()

    assert [r.switched for r in rebuilt] == [True, True]
    assert rebuilt[0].parked == 1  # the absurd cost again
    assert after == before


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    with ExitStack() as stack:
        url = None
        if request.param == "postgresql":
            url = stack.enter_context(fresh_database(request.getfixturevalue("postgres_admin")))
        engine = read_model_engine(Settings(database_url=url, data_dir=tmp_path))
        stack.callback(engine.dispose)
        yield engine


def columns(engine: sa.Engine, table: str) -> set[str]:
    with engine.connect() as connection:
        return {c["name"] for c in sa.inspect(connection).get_columns(table)}


def test_migration_0003_adds_usage_to_every_table_set_and_keeps_the_rows(
    engine: sa.Engine,
) -> None:
    with engine.begin() as connection:
        command.upgrade(migrations.alembic_config(connection), "0002")
        old = sa.MetaData()
        old.reflect(connection, only=["metric_runs", "execution_status"])
        for table in list(old.tables.values()):  # a rebuild's copies, as 0002 made them
            copy = table.to_metadata(old, name=f"{table.name}_v2")
            copy.primary_key.name = None  # reflected as the original's name
            for index in copy.indexes:
                index.name = f"{index.name}_v2"
            copy.create(connection)
        run = {
            "kind": "process",
            "key": "",
            "name": "p",
            "user_id": "u",
            "started_at": datetime(2026, 1, 1, tzinfo=UTC),
            "outcome": "running",
            "retries": 0,
        }
        for name in ("metric_runs", "metric_runs_v2"):
            rows = sa.table(name, sa.column("execution_id", sa.Uuid), *map(sa.column, run))
            connection.execute(rows.insert().values(execution_id=uuid.uuid4(), **run))

    migrations.upgrade(engine)

    usage_columns = {
        "model_calls",
        "prompt_tokens",
        "completion_tokens",
        "cost_nano_usd",
        "unpriced_calls",
    }
    status_columns = {"model_calls", "prompt_tokens", "completion_tokens", "cost_usd"}
    for version in ("", "_v2"):
        assert usage_columns <= columns(engine, f"metric_runs{version}")
        assert status_columns <= columns(engine, f"execution_status{version}")
        assert {"kind", "name", *usage_columns} == columns(engine, f"model_usage{version}")
        with engine.connect() as connection:
            kept = connection.execute(
                sa.text(
                    f"SELECT name, model_calls, prompt_tokens, cost_nano_usd, unpriced_calls "
                    f"FROM metric_runs{version}"
                )
            ).all()
        assert kept == [("p", 0, 0, 0, 0)]

    with engine.begin() as connection:
        command.downgrade(migrations.alembic_config(connection), "0002")
    assert not usage_columns & columns(engine, "metric_runs_v2")
    assert not status_columns & columns(engine, "execution_status")
    with engine.connect() as connection:
        assert "model_usage_v2" not in sa.inspect(connection).get_table_names()
