"""Resumed and forked executions in the read models on PostgreSQL: the status view after a
failure, a resume and the completion; forks listed under their parent (`?parent_id=`) and
naming it; one process run per execution however often resumed; a rebuild that gives the
same rows; migration 0007 on a rebuild's table set."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
import sqlalchemy as sa
from alembic import command

from agent_ledger.application.agents import AgentContext, AgentError
from agent_ledger.application.lineage import ForkRequest, fork, resume
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
    unique,
)

pytestmark = pytest.mark.postgres

USER = "lin"
OWNER = tokens.bearer(SECRET, USER)
AUDITOR = tokens.bearer(SECRET, "auditor-1", "auditor")


class Switch:
    """An agent that fails while `down` is set, and echoes its input otherwise."""

    def __init__(self) -> None:
        self.name = unique("switch")
        self.down = threading.Event()
        self.down.set()

    async def __call__(self, context: AgentContext, data: Any) -> Any:
        if self.down.is_set():
            raise AgentError("down", retryable=False)
        return {"middle": data}


@pytest.fixture(scope="module")
def engine(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    settings = engine_settings(postgres_url, tmp_path_factory.mktemp("data"))
    with running_engine(settings) as running:
        yield running


@pytest.fixture(scope="module")
def client(engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(engine.settings, engine.runtime)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def lineage(engine: Engine) -> dict[str, Any]:
    """A parent that fails at `middle`, is resumed and completes; two forks of it (from
    `last`, then from `middle`), both completed; and an execution of its own."""
    switch = Switch()
    engine.agent(switch.name, switch)
    name = engine.register(
        process(
            "chain",
            agent_step("first"),
            agent_step("middle", switch.name, depends_on=["first"]),
            agent_step("last", depends_on=["middle"]),
            parallel=False,
        )
    )
    parent = engine.start(name, user=USER)
    failed = engine.finish(parent)
    assert failed.status.value == "failed"
    engine.runtime.wait_for_projection(engine.runtime.executions.last_position(), 10)
    failed_view = engine.runtime.statuses.get(parent, USER)

    switch.down.clear()
    executions = engine.runtime.executions
    resume(executions, parent, user_id=None, actor="ops", reason="the agent is back")
    assert engine.finish(parent).status.value == "completed"
    forks = []
    for from_step in ("last", "middle"):
        request = ForkRequest(
            parent_id=parent, from_step=from_step, caller="ops", owner_filter=None
        )
        forks.append(fork(executions, request).execution_id)
        assert engine.finish(forks[-1]).status.value == "completed"
    other = engine.start(name, user=USER)
    engine.finish(other)
    for projection in ("execution_status", "metrics"):
        assert engine.runtime.wait_for_projection(executions.last_position(), 10, projection)
    return {
        "process": name,
        "agent": switch.name,
        "parent": parent,
        "forks": forks,
        "other": other,
        "failed_view": failed_view,
    }


def detail(client: TestClient, execution_id: UUID) -> dict[str, Any]:
    response = client.get(f"/v1/executions/{execution_id}", headers=OWNER)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_resumed_execution_reads_failed_then_completed_with_its_step_run_again(
    client: TestClient, lineage: dict[str, Any]
) -> None:
    assert lineage["failed_view"].status == "failed"
    assert lineage["failed_view"].resumes == 0

    view = detail(client, lineage["parent"])

    assert (view["status"], view["error"], view["resumes"]) == ("completed", None, 1)
    started, resumed, finished = (
        datetime.fromisoformat(view[k]) for k in ("started_at", "resumed_at", "finished_at")
    )
    assert started < resumed < finished
    assert view["duration_ms"] == pytest.approx((finished - started).total_seconds() * 1000)
    steps = {s["id"]: (s["status"], s["attempt"], s["copied"]) for s in view["steps"]}
    assert steps == {
        "first": ("completed", 1, False),
        "middle": ("completed", 2, False),  # attempt 1 failed before the resume
        "last": ("completed", 1, False),
    }
    assert (view["parent_id"], view["forked_from_step"]) == (None, None)


def test_forks_name_their_parent_and_step_and_the_parent_lists_them_newest_first(
    client: TestClient, lineage: dict[str, Any]
) -> None:
    parent, (from_last, from_middle) = lineage["parent"], lineage["forks"]

    assert detail(client, parent)["children"] == [str(from_middle), str(from_last)]
    assert detail(client, parent)["more_children"] is False
    child = detail(client, from_middle)
    assert (child["parent_id"], child["forked_from_step"]) == (str(parent), "middle")
    assert (child["status"], child["children"], child["resumes"]) == ("completed", [], 0)
    copied = {s["id"]: s["copied"] for s in child["steps"]}
    assert copied == {"first": True, "middle": False, "last": False}
    assert [s["copied"] for s in detail(client, from_last)["steps"]] == [True, True, False]

    listed = client.get("/v1/executions", params={"parent_id": str(parent)}, headers=OWNER)
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    assert [i["id"] for i in items] == [str(from_middle), str(from_last)]
    assert {i["parent_id"] for i in items} == {str(parent)}
    everything = client.get("/v1/executions", headers=OWNER).json()["items"]
    assert {i["id"]: i["resumes"] for i in everything}[str(parent)] == 1
    stranger = tokens.bearer(SECRET, "someone-else")
    assert (
        client.get("/v1/executions", params={"parent_id": str(parent)}, headers=stranger).json()[
            "items"
        ]
        == []
    )
    spec = client.get("/openapi.json").json()
    parameters = spec["paths"]["/v1/executions"]["get"]["parameters"]
    assert "parent_id" in {p["name"] for p in parameters}


def metrics(client: TestClient, kind: str, name: str) -> dict[str, Any]:
    response = client.get(f"/v1/metrics/{kind}", params={"name": name}, headers=AUDITOR)
    assert response.status_code == 200, response.text
    (item,) = response.json()["items"]
    totals: dict[str, Any] = item["totals"]
    return totals


def test_a_resumed_execution_is_one_process_run_and_each_fork_another(
    client: TestClient, lineage: dict[str, Any]
) -> None:
    process_runs = metrics(client, "processes", lineage["process"])
    agent_runs = metrics(client, "agents", lineage["agent"])

    # the parent (failed, resumed, completed) once, two forks, and the other execution
    assert (process_runs["runs"], process_runs["successes"], process_runs["failures"]) == (4, 4, 0)
    assert (process_runs["running"], process_runs["retries"]) == (0, 1)
    # middle: the parent's failed attempt 1 and attempt 2, the fork from middle, the other
    assert (agent_runs["runs"], agent_runs["successes"], agent_runs["failures"]) == (4, 3, 1)


def test_a_rebuild_gives_the_same_rows_and_the_same_figures(
    engine: Engine, client: TestClient, lineage: dict[str, Any]
) -> None:
    statuses = engine.runtime.statuses
    ids = [lineage["parent"], *lineage["forks"], lineage["other"]]

    def everything() -> list[Any]:
        rows = [
            {**asdict(row), "steps": [asdict(step) for step in statuses.steps(execution_id)]}
            for execution_id in ids
            if (row := statuses.get(execution_id, USER)) is not None
        ]
        figures = [metrics(client, "processes", lineage["process"])]
        return [rows, figures, metrics(client, "agents", lineage["agent"])]

    before = everything()
    rebuilt = [
        Rebuild(engine.runtime.executions, engine.runtime.read_engine, name).run(0)
        for name in ("execution_status", "metrics")
    ]

    assert [r.switched for r in rebuilt] == [True, True]
    assert everything() == before
    assert len(before[0]) == 4


def test_migration_0007_gives_every_table_set_its_lineage_and_keeps_the_rows(
    empty_database: str, tmp_path: Path
) -> None:
    engine = read_model_engine(Settings(database_url=empty_database, data_dir=tmp_path))
    try:
        with engine.begin() as connection:
            command.upgrade(migrations.alembic_config(connection), "0006")
            old = sa.MetaData()
            old.reflect(connection, only=["execution_status", "step_status"])
            for table in list(old.tables.values()):  # a rebuild's copies, as 0006 had them
                copy = table.to_metadata(old, name=f"{table.name}_v2")
                copy.primary_key.name = None
                for index in copy.indexes:
                    index.name = f"{index.name}_v2"
                copy.create(connection)
            step = {"execution_id": uuid4(), "step_id": "a", "ordinal": 0, "user_id": "u"}
            step |= {"process_name": "p", "status": "completed", "attempt": 1, "retries": 0}
            connection.execute(
                old.tables["step_status_v2"]
                .insert()
                .values(last_event="x", last_position=1, **step)
            )

        migrations.upgrade(engine)

        lineage = {"parent_id", "forked_from_step", "resumes", "resumed_at"}
        with engine.connect() as connection:
            inspector = sa.inspect(connection)
            for version in ("", "_v2"):
                columns = {c["name"] for c in inspector.get_columns(f"execution_status{version}")}
                assert lineage <= columns, version
                indexes = {i["name"] for i in inspector.get_indexes(f"execution_status{version}")}
                assert f"execution_status_parent{version}" in indexes
                assert "copied" in {
                    c["name"] for c in inspector.get_columns(f"step_status{version}")
                }
            kept = connection.execute(sa.text("SELECT status, copied FROM step_status_v2"))
            assert kept.all() == [("completed", False)]
        with engine.begin() as connection:
            command.downgrade(migrations.alembic_config(connection), "0006")
        with engine.connect() as connection:
            columns = {c["name"] for c in sa.inspect(connection).get_columns("execution_status_v2")}
        assert not lineage & columns
    finally:
        engine.dispose()
