"""No stored event can stop a projection: one it cannot apply is parked, the rest go on.

The store is append-only, so the projector meets events written before today's input
checks (a thread id with a NUL byte stopped the status views of every user) and events
that meet a projection bug. Both databases.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from agent_ledger.application.starter import StartRequest, start_execution
from agent_ledger.infrastructure.auth.tokens import issue_token
from agent_ledger.infrastructure.cli.main import app
from agent_ledger.infrastructure.read_models import registry
from agent_ledger.infrastructure.read_models.event_index import EventIndexBatch
from agent_ledger.infrastructure.read_models.parked import parked, retry_parked
from agent_ledger.infrastructure.read_models.rebuild import Rebuild
from agent_ledger.infrastructure.runtime import Runtime
from agent_ledger.infrastructure.settings import Settings
from tests.support.asgi_client import TestClient, serving
from tests.support.databases import fresh_database

SECRET = "parked-secret-" + "p" * 32
USER_B = {"Authorization": f"Bearer {issue_token(SECRET, 'user-b')}"}
ADMIN = {"Authorization": f"Bearer {issue_token(SECRET, 'ada', ['admin'])}"}


@pytest.fixture(params=["postgres", "sqlite"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    if request.param == "sqlite":
        yield Settings(jwt_secret=SECRET, data_dir=tmp_path)
        return
    with fresh_database(request.getfixturevalue("postgres_admin")) as url:
        yield Settings(database_url=url, jwt_secret=SECRET, data_dir=tmp_path)


@pytest.fixture
def service(settings: Settings) -> Iterator[tuple[Runtime, TestClient]]:
    with serving(settings, engine=False) as running:  # the worker is not what is tested here
        yield running


def start_unchecked(runtime: Runtime, **request: Any) -> int:
    """A start that bypasses the API's checks, as an older version of the service wrote it."""
    started = start_execution(
        runtime.executions,
        StartRequest(user_id="user-a", process=runtime.catalog.get("echo"), input={}, **request),
    )
    return started.position


def start_over_the_api(client: TestClient) -> tuple[str, int]:
    response = client.post("/v1/executions", json={"process": "echo"}, headers=USER_B)
    assert response.status_code == 201, response.text
    return response.json()["id"], response.json()["position"]


def test_an_event_the_status_view_cannot_hold_is_parked_and_other_users_are_served(
    service: tuple[Runtime, TestClient], settings: Settings
) -> None:
    runtime, client = service
    poisoned = start_unchecked(runtime, thread_id="t\x00")
    execution_id, position = start_over_the_api(client)

    view = client.get(f"/v1/executions/{execution_id}", params={"after": position}, headers=USER_B)
    assert view.status_code == 200, view.text
    assert view.json()["status"] == "pending"

    assert runtime.projector is not None
    for name in ("execution_status", "metrics", "event_index"):
        assert runtime.projector.wait_for(position, 10, name=name), name
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    expected_parked = 1 if settings.uses_postgres else 0  # SQLite stores a NUL in text
    assert body["parked_events"] == expected_parked
    assert body["projections"]["execution_status"]["parked"] == expected_parked
    assert {p["position"] for p in body["projections"].values()} == {body["store_position"]}

    listed = client.get("/v1/admin/parked", headers=ADMIN)
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    if settings.uses_postgres:
        assert [(i["position"], i["projection"], i["event_type"]) for i in items] == [
            (poisoned, "execution_status", "execution_started")
        ]
        assert "0x00" in items[0]["error"]
        assert "\x00" not in listed.text
        assert client.get("/v1/admin/parked", headers=USER_B).status_code == 403
        scrape = client.get("/metrics").text
        assert 'agent_ledger_projection_parked_events{projection="execution_status"} 1.0' in scrape
    else:
        assert items == []


def test_a_projection_bug_parks_the_event_and_a_retry_after_the_fix_applies_it(
    service: tuple[Runtime, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, client = service
    first, _ = start_over_the_api(client)
    assert runtime.projector is not None
    runtime.projector.catch_up()
    broken_at = runtime.executions.last_position() + 1

    class BrokenIndex(EventIndexBatch):
        def process(self, event: object, position: int) -> None:
            if position == broken_at:
                raise KeyError("a projection bug")
            super().process(event, position)

    monkeypatch.setitem(registry.PROJECTIONS, "event_index", BrokenIndex)
    _, position = start_over_the_api(client)  # broken_at: the start of this execution
    assert position == broken_at
    last, last_position = start_over_the_api(client)

    assert runtime.projector.wait_for(last_position, 10, name="event_index")
    with runtime.read_engine.connect() as connection:
        found = parked(connection)
    assert [(p.position, p.tracking_name, p.tries) for p in found] == [
        (broken_at, "event_index", 1)
    ]
    assert "KeyError" in found[0].error
    # the status view, in the same projector round, is complete: exactly once for the rest
    view = client.get(f"/v1/executions/{last}", headers=USER_B)
    assert view.status_code == 200
    assert view.json()["version"] == 1

    failed_again = retry_parked(runtime.executions, runtime.read_engine, broken_at)
    assert failed_again["event_index"] is not None
    assert "KeyError" in failed_again["event_index"]

    monkeypatch.setitem(registry.PROJECTIONS, "event_index", EventIndexBatch)  # fixed
    assert retry_parked(runtime.executions, runtime.read_engine, broken_at) == {"event_index": None}
    with runtime.read_engine.connect() as connection:
        assert parked(connection) == []
        indexed = connection.execute(
            sa.text("SELECT count(*) FROM event_index WHERE position = :p"), {"p": broken_at}
        ).scalar()
    assert indexed == 1
    assert first != last


def test_a_rebuild_reports_parked_events_instead_of_dying(
    service: tuple[Runtime, TestClient], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime, client = service
    start_over_the_api(client)
    poisoned = start_unchecked(runtime, thread_id="t\x00")
    start_over_the_api(client)
    if not settings.uses_postgres:  # SQLite holds a NUL: break the rebuild's batch instead
        from agent_ledger.infrastructure.read_models.status_batch import ExecutionStatusBatch

        class Broken(ExecutionStatusBatch):
            def process(self, event: object, position: int) -> None:
                if position == poisoned:
                    raise ValueError("a projection bug")
                super().process(event, position)

        monkeypatch.setitem(registry.VERSIONED_PROJECTIONS, "execution_status", Broken)

    final = Rebuild(runtime.executions, runtime.read_engine, "execution_status").run(0)

    assert final.switched
    assert final.parked == 1
    assert final.position == runtime.executions.last_position()
    with runtime.read_engine.connect() as connection:
        found = parked(connection)
    assert [(p.position, p.tracking_name) for p in found] == [
        (poisoned, f"execution_status@v{final.version}")
    ]


@pytest.mark.parametrize("settings", ["postgres"], indirect=True)  # SQLite holds a NUL
def test_the_cli_lists_parked_events_and_a_retry_that_fails_again_exits_1(
    service: tuple[Runtime, TestClient], settings: Settings
) -> None:
    runtime, client = service
    poisoned = start_unchecked(runtime, thread_id="t\x00")
    _, position = start_over_the_api(client)
    assert runtime.projector is not None
    assert runtime.projector.wait_for(position, 10)
    env = {
        "AGENT_LEDGER_DATABASE_URL": settings.database_url or "",
        "AGENT_LEDGER_DATA_DIR": str(settings.data_dir),
        "AGENT_LEDGER_JWT_SECRET": SECRET,
    }
    runner = CliRunner()

    listed = runner.invoke(app, ["projections", "parked"], env=env)
    assert listed.exit_code == 0, listed.output
    assert f"{poisoned}\texecution_status\texecution_started\t" in listed.stdout
    assert "\x00" not in listed.stdout

    retried = runner.invoke(app, ["projections", "parked", "--retry", str(poisoned)], env=env)
    assert retried.exit_code == 1, retried.output
    assert "execution_status: failed again: CharacterNotInRepertoire" in retried.stdout

    missing = runner.invoke(app, ["projections", "parked", "--retry", "999999"], env=env)
    assert missing.exit_code == 2
    assert "no event at position 999999" in missing.stderr
