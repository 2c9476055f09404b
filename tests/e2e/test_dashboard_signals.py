"""The dashboard and signals (issue 16): a waiting execution's timeline shows a form for the
awaited signal; Approve sends it with the user's token and the execution goes on live; a
payload the step's schema refuses shows the server's problem and records nothing."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Request, expect

from tests.e2e.test_dashboard import Dashboard, browser, dashboard, history, server, token
from tests.support.server import Server, start

__all__ = ["browser", "dashboard", "server"]  # the fixtures of test_dashboard.py

APPROVAL = {
    "name": "dashboard_approval",
    "config": {"parallel_execution": False, "stop_on_failure": True, "timeout_seconds": 120},
    "steps": [
        {"id": "draft", "type": "agent_task", "agent": "echo", "input": "{{ input }}"},
        {
            "id": "review",
            "type": "wait_for_signal",
            "signal": "approval",
            "depends_on": ["draft"],
            "timeout_seconds": 600,
            "schema": {
                "type": "object",
                "properties": {"approved": {"type": "boolean"}, "comment": {"type": "string"}},
                "required": ["approved"],
                "additionalProperties": False,
            },
        },
        {
            "id": "decide",
            "type": "gateway",
            "depends_on": ["review"],
            "routes": [
                {"when": "steps.review.output.approved", "next": ["apply"]},
                {"default": True, "next": ["hold"]},
            ],
        },
        {"id": "apply", "type": "agent_task", "agent": "echo", "input": {"go": True}},
        {"id": "hold", "type": "agent_task", "agent": "echo", "input": {"go": False}},
    ],
    "output": "{{ steps.review.output }}",
}

# a payload that is not an approval: the form is a JSON box
BUDGET = {
    "name": "dashboard_budget",
    "steps": [
        {
            "id": "limit",
            "type": "wait_for_signal",
            "signal": "budget",
            "schema": {
                "type": "object",
                "properties": {"amount": {"type": "integer", "maximum": 100}},
                "required": ["amount"],
            },
        }
    ],
    "output": "{{ steps.limit.output }}",
}


def register(server: Server, *documents: dict[str, Any]) -> None:
    with server.client(token("admin", "user", "admin")) as client:
        for document in documents:
            response = client.put(f"/v1/processes/{document['name']}", json=document)
            assert response.status_code in (200, 201), response.text


def open_waiting(dashboard: Dashboard, user: str, body: dict[str, Any]) -> str:
    """Start an execution and open its timeline once it waits for a signal."""
    dashboard.sign_in(user)
    dashboard.expect_live()
    dashboard.page.evaluate("window.sameDocument = true")  # gone if the page reloads
    execution_id = start(dashboard.server, user, body)
    dashboard.row(execution_id).get_by_role("button").click()
    expect(dashboard.page.get_by_test_id("timeline-id")).to_have_text(execution_id)
    return execution_id


def events_of(dashboard: Dashboard, user: str, execution_id: str, kind: str) -> list[Any]:
    return [m for m in history(dashboard.server, user, execution_id) if m["type"] == kind]


def test_approving_in_the_form_sends_the_signal_and_the_execution_goes_on_live(
    dashboard: Dashboard, server: Server
) -> None:
    register(server, APPROVAL, BUDGET)
    user = token("approver")
    page = dashboard.page
    execution_id = open_waiting(dashboard, user, {"process": APPROVAL["name"], "input": {"x": 1}})

    awaited = page.locator("[data-testid=timeline-event][data-type=signal_awaited]")
    expect(awaited).to_contain_text("waits for signal “approval”")
    form = awaited.get_by_test_id("signal-form")
    expect(form).to_have_attribute("data-step", "review")
    expect(form.get_by_test_id("signal-payload")).to_have_count(0)  # an approval, not JSON
    with server.client(user) as client:
        status = client.get(f"/v1/executions/{execution_id}").json()["status"]
    # the list's badge says what the status view says (waiting, once the views know it)
    expect(dashboard.row(execution_id).get_by_test_id("execution-status")).to_have_text(status)
    badges = page.evaluate(
        """() => ["waiting", "running"].map((status) => {
             const badge = document.createElement("span");
             badge.className = "status";
             badge.dataset.status = status;
             document.body.append(badge);
             const colour = getComputedStyle(badge).backgroundColor;
             badge.remove();
             return colour;
           })"""
    )
    assert badges[0] != badges[1], "a waiting badge looks like a running one"

    form.get_by_test_id("signal-comment").fill("Ship it <b>now</b>")
    form.get_by_test_id("signal-approve").click()

    received = page.locator("[data-testid=timeline-event][data-type=signal_received]")
    expect(received).to_contain_text("“approval” from approver (user): approved")
    expect(received).to_contain_text("“Ship it <b>now</b>”")  # text, never markup
    expect(received).to_have_attribute("data-verdict", "approved")
    expect(page.get_by_test_id("signal-form")).to_have_count(0)
    expect(page.get_by_test_id("timeline-status")).to_have_text("completed")
    step = "[data-testid=step-row][data-step={}] .status".format
    expect(page.locator(step("apply"))).to_have_text("completed")
    expect(page.locator(step("hold"))).to_have_text("skipped")
    expect(dashboard.row(execution_id).get_by_test_id("execution-status")).to_have_text("completed")
    assert page.evaluate("window.sameDocument") is True
    [sent] = events_of(dashboard, user, execution_id, "signal_received")
    assert sent["data"]["payload"] == {"approved": True, "comment": "Ship it <b>now</b>"}
    assert sent["data"]["actor"] == "approver"
    assert dashboard.errors == []


def test_a_payload_the_schema_refuses_shows_the_problem_and_records_nothing(
    dashboard: Dashboard, server: Server
) -> None:
    register(server, APPROVAL, BUDGET)
    user = token("budgeter")
    page = dashboard.page
    execution_id = open_waiting(dashboard, user, {"process": BUDGET["name"], "input": {}})
    form = page.get_by_test_id("signal-form")
    box = form.get_by_test_id("signal-payload")
    problem = form.get_by_test_id("signal-problem")
    posts: list[str] = []

    def count_posts(request: Request) -> None:
        if request.method == "POST":
            posts.append(request.url)

    page.on("request", count_posts)

    box.fill("{amount: 5")
    form.get_by_test_id("signal-send").click()
    expect(problem).to_contain_text("Not JSON")
    assert posts == []  # checked in the page, never sent

    box.fill('{"amount": 500}')
    form.get_by_test_id("signal-send").click()
    expect(problem).to_contain_text("(422)")
    expect(problem).to_contain_text("does not fit its schema")
    expect(problem).to_contain_text("500 is greater than the maximum of 100")
    expect(form).to_have_attribute("data-state", "open")
    assert events_of(dashboard, user, execution_id, "signal_received") == []

    box.fill('{"amount": 50}')
    form.get_by_test_id("signal-send").click()
    expect(page.locator("[data-type=signal_received]")).to_contain_text('{"amount":50}')
    expect(form).to_have_count(0)
    expect(page.get_by_test_id("timeline-status")).to_have_text("completed")
    assert len(posts) == 2
    assert dashboard.errors == []
