"""The dashboard's timeline of a model step (issue 15): the answer grows on screen while the
model is still streaming (the OpenAI stub holds its stream mid-way), then the whole answer,
its tool call and each model call's tokens and cost; a retried attempt streams anew."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from tests.e2e.test_dashboard import SECRET, Dashboard, browser, dashboard, token
from tests.support.openai_stub import OpenAiStub, Reply
from tests.support.server import Server, running_server, start

__all__ = ["browser", "dashboard"]  # the fixtures, shared with test_dashboard.py

MODEL = "dashboard-model"
PRICES = {MODEL: {"input_per_million": 1.0, "output_per_million": 2.0}}
# markup in the answer must be shown as text, never parsed
ANSWER = "Idle GPUs cost most: release them to save <b>$2,100</b> a month, then cache prompts."
PIECE = 4
HELD_AFTER = 6  # chunks: the role, then five pieces of the answer
SHOWN_WHILE_HELD = ANSWER[: (HELD_AFTER - 1) * PIECE]

# one model step that retries at once after a broken stream
RETRIED = {
    "name": "dashboard_model_retry",
    "config": {"parallel_execution": False, "stop_on_failure": True, "timeout_seconds": 60},
    "steps": [
        {
            "id": "ask",
            "type": "agent_task",
            "agent": {"llm": {"model": MODEL, "prompt": "{{ input.question }}"}},
            "retry": {"max_attempts": 2, "initial_interval": 0.05, "max_interval": 0.05},
        }
    ],
    "output": "{{ steps.ask.output }}",
}


@pytest.fixture(scope="module")
def stub() -> Iterator[OpenAiStub]:
    with OpenAiStub.running() as stub:
        yield stub


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, stub: OpenAiStub) -> Iterator[Server]:
    """A server on the embedded store whose model provider is the stub."""
    with running_server(
        tmp_path_factory.mktemp("dashboard-model"),
        AGENT_LEDGER_JWT_SECRET=SECRET,
        AGENT_LEDGER_LLM_BASE_URL=stub.base_url,
        AGENT_LEDGER_LLM_MODEL=MODEL,
        AGENT_LEDGER_LLM_PRICES=json.dumps(PRICES),
    ) as running:
        yield running


def open_timeline(dashboard: Dashboard, user: str, body: dict[str, object]) -> str:
    dashboard.sign_in(user)
    dashboard.expect_live()
    execution_id = start(dashboard.server, user, body)
    dashboard.row(execution_id).get_by_role("button").click()
    expect(dashboard.page.get_by_test_id("timeline-id")).to_have_text(execution_id)
    return execution_id


def test_the_answer_grows_while_the_model_streams_then_shows_its_tool_call_and_cost(
    dashboard: Dashboard, server: Server, stub: OpenAiStub
) -> None:
    user = token("model-viewer")
    stub.queue(
        MODEL,
        Reply(
            reasoning="Start from the overview.",
            tool_calls=[("spend_overview", {"days": 30})],
            prompt_tokens=200,
            completion_tokens=20,
        ),
        Reply(
            text=ANSWER,
            piece=PIECE,
            pause_after=HELD_AFTER,
            prompt_tokens=400,
            completion_tokens=100,
        ),
    )
    page = dashboard.page
    execution_id = open_timeline(
        dashboard, user, {"process": "cost_optimization_llm", "input": {"question": "Cut?"}}
    )
    answer = page.get_by_test_id("agent-output")
    text = answer.get_by_test_id("agent-output-text")

    # the stream is held mid-way: what the model said so far is on screen, the rest is not
    assert stub.paused.wait(10), "the model's stream was never held"
    expect(text).to_have_text(SHOWN_WHILE_HELD)
    expect(text).not_to_contain_text("a month")
    expect(answer).to_have_attribute("data-state", "streaming")
    tool = page.get_by_test_id("tool-call")
    expect(tool).to_have_attribute("data-state", "completed")
    stub.release()

    expect(text).to_have_text(ANSWER)
    expect(answer).to_have_attribute("data-state", "done")
    expect(page.get_by_test_id("timeline-status")).to_have_text("completed")
    expect(answer).to_have_count(1)  # one block for the answer, not one row per delta
    expect(text.locator("b")).to_have_count(0)
    expect(page.get_by_test_id("agent-thinking")).to_contain_text("Start from the overview.")
    expect(tool).to_have_count(1)
    expect(tool).to_have_attribute("data-tool", "spend_overview")
    expect(tool).to_contain_text('{"days":30}')
    expect(tool).to_contain_text("→ {")
    expect(tool).to_contain_text(" ms")
    calls = page.locator("[data-testid=timeline-event][data-type=llm_call_completed]")
    expect(calls).to_have_count(2)
    expect(calls.first).to_contain_text(f"{MODEL} · 200 in / 20 out tokens")
    expect(calls.first).to_contain_text("$0.00024")  # (200 * 1 + 20 * 2) per million
    expect(calls.last).to_contain_text("400 in / 100 out tokens")
    expect(calls.last).to_contain_text("$0.00060")
    totals = "2 model calls · 600 in / 120 out tokens · $0.00084"
    agent_completed = page.locator("[data-testid=timeline-event][data-type=agent_completed]")
    expect(agent_completed).to_contain_text(totals)
    expect(page.get_by_test_id("timeline-cost")).to_have_text(totals)
    with dashboard.server.client(user) as client:
        view = client.get(f"/v1/executions/{execution_id}").json()
    listed = "$0.00084" if "cost_usd" in view else "\N{EN DASH}"  # views may not carry costs yet
    expect(dashboard.row(execution_id).get_by_test_id("execution-cost")).to_have_text(listed)
    assert dashboard.errors == []


def test_a_retried_attempt_streams_its_answer_in_a_block_of_its_own(
    dashboard: Dashboard, server: Server, stub: OpenAiStub
) -> None:
    admin = token("admin", "user", "admin")
    with server.client(admin) as client:
        registered = client.put(f"/v1/processes/{RETRIED['name']}", json=RETRIED)
    assert registered.status_code in (200, 201), registered.text
    stub.queue(
        MODEL,
        Reply(text="A first try that breaks", piece=PIECE, cut_after=4),
        Reply(text="The second answer.", piece=PIECE),
    )
    page = dashboard.page
    open_timeline(
        dashboard, token("retry-viewer"), {"process": RETRIED["name"], "input": {"question": "?"}}
    )

    expect(page.get_by_test_id("timeline-status")).to_have_text("completed")
    answers = page.get_by_test_id("agent-output")
    expect(answers).to_have_count(2)
    expect(answers.nth(0)).to_have_attribute("data-attempt", "1")
    expect(answers.nth(0)).to_have_attribute("data-state", "failed")
    expect(answers.nth(0)).to_contain_text("A first try")
    expect(answers.nth(1)).to_have_attribute("data-attempt", "2")
    expect(answers.nth(1)).to_have_attribute("data-state", "done")
    expect(answers.nth(1).get_by_test_id("agent-output-text")).to_have_text("The second answer.")
    assert dashboard.errors == []
