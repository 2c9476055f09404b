"""The dashboard's metrics of model calls (issue 15): after a model step ran on a real server
(the OpenAI stub answering), its agent's tokens and cost are charted in totals and per minute
and listed in the table, per agent and per user; a model without a price shows an unknown
cost, never $0."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from tests.e2e.test_dashboard import SECRET, Dashboard, browser, dashboard, token
from tests.support.openai_stub import OpenAiStub, Reply
from tests.support.server import Server, running_server, start

__all__ = ["browser", "dashboard"]  # the fixtures, shared with test_dashboard.py

MODEL = "usage-model"
PRICES = {MODEL: {"input_per_million": 0.15, "output_per_million": 0.6}}
UNPRICED = {
    "name": "dashboard_unpriced",
    "steps": [
        {
            "id": "ask",
            "type": "agent_task",
            "agent": {"llm": {"model": "unpriced-model", "prompt": "{{ input.question }}"}},
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
        tmp_path_factory.mktemp("dashboard-usage"),
        AGENT_LEDGER_JWT_SECRET=SECRET,
        AGENT_LEDGER_LLM_BASE_URL=stub.base_url,
        AGENT_LEDGER_LLM_MODEL=MODEL,
        AGENT_LEDGER_LLM_PRICES=json.dumps(PRICES),
    ) as running:
        with running.client(token("usage-admin", "admin")) as client:
            response = client.put(f"/v1/processes/{UNPRICED['name']}", json=UNPRICED)
        assert response.status_code == 201, response.text
        yield running


def test_tokens_and_cost_are_charted_per_agent_and_user_and_an_unknown_cost_is_not_zero(
    dashboard: Dashboard, server: Server, stub: OpenAiStub
) -> None:
    user = token("usage-user")
    page = dashboard.page
    dashboard.sign_in(user)
    dashboard.expect_live()
    stub.queue(
        MODEL,
        Reply(
            tool_calls=[("spend_overview", {"days": 30})], prompt_tokens=1000, completion_tokens=50
        ),
        Reply(text="Release the idle GPUs first.", prompt_tokens=1200, completion_tokens=300),
    )
    stub.queue("unpriced-model", Reply(text="No idea.", prompt_tokens=70, completion_tokens=7))
    priced = start(server, user, {"process": "cost_optimization_llm", "input": {"question": "?"}})
    unpriced = start(server, user, {"process": UNPRICED["name"], "input": {"question": "?"}})
    for execution_id in (priced, unpriced):
        status = dashboard.row(execution_id).get_by_test_id("execution-status")
        expect(status).to_have_text("completed")

    agent = f"llm:{MODEL}"
    tokens = page.get_by_test_id("metrics-tokens").get_by_test_id("chart-group")
    expect(tokens.filter(has_text=agent)).to_have_count(1)
    row = page.locator(f"[data-testid=metrics-row][data-name='{agent}']")
    # 2,200 prompt and 350 completion tokens at $0.15 and $0.60 a million: $0.00054
    expect(row.get_by_test_id("metrics-cost")).to_have_text("$0.00054")
    expect(row.locator("td").nth(-4)).to_have_text("2")
    expect(row.locator("td").nth(-3)).to_have_text("2200")
    unknown = page.locator("[data-testid=metrics-row][data-name='llm:unpriced-model']")
    expect(unknown.get_by_test_id("metrics-cost")).to_have_text("cost unknown (+1 unpriced)")
    expect(page.get_by_test_id("metrics-unpriced")).to_contain_text("1 model call had no price")
    expect(page.get_by_test_id("metrics-cost-minutes")).to_be_visible()
    minutes = page.get_by_test_id("metrics-tokens-minutes").locator("title")
    shown = minutes.evaluate_all("titles => titles.map((t) => t.textContent)")
    prompt = [int(title.rsplit(": ", 1)[1]) for title in shown if " prompt: " in title]
    assert (len(prompt), sum(prompt)) == (30, 2270)  # half an hour, and both runs within it

    page.get_by_test_id("metrics-kind").select_option("users")
    mine = page.locator("[data-testid=metrics-row][data-name='usage-user']")
    expect(mine.get_by_test_id("metrics-cost")).to_have_text("$0.00054 (+1 unpriced)")
    assert dashboard.errors == []
    assert dashboard.foreign_requests() == []
