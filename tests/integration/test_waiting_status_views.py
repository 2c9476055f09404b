"""Executions waiting for a signal on PostgreSQL: `?status=waiting`, the step that waits, the
Prometheus gauge, a rebuild of the status view that gives the same rows, and migration 0005."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
import sqlalchemy as sa
from alembic import command

from agent_ledger.infrastructure.api.app import create_app
from agent_ledger.infrastructure.read_models import migrations
from agent_ledger.infrastructure.read_models.rebuild import Rebuild
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.persistence import read_model_engine
from tests.support import tokens
from tests.support.asgi_client import TestClient
from tests.support.engine_scenarios import (
    SECRET,
    Engine,
    agent_step,
    engine_settings,
    process,
    running_engine,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.postgres

USER = "approver"
OWNER = tokens.bearer(SECRET, USER)
AUDITOR = tokens.bearer(SECRET, "auditor-1", "auditor")
APPROVE = process(
    "approve",
    agent_step("draft"),
    {"id": "review", "type": "wait_for_signal", "signal": "approval", "depends_on": ["draft"]},
    agent_step("apply", depends_on=["review"]),
)


@pytest.fixture(scope="module")
def engine(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    settings = engine_settings(postgres_url, tmp_path_factory.mktemp("data"))
    with running_engine(settings) as running:
        yield running


@pytest.fixture(scope="module")
def client(engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(engine.settings, engine.runtime)) as test_client:
        yield test_client


def status_of(client: TestClient, execution_id: UUID) -> str:
    body = client.get(f"/v1/executions/{execution_id}", headers=OWNER).json()
    return str(body.get("status"))


@pytest.fixture(scope="module")
def executions(engine: Engine, client: TestClient) -> dict[str, UUID]:
    """One execution left waiting for its approval, one approved and completed."""
    name = engine.register(APPROVE)
    ids = {kind: engine.start(name, user=USER) for kind in ("waiting", "approved")}
    for execution_id in ids.values():
        wait_until(
            partial(lambda e: status_of(client, e) == "waiting", execution_id),
            timeout=15,
            what="the execution to wait for its approval",
        )
    sent = client.post(
        f"/v1/executions/{ids['approved']}/signals/approval",
        json={"payload": {"ok": True}},
        headers=OWNER,
    )
    assert sent.status_code == 202, sent.text
    engine.finish(ids["approved"])
    assert engine.runtime.wait_for_projection(engine.runtime.executions.last_position(), 10)
    return ids


def listed(client: TestClient, **params: Any) -> list[str]:
    response = client.get("/v1/executions", params=params, headers=OWNER)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def test_the_status_filter_lists_the_executions_waiting_now(
    client: TestClient, executions: dict[str, UUID]
) -> None:
    assert listed(client, status="waiting") == [str(executions["waiting"])]
    assert listed(client, status="completed") == [str(executions["approved"])]
    assert listed(client, status="running") == []

    unknown = client.get("/v1/executions", params={"status": "asleep"}, headers=OWNER)
    assert unknown.status_code == 422
    spec = client.get("/openapi.json").json()
    assert "waiting" in spec["components"]["schemas"]["ExecutionStatus"]["enum"]


def test_the_waiting_step_says_which_signal_it_waits_for_and_lets_go_of_it_once_taken(
    client: TestClient, executions: dict[str, UUID]
) -> None:
    def steps(kind: str) -> dict[str, tuple[str, str | None]]:
        body = client.get(f"/v1/executions/{executions[kind]}", headers=OWNER).json()
        return {s["id"]: (s["status"], s["awaiting"]) for s in body["steps"]}

    assert steps("waiting") == {
        "draft": ("completed", None),
        "review": ("waiting", "approval"),
        "apply": ("pending", None),
    }
    assert steps("approved")["review"] == ("completed", None)


def test_the_prometheus_scrape_counts_the_executions_waiting_now(
    client: TestClient, executions: dict[str, UUID]
) -> None:
    text = client.get("/metrics").text

    assert "agent_ledger_executions_waiting 1.0" in text
    assert 'agent_ledger_executions{status="waiting"} 1.0' in text
    assert 'agent_ledger_executions{status="timed_out"} 0.0' in text  # every status, 0 or not


def test_a_rebuild_of_the_status_view_gives_the_same_rows(
    engine: Engine, executions: dict[str, UUID]
) -> None:
    statuses = engine.runtime.statuses

    def rows() -> list[dict[str, Any]]:
        return [
            {**asdict(row), "steps": [asdict(step) for step in statuses.steps(execution_id)]}
            for execution_id in executions.values()
            if (row := statuses.get(execution_id, USER)) is not None
        ]

    before = rows()
    final = Rebuild(engine.runtime.executions, engine.runtime.read_engine, "execution_status").run(
        0
    )

    assert final.switched
    assert rows() == before
    assert [row["status"] for row in before] == ["waiting", "completed"]


def test_migration_0005_gives_every_table_set_its_steps_signal_and_keeps_the_rows(
    empty_database: str, tmp_path: Path
) -> None:
    engine = read_model_engine(Settings(database_url=empty_database, data_dir=tmp_path))
    try:
        with engine.begin() as connection:
            command.upgrade(migrations.alembic_config(connection), "0004")
            old = sa.MetaData()
            step_status = sa.Table("step_status", old, autoload_with=connection)
            copy = step_status.to_metadata(old, name="step_status_v2")  # a rebuild's, as 0004 had
            copy.primary_key.name = None
            copy.create(connection)
            row = {"execution_id": uuid4(), "step_id": "review", "ordinal": 0, "user_id": "u"}
            row |= {"process_name": "p", "status": "running", "attempt": 1, "retries": 0}
            connection.execute(copy.insert().values(last_event="x", last_position=1, **row))

        migrations.upgrade(engine)

        with engine.connect() as connection:
            for table in ("step_status", "step_status_v2"):
                columns = {c["name"] for c in sa.inspect(connection).get_columns(table)}
                assert "awaiting" in columns, table
            kept = connection.execute(sa.text("SELECT status, awaiting FROM step_status_v2"))
            assert kept.all() == [("running", None)]
        with engine.begin() as connection:
            command.downgrade(migrations.alembic_config(connection), "0004")
        with engine.connect() as connection:
            columns = {c["name"] for c in sa.inspect(connection).get_columns("step_status_v2")}
        assert "awaiting" not in columns
    finally:
        engine.dispose()
