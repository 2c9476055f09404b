"""The dashboard and lineage (issue 17): a failed execution's timeline has a Resume button
that runs it again and follows it live to its completion; the Fork form starts a new
execution from a step with edited input and opens its timeline, which shows its parent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Locator, Request, expect

from tests.e2e.test_dashboard import SECRET, Dashboard, browser, dashboard, history, token
from tests.support.server import Server, running_server, start
from tests.support.switchable_agent import SwitchableAgent as Agent
from tests.support.switchable_agent import switchable_agent
from tests.support.waiting import wait_until

__all__ = ["browser", "dashboard"]  # the fixtures of test_dashboard.py


@pytest.fixture(scope="module")
def agent() -> Iterator[Agent]:
    with switchable_agent() as running:
        yield running


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, agent: Agent) -> Iterator[Server]:
    """A running server on the embedded store that may call the local agent; the process
    `dashboard_lineage` registered: first (echo) → middle (the agent) → last (echo)."""
    with running_server(
        tmp_path_factory.mktemp("dashboard-lineage"),
        AGENT_LEDGER_JWT_SECRET=SECRET,
        AGENT_LEDGER_AGENT_URL_ALLOW="127.0.0.0/8",
    ) as running:
        document = {
            "name": "dashboard_lineage",
            "config": {"parallel_execution": False, "stop_on_failure": True},
            "steps": [
                {"id": "first", "type": "agent_task", "agent": "echo", "input": "{{ input }}"},
                {
                    "id": "middle",
                    "type": "agent_task",
                    "agent": {"url": agent.url},
                    "depends_on": ["first"],
                    "input": {"q": "{{ input.q }}", "first": "{{ steps.first.output.q }}"},
                    "retry": {"max_attempts": 1},
                },
                {
                    "id": "last",
                    "type": "agent_task",
                    "agent": "echo",
                    "depends_on": ["middle"],
                    "input": "{{ steps.middle.output }}",
                },
            ],
            "output": "{{ steps.last.output }}",
        }
        with running.client(token("admin", "user", "admin")) as client:
            response = client.put("/v1/processes/dashboard_lineage", json=document)
            assert response.status_code == 201, response.text
        yield running


def finished(server: Server, owner: str, execution_id: str) -> dict[str, Any]:
    """The execution's status view once it has finished."""
    with server.client(owner) as client:
        view: dict[str, Any] = wait_until(
            lambda: (
                (found := client.get(f"/v1/executions/{execution_id}").json())["finished_at"]
                and found
            ),
            what=f"execution {execution_id} to finish",
        )
    return view


def switch_to(dashboard: Dashboard, token: str) -> None:
    """Sign out of the open session and in with `token`."""
    page = dashboard.page
    page.get_by_test_id("sign-out").click()
    page.get_by_test_id("token-input").fill(token)
    page.get_by_test_id("sign-in-button").click()
    dashboard.expect_live()


def open_timeline(dashboard: Dashboard, execution_id: str) -> None:
    dashboard.row(execution_id).get_by_role("button").click()
    expect(dashboard.page.get_by_test_id("timeline-id")).to_have_text(execution_id)


def step_status(dashboard: Dashboard, step: str) -> Locator:
    return dashboard.page.locator(f"[data-testid=step-row][data-step={step}] .status")


def test_a_failed_execution_resumes_from_its_timeline_and_is_followed_to_its_end(
    dashboard: Dashboard, server: Server, agent: Agent
) -> None:
    page = dashboard.page
    owner = token("resumer")
    agent.down.set()
    execution_id = start(server, owner, {"process": "dashboard_lineage", "input": {"q": "one"}})
    assert finished(server, owner, execution_id)["status"] == "failed"

    # the same person with a read-only token: the server refuses, and says why
    dashboard.sign_in(token("resumer", "auditor"))
    dashboard.expect_live()
    page.evaluate("window.sameDocument = true")  # gone if the page reloads
    open_timeline(dashboard, execution_id)
    expect(page.get_by_test_id("timeline-status")).to_have_text("failed")
    resume = page.get_by_test_id("resume-form")
    resume.get_by_test_id("resume").click()
    expect(resume.get_by_test_id("resume-problem")).to_contain_text("(403)")
    expect(resume.get_by_test_id("resume-problem")).to_contain_text("do not resume or fork")
    expect(resume.get_by_test_id("resume")).to_be_enabled()

    switch_to(dashboard, owner)
    open_timeline(dashboard, execution_id)
    expect(page.get_by_test_id("timeline-status")).to_have_text("failed")
    expect(resume.get_by_test_id("resume-problem")).to_be_hidden()
    agent.down.clear()
    agent.gate.clear()  # the agent holds its answer: the resumed run is seen under way
    resume.get_by_test_id("resume-reason").fill("agent is <b>back</b>")
    resume.get_by_test_id("resume").click()

    resumed = page.locator("[data-testid=timeline-event][data-type=execution_resumed]")
    expect(resumed).to_contain_text("resumed by resumer: “agent is <b>back</b>”")  # as text
    expect(resumed).to_contain_text("runs again: middle")
    expect(resume).to_be_hidden()
    expect(page.get_by_test_id("timeline-status")).to_have_text("running")
    expect(step_status(dashboard, "middle")).to_have_text("running")
    agent.gate.set()
    expect(page.get_by_test_id("timeline-status")).to_have_text("completed")
    expect(step_status(dashboard, "last")).to_have_text("completed")
    expect(page.get_by_test_id("lineage-resumes")).to_have_text("Resumed once")
    expect(dashboard.row(execution_id).get_by_test_id("execution-status")).to_have_text("completed")
    last_row = page.get_by_test_id("timeline-event").last
    expect(last_row).to_have_attribute("data-type", "execution_completed")
    shown = page.get_by_test_id("timeline-event").evaluate_all(
        "rows => rows.map((row) => row.dataset.type)"
    )
    stored = [m["type"] for m in history(server, owner, execution_id)]
    assert shown == stored
    assert stored.index("execution_failed") < stored.index("execution_resumed")
    [event] = [m for m in history(server, owner, execution_id) if m["type"] == "execution_resumed"]
    assert (event["data"]["actor"], event["data"]["reason"]) == ("resumer", "agent is <b>back</b>")

    open_timeline(dashboard, execution_id)  # afresh: its history replayed, its view read again
    expect(last_row).to_have_attribute("data-type", "execution_completed")
    expect(step_status(dashboard, "middle")).to_have_text("completed")
    assert page.get_by_test_id("lineage-resumes").inner_text() == "Resumed once"
    assert page.evaluate("window.sameDocument") is True
    assert dashboard.errors == []


def test_forking_with_edited_input_opens_the_new_execution_which_shows_its_parent(
    dashboard: Dashboard, server: Server, agent: Agent
) -> None:
    page = dashboard.page
    owner = token("forker")
    agent.down.clear()
    parent = start(server, owner, {"process": "dashboard_lineage", "input": {"q": "one"}})
    assert finished(server, owner, parent)["status"] == "completed"
    dashboard.sign_in(owner)
    dashboard.expect_live()
    open_timeline(dashboard, parent)
    expect(page.get_by_test_id("timeline-status")).to_have_text("completed")
    expect(page.get_by_test_id("resume-form")).to_be_hidden()  # nothing to resume
    posts: list[str] = []

    def count_posts(request: Request) -> None:
        if request.method == "POST":
            posts.append(request.url)

    page.on("request", count_posts)
    page.get_by_test_id("fork-open").click()
    form = page.get_by_test_id("fork-form")
    box = form.get_by_test_id("fork-input")
    expect(box).not_to_have_value("")
    assert json.loads(box.input_value()) == {"q": "one"}  # the parent's input
    form.get_by_test_id("fork-step").select_option("middle")
    box.fill('{"q": two}')
    form.get_by_test_id("fork-submit").click()
    expect(form.get_by_test_id("fork-problem")).to_contain_text("Not JSON")
    assert posts == []  # checked in the page, never sent

    box.fill('{"q": "two"}')
    form.get_by_test_id("fork-submit").click()

    expect(page.get_by_test_id("timeline-id")).not_to_have_text(parent)
    child = page.get_by_test_id("timeline-id").inner_text()
    origin = page.get_by_test_id("lineage-parent")
    expect(origin).to_contain_text(f"Forked from {parent[:8]} at step middle")
    forked = page.locator("[data-testid=timeline-event][data-type=execution_forked]")
    expect(forked).to_contain_text(f"fork of {parent} (v")
    expect(forked).to_contain_text("from step middle · copied: first")
    expect(page.get_by_test_id("timeline-status")).to_have_text("completed")
    copied = page.locator("[data-testid=step-row][data-step=first] [data-testid=step-copied]")
    expect(copied).to_have_text("copied")  # first did not run again: its output came along
    expect(step_status(dashboard, "middle")).to_have_text("completed")
    assert json.loads(page.get_by_test_id("fork-input").input_value()) == {"q": "two"}
    # the new input, and first's output copied from the parent
    assert finished(server, owner, child)["output"] == {"got": {"q": "two", "first": "one"}}
    assert agent.inputs[-1] == {"q": "two", "first": "one"}
    assert [m["type"] for m in history(server, owner, child)][:2] == [
        "execution_started",
        "execution_forked",
    ]
    assert posts == [f"{server.url}/v1/executions/{parent}/fork"]

    origin.get_by_test_id("lineage-parent-link").click()
    expect(page.get_by_test_id("timeline-id")).to_have_text(parent)
    children = page.get_by_test_id("lineage-children")
    expect(children.get_by_test_id("lineage-child-link")).to_have_attribute(
        "data-execution-id", child
    )
    expect(page.get_by_test_id("lineage-parent")).to_be_hidden()
    assert dashboard.errors == []
