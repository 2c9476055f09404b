"""The dashboard (SPEC §9): the real page in a real headless Chromium, on a real server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from tests.support import tokens
from tests.support.server import Server, running_server, start
from tests.support.walking_skeleton import (
    AGENT_STEPS,
    START_COST_OPTIMIZATION,
    Message,
    assert_agent_steps_stream_in_order,
)

# Debian's Chromium: Playwright's own browser downloads cannot work on these machines
CHROMIUM = os.environ.get("AGENT_LEDGER_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 10_000
SECRET = f"dashboard-e2e-{uuid.uuid4().hex}{uuid.uuid4().hex}"

# echo, a 2-second timer, echo: long enough to watch the execution while it runs
PACED = {
    "name": "dashboard_paced",
    "config": {"parallel_execution": False, "stop_on_failure": True, "timeout_seconds": 60},
    "steps": [
        {"id": "first", "type": "agent_task", "agent": "echo", "input": "{{ input }}"},
        {"id": "pause", "type": "timer", "seconds": 2, "depends_on": ["first"]},
        {
            "id": "last",
            "type": "agent_task",
            "agent": "echo",
            "depends_on": ["pause"],
            "input": "{{ steps.first.output }}",
        },
    ],
    "output": "{{ steps.last.output }}",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A running server on the embedded store."""
    with running_server(
        tmp_path_factory.mktemp("dashboard"), AGENT_LEDGER_JWT_SECRET=SECRET
    ) as running:
        yield running


def token(user: str, *roles: str, ttl: int = 600) -> str:
    """Minted here rather than by the CLI, whose start-up costs seconds on a busy machine."""
    return tokens.token(SECRET, user, *roles, ttl=ttl)


@pytest.fixture(scope="module")
def user_a() -> str:
    return token("user-a")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium, or a loud failure: these tests are never skipped."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"the dashboard tests need Chromium and there is none at {CHROMIUM}: `make install` "
            "installs Debian's (apt-get install chromium), or point AGENT_LEDGER_TEST_CHROMIUM "
            "at one",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000
            )
        except PlaywrightError as error:
            pytest.fail(f"Chromium at {CHROMIUM} could not be started: {error}", pytrace=False)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Dashboard:
    """One browser tab on the dashboard, with what it logged and requested."""

    page: Page
    server: Server
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def sign_in(self, token: str) -> None:
        self.page.goto("/")
        self.page.get_by_test_id("token-input").fill(token)
        self.page.get_by_test_id("sign-in-button").click()

    def expect_live(self) -> None:
        expect(self.page.get_by_test_id("connection")).to_have_attribute("data-state", "live")

    def row(self, execution_id: str) -> Locator:
        return self.page.locator(f"[data-testid=execution-row][data-execution-id='{execution_id}']")

    def timeline(self, execution_id: str) -> list[Message]:
        """The timeline's events as tail messages (no timestamp, and of the data only the step)."""
        shown: list[dict[str, str]] = self.page.eval_on_selector_all(
            "[data-testid=timeline-event]", "items => items.map((item) => ({...item.dataset}))"
        )
        return [
            {
                "execution_id": execution_id,
                "type": item["type"],
                "position": int(item["position"]),
                "version": int(item["version"]),
                "data": {"step_id": item["step"]} if item["step"] else {},
            }
            for item in shown
        ]

    def foreign_requests(self) -> list[str]:
        local = (self.server.url, self.server.url.replace("http", "ws", 1), "data:")
        return [url for url in self.requests if not url.startswith(local)]


@pytest.fixture
def dashboard(browser: Browser, server: Server) -> Iterator[Dashboard]:
    """A fresh browser context (no stored token) on the server."""
    context = browser.new_context(base_url=server.url)
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    tab = Dashboard(page, server)
    page.on("pageerror", lambda error: tab.errors.append(str(error)))
    page.on("request", lambda request: tab.requests.append(request.url))
    page.on("websocket", lambda socket: tab.requests.append(socket.url))
    try:
        yield tab
    finally:
        context.close()


def history(server: Server, token: str, execution_id: str) -> list[Message]:
    with server.client(token) as client:
        response = client.get(f"/v1/executions/{execution_id}/events", params={"limit": 1000})
    assert response.status_code == 200, response.text
    items: list[Message] = response.json()["items"]
    return items


def test_a_new_execution_appears_completes_live_and_shows_its_timeline_and_metrics(
    dashboard: Dashboard, server: Server, user_a: str
) -> None:
    page = dashboard.page
    dashboard.sign_in(user_a)
    dashboard.expect_live()
    page.evaluate("window.sameDocument = true")  # gone if the page reloads

    execution_id = start(server, user_a, START_COST_OPTIMIZATION)

    expect(dashboard.row(execution_id).get_by_test_id("execution-status")).to_have_text("completed")
    dashboard.row(execution_id).get_by_role("button").click()
    expect(page.get_by_test_id("timeline-status")).to_have_text("completed")
    expect(page.get_by_test_id("timeline-event").last).to_have_attribute(
        "data-type", "execution_completed"
    )
    chart = page.get_by_test_id("metrics-counts").get_by_test_id("chart-group")
    expect(chart.filter(has_text="optimization")).to_have_count(1)
    shown = dashboard.timeline(execution_id)
    stored = history(server, user_a, execution_id)
    assert page.url == f"{server.url}/dashboard"
    assert page.evaluate("window.sameDocument") is True
    assert_agent_steps_stream_in_order(shown, execution_id)
    assert [(m["position"], m["type"]) for m in shown] == [
        (m["position"], m["type"]) for m in stored
    ]
    assert set(AGENT_STEPS) <= set(chart.evaluate_all("gs => gs.map((g) => g.dataset.name)"))
    steps = page.get_by_test_id("step-row").evaluate_all("rows => rows.map((r) => r.dataset.step)")
    assert steps == list(AGENT_STEPS)
    assert dashboard.errors == []
    assert dashboard.foreign_requests() == []
    assert any("/v1/stream?" in url for url in dashboard.requests)


def test_the_timeline_of_a_running_execution_streams_its_events_as_they_happen(
    dashboard: Dashboard, server: Server, user_a: str
) -> None:
    admin = token("admin", "user", "admin")
    with server.client(admin) as client:
        registered = client.put(f"/v1/processes/{PACED['name']}", json=PACED)
    assert registered.status_code in (200, 201), registered.text
    page = dashboard.page
    dashboard.sign_in(user_a)
    dashboard.expect_live()

    execution_id = start(server, user_a, {"process": PACED["name"], "input": {"hi": "there"}})
    row = dashboard.row(execution_id)
    expect(row.get_by_test_id("execution-status")).to_have_text("running")
    row.get_by_role("button").click()
    expect(page.locator("[data-testid=timeline-event][data-type=timer_started]")).to_have_count(1)
    while_running = [m["type"] for m in dashboard.timeline(execution_id)]

    expect(page.get_by_test_id("timeline-event").last).to_have_attribute(
        "data-type", "execution_completed"
    )
    expect(row.get_by_test_id("execution-status")).to_have_text("completed")
    expect(page.get_by_test_id("timeline-status")).to_have_text("completed")
    shown = [m["type"] for m in dashboard.timeline(execution_id)]
    assert "execution_completed" not in while_running, while_running
    assert shown[: len(while_running)] == while_running
    assert (
        shown.index("timer_started")
        < shown.index("timer_fired")
        < shown.index("execution_completed")
    )
    assert shown == [m["type"] for m in history(server, user_a, execution_id)]
    assert dashboard.errors == []


@pytest.mark.parametrize(
    ("bad", "says"),
    [("not-a-token", "the token is invalid"), ("expired", "expired")],
)
def test_a_bad_token_shows_an_error_and_asks_again(
    dashboard: Dashboard, bad: str, says: str
) -> None:
    dashboard.sign_in(token("user-a", ttl=-60) if bad == "expired" else bad)

    error = dashboard.page.get_by_role("alert")
    expect(error).to_be_visible()
    expect(error).to_contain_text("401")
    expect(error).to_contain_text(says)
    expect(dashboard.page.get_by_test_id("token-input")).to_be_visible()
    expect(dashboard.page.get_by_test_id("executions")).to_be_hidden()
    assert dashboard.page.evaluate("localStorage.length") == 0


def test_a_token_in_the_address_signs_in_and_is_kept_across_reloads(
    dashboard: Dashboard, server: Server, user_a: str
) -> None:
    page = dashboard.page
    page.goto(f"/dashboard#token={user_a}")
    expect(page.get_by_test_id("who")).to_contain_text("user-a")
    address = page.url

    page.reload()

    dashboard.expect_live()
    expect(page.get_by_test_id("who")).to_contain_text("user-a")
    assert user_a not in address
    page.get_by_test_id("sign-out").click()
    expect(page.get_by_test_id("token-input")).to_be_visible()
    assert page.evaluate("localStorage.length") == 0


def test_the_page_and_its_files_are_served_with_their_types_and_nothing_else_is(
    server: Server,
) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        root = client.get("/")
        page = client.get("/dashboard")
        script = client.get("/dashboard/static/app.js")
        style = client.get("/dashboard/static/dashboard.css")
        missing = [
            client.get(f"/dashboard/static/{name}")
            for name in ("nope.js", "__init__.py", "..%2F__init__.py", "index.html")
        ]

    assert root.status_code == 307
    assert root.headers["location"] == "/dashboard"
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script type="module" src="/dashboard/static/app.js">' in page.text
    assert script.headers["content-type"].startswith("text/javascript")
    assert style.headers["content-type"].startswith("text/css")
    assert [r.status_code for r in missing] == [404] * len(missing)
