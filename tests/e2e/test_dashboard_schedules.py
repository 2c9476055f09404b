"""The dashboard's schedules (issue 17): the caller's schedules with cron, time zone, overlap,
state and next fire times as the API gives them; a schedule's tick shows up live as its last
tick and execution, which opens in the timeline."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.e2e.test_dashboard import SECRET, Dashboard, browser, dashboard, token
from tests.support.server import Server, running_server

__all__ = ["browser", "dashboard"]  # the fixtures, shared with test_dashboard.py

NIGHTLY = {"process": "echo", "input": {}, "cron": "0 30 2 * * 1-5", "timezone": "Europe/Paris"}
WEEKLY = {"process": "echo", "input": {}, "cron": "@weekly", "paused": True}
EVERY_SECOND = {"process": "echo", "input": {"n": 1}, "cron": "* * * * * *", "overlap": "allow"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server on the embedded store: its worker fires the ticks."""
    with running_server(
        tmp_path_factory.mktemp("dashboard-schedules"), AGENT_LEDGER_JWT_SECRET=SECRET
    ) as running:
        yield running


def put(server: Server, user: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
    with server.client(user) as client:
        response = client.put(f"/v1/schedules/{name}", json=body)
    assert response.status_code == 201, response.text
    shown: dict[str, Any] = response.json()
    return shown


def test_the_schedules_show_their_next_fire_times_and_each_tick_live(
    dashboard: Dashboard, server: Server
) -> None:
    user = token("schedule-viewer")
    nightly = put(server, user, "nightly", NIGHTLY)
    put(server, user, "weekly", WEEKLY)
    page = dashboard.page
    dashboard.sign_in(user)
    dashboard.expect_live()

    row = page.locator("[data-testid=schedule-row][data-schedule=nightly]")
    expect(row.get_by_test_id("schedule-cron")).to_have_text("0 30 2 * * 1-5 Europe/Paris")
    expect(row.get_by_test_id("schedule-state")).to_have_text("active")
    times = row.get_by_test_id("schedule-next").locator("time")
    expect(times).to_have_count(3)
    assert times.evaluate_all("ts => ts.map((t) => t.dataset.at)") == nightly["next_fire_times"][:3]
    expect(times.first).to_contain_text("02:30:00")  # wall-clock time in Paris
    weekly = page.locator("[data-testid=schedule-row][data-schedule=weekly]")
    expect(weekly.get_by_test_id("schedule-state")).to_have_text("paused")
    expect(weekly.get_by_test_id("schedule-next")).to_have_count(0)

    try:
        put(server, user, "every-second", EVERY_SECOND)
        ticking = page.locator("[data-testid=schedule-row][data-schedule=every-second]")
        opened = ticking.get_by_test_id("schedule-last").get_by_role("button")
        expect(opened).to_have_count(1)  # a tick's execution, from the tail
        expect(ticking.get_by_test_id("schedule-overlap")).to_have_text("allow")
        opened.click()  # the row is redrawn at each tick: any of its executions will do
        expect(page.get_by_test_id("timeline-id")).to_have_text(re.compile(r"^[0-9a-f-]{36}$"))
    finally:
        with server.client(user) as client:
            assert client.delete("/v1/schedules/every-second").status_code == 204

    execution_id = page.get_by_test_id("timeline-id").inner_text()
    with server.client(user) as client:
        first = client.get(f"/v1/executions/{execution_id}/events").json()["items"][0]
    assert first["data"]["caused_by"] == "schedule:every-second"
    assert first["data"]["idempotency_key"].startswith("schedule:schedule-viewer:every-second:")
    assert dashboard.errors == []
