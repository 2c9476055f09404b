"""Schedules on PostgreSQL: three `agent-ledger worker` processes fire a schedule every
second for ten seconds, one of them SIGKILLed at a tick, and each tick starts exactly one
execution; the one missed tick caught up late; overlap; the API's refusals, owners and
triggers.

The API runs in-process without an engine (no scheduler of its own); the tests that need a
scheduler at a chosen instant run one in-process on a clock they set.
"""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from agent_ledger.application.cron import Cron
from agent_ledger.application.event_log import to_message
from agent_ledger.application.scheduler import Scheduler
from agent_ledger.domain.execution_state import execution_id_for
from agent_ledger.domain.schedules import schedule_id_for, tick_key
from agent_ledger.infrastructure.runtime import Runtime
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.work.schedules import ScheduleService
from tests.support.asgi_client import TestClient, serving
from tests.support.stores import short_lease_settings
from tests.support.tokens import bearer
from tests.support.waiting import wait_until
from tests.support.workers import worker_environment

pytestmark = pytest.mark.postgres

SECRET = "schedules-secret-" + "s" * 32
ANN, BOB = bearer(SECRET, "ann"), bearer(SECRET, "bob")
WORKERS = 3
TICKS = 10


@pytest.fixture(scope="module")
def settings(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return short_lease_settings(postgres_url, SECRET, tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def served(settings: Settings) -> Iterator[tuple[Runtime, TestClient]]:
    with serving(settings, engine=False, projector=False) as running:
        yield running


@pytest.fixture
def runtime(served: tuple[Runtime, TestClient]) -> Runtime:
    return served[0]


@pytest.fixture
def client(served: tuple[Runtime, TestClient]) -> TestClient:
    return served[1]


def service(runtime: Runtime) -> ScheduleService:
    assert runtime.schedules is not None
    return runtime.schedules


def schedule_events(runtime: Runtime, user: str, name: str) -> list[Any]:
    schedules = service(runtime).schedules
    stored = schedules.recorder.select_events(schedule_id_for(user, name))
    return [schedules.mapper.to_domain_event(s) for s in stored]


def starts_of(runtime: Runtime, user: str) -> list[dict[str, Any]]:
    """Every `execution_started` of `user`'s, as the tail sends them."""
    logged = runtime.executions.read_log(after=0, types={"execution_started"})
    return [m for m in map(to_message, logged) if m["user_id"] == user]


def ten_seconds_from(start: datetime) -> str:
    """A cron of the ten seconds from `start` on: every other instant it names lies before
    `start` minus 50 s or after its tenth second plus 45 s."""
    instants = [start + timedelta(seconds=i) for i in range(TICKS)]
    fields = ("second", "minute", "hour", "day", "month")
    return (
        " ".join(
            ",".join(str(v) for v in sorted({getattr(i, f) for i in instants})) for f in fields
        )
        + " *"
    )


def sleep_until(instant: datetime) -> None:
    """Act at a given instant (the scenario's timing, not a wait for a result)."""
    time.sleep(max((instant - datetime.now(UTC)).total_seconds(), 0.0))


def start_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "agent-ledger"), "worker"],
            env=worker_environment(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_a_schedule_every_second_for_ten_seconds_starts_ten_executions_one_per_tick_though_a_worker_is_killed_at_a_tick(  # noqa: E501
    settings: Settings, runtime: Runtime, client: TestClient, tmp_path: Path
) -> None:
    logs = [tmp_path / f"worker-{n}.log" for n in range(WORKERS)]
    workers = [start_worker(settings, log) for log in logs]
    try:
        wait_until(
            lambda: all("scheduler running" in log.read_text() for log in logs),
            timeout=60,
            what="three workers with their schedulers running",
        )
        start = datetime.fromtimestamp(math.ceil(time.time()) + 2, UTC)
        body = {"process": "echo", "input": {"n": 1}, "cron": ten_seconds_from(start)}
        put = client.put("/v1/schedules/ten", json={**body, "overlap": "allow"}, headers=ANN)
        assert put.status_code == 201, put.text
        ticks = [start + timedelta(seconds=i) for i in range(TICKS)]
        assert [datetime.fromisoformat(t) for t in put.json()["next_fire_times"]] == ticks[:5]

        sleep_until(ticks[4])
        workers[0].send_signal(signal.SIGKILL)  # at the fifth tick, maybe while firing it
        fired = wait_until(
            lambda: (
                (e := [e for e in schedule_events(runtime, "ann", "ten") if hasattr(e, "tick")])
                and e[-1].tick == ticks[-1]
                and e
            ),
            timeout=30,
            what="the tenth tick",
        )
        starts = wait_until(
            lambda: len(s := starts_of(runtime, "ann")) >= TICKS and s,
            timeout=30,
            what="ten executions",
        )
        assert client.delete("/v1/schedules/ten", headers=ANN).status_code == 204
    finally:
        for worker in workers:
            worker.kill()
            worker.wait(10)

    assert [type(e).__name__ for e in fired] == ["TickFired"] * TICKS, fired
    assert [e.tick for e in fired] == ticks
    assert not any(e.late or e.missed for e in fired)
    keys = [tick_key("ann", "ten", tick) for tick in ticks]
    assert [e.execution_id for e in fired] == [execution_id_for("ann", k) for k in keys]
    assert len(starts) == TICKS  # none doubled
    assert sorted(s["data"]["idempotency_key"] for s in starts) == sorted(keys)
    assert {s["data"]["caused_by"] for s in starts} == {"schedule:ten"}
    assert {s["execution_id"] for s in starts} == {str(e.execution_id) for e in fired}
    firing_workers = {e.caused_by for e in fired}
    assert all(w.startswith("scheduler:") for w in firing_workers)


def test_of_the_ticks_missed_while_no_worker_ran_only_the_latest_is_fired_late(
    runtime: Runtime, client: TestClient
) -> None:
    body = {"process": "echo", "input": {}, "cron": "*/10 * * * * *", "overlap": "allow"}
    assert client.put("/v1/schedules/missed", json=body, headers=ANN).status_code == 201
    defined = schedule_events(runtime, "ann", "missed")[0].timestamp
    tick_an_hour_later = Cron.parse(body["cron"]).next_after(defined + timedelta(hours=1))
    assert tick_an_hour_later is not None
    an_hour_later = tick_an_hour_later + timedelta(seconds=7)  # beyond the grace of 5 s
    worker = Scheduler(
        service(runtime).book, runtime.executions, name="late", now=lambda: an_hour_later
    )

    worker.run_pass()
    worker.run_pass()  # nothing more to do

    passed = Cron.parse("*/10 * * * * *").ticks(defined, an_hour_later, 1000)
    fired = schedule_events(runtime, "ann", "missed")[1:]
    assert [type(e).__name__ for e in fired] == ["TickFired"]
    assert (fired[0].tick, fired[0].late, fired[0].missed) == (passed[-1], True, len(passed) - 1)
    started = runtime.executions.get_execution(fired[0].execution_id)
    assert started.idempotency_key == tick_key("ann", "missed", passed[-1])


def test_overlap_skips_a_tick_while_the_last_execution_runs_or_cancels_it_first(
    runtime: Runtime, client: TestClient
) -> None:
    body = {"process": "echo", "input": {}, "cron": "*/10 * * * * *"}  # overlap: skip
    assert client.put("/v1/schedules/lap", json=body, headers=ANN).status_code == 201
    row = service(runtime).book.get_schedule("ann", "lap")
    first = Cron.parse(body["cron"]).next_after(row.ticks_from)
    assert first is not None
    clock = [first]
    worker = Scheduler(service(runtime).book, runtime.executions, name="w", now=lambda: clock[0])

    worker.run_pass()  # no worker runs executions here: the first stays pending
    clock[0] = first + timedelta(seconds=10)
    worker.run_pass()
    changed = client.put(
        "/v1/schedules/lap", json={**body, "overlap": "cancel_previous"}, headers=ANN
    )
    assert changed.status_code == 200
    clock[0] = first + timedelta(seconds=20)
    worker.run_pass()

    events = schedule_events(runtime, "ann", "lap")
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["ScheduleDefined", "TickFired", "TickSkipped", "ScheduleChanged", "TickFired"]
    started, skipped, changed_event, replacing = events[1], events[2], events[3], events[4]
    assert skipped.running == started.execution_id
    assert "overlap skip" in skipped.reason
    assert (changed_event.changed, changed_event.caused_by) == (["overlap"], "user:ann")
    assert replacing.cancelled == started.execution_id
    cancelled = runtime.executions.get_execution(started.execution_id)
    assert cancelled.cancellation is not None
    assert cancelled.cancellation["by"] == "schedule:lap"
    assert clock[0].isoformat() in cancelled.cancellation["reason"]


@pytest.mark.parametrize(
    ("change", "status", "where"),
    [
        ({"cron": "* * *"}, 422, "body.cron"),
        ({"cron": "0 0 30 2 *"}, 422, "body.cron"),  # never fires
        ({"timezone": "Mars/Olympus"}, 422, "body.timezone"),
        ({"overlap": "sometimes"}, 422, "body.overlap"),
        ({"process": "nope"}, 422, "body.process"),
        ({"version": 99}, 422, "body.version"),
        ({"input": {"x": "y" * 70_000}}, 413, None),
        ({"extra": 1}, 422, "body.extra"),
    ],
)
def test_a_schedule_that_cannot_run_is_refused_naming_the_field_and_nothing_is_stored(
    runtime: Runtime, client: TestClient, change: dict[str, Any], status: int, where: str | None
) -> None:
    body = {"process": "echo", "input": {}, "cron": "0 * * * *", **change}
    answer = client.put("/v1/schedules/refused", json=body, headers=BOB)

    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    named = [".".join(map(str, e["loc"])) for e in problem.get("errors", [])]
    assert where is None or where in [*named, problem.get("field")], problem
    assert schedule_events(runtime, "bob", "refused") == []
    assert client.get("/v1/schedules/refused", headers=BOB).status_code == 404


def test_schedules_are_their_owners_and_a_trigger_starts_one_now(
    runtime: Runtime, client: TestClient
) -> None:
    body = {"process": "echo", "input": {"q": 1}, "cron": "0 9 * * 1-5", "timezone": "Europe/Paris"}
    assert (
        client.put("/v1/schedules/mine", json={**body, "paused": True}, headers=ANN).status_code
        == 201
    )
    assert client.put("/v1/schedules/bad name", json=body, headers=ANN).status_code == 422

    for method, path in [
        ("GET", "/v1/schedules/mine"),
        ("DELETE", "/v1/schedules/mine"),
        ("POST", "/v1/schedules/mine/trigger"),
    ]:
        assert client.request(method, path, headers=BOB).status_code == 404, (method, path)
    assert [s["name"] for s in client.get("/v1/schedules", headers=BOB).json()] == []
    shown = client.get("/v1/schedules/mine", headers=ANN).json()
    assert (shown["paused"], shown["next_fire_times"], shown["updated_by"]) == (
        True,
        [],
        "user:ann",
    )
    assert client.put("/v1/schedules/mine", json=body, headers=ANN).status_code == 200
    upcoming = client.get("/v1/schedules/mine", headers=ANN).json()["next_fire_times"]
    assert len(upcoming) == 5
    assert all(t.endswith(("+01:00", "+02:00")) and "T09:00:00" in t for t in upcoming)

    triggered = client.post("/v1/schedules/mine/trigger", headers=ANN)
    assert triggered.status_code == 201, triggered.text
    started = runtime.executions.get_execution(
        UUID(triggered.json()["execution_id"]), user_id="ann"
    )
    assert triggered.headers["location"] == f"/v1/executions/{started.id}"
    assert started.input == {"q": 1}
    assert started.idempotency_key == tick_key(
        "ann", "mine", datetime.fromisoformat(triggered.json()["at"])
    )
    busy = client.post("/v1/schedules/mine/trigger", headers=ANN)  # overlap skip, still pending
    assert (busy.status_code, busy.json()["type"]) == (409, "/problems/schedule-busy")
    assert client.delete("/v1/schedules/mine", headers=ANN).status_code == 204
    assert client.get("/v1/schedules/mine", headers=ANN).status_code == 404
    kinds = [type(e).__name__ for e in schedule_events(runtime, "ann", "mine")]
    assert kinds == ["ScheduleDefined", "ScheduleChanged", "ScheduleTriggered", "ScheduleDeleted"]
