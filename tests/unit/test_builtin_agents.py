"""The sample agents and tools over the bundled spend data."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

import agent_ledger.application.builtin_agents
from agent_ledger.application.agents import JSON, AgentError, AgentRegistry, ToolError
from agent_ledger.application.builtin_agents import register_builtin_agents, spend
from agent_ledger.application.sample_processes import COST_OPTIMIZATION, ECHO
from tests.support.agent_doubles import InMemoryAgentContext

SAMPLE_QUESTION = "Where can we cut our LLM spend?"
CSV_PATH = Path(agent_ledger.application.builtin_agents.__file__).with_name("spend.csv")
HAIKU_PER_MILLION = (0.80, 4.00)


@pytest.fixture(scope="module")
def registry() -> AgentRegistry:
    registry = AgentRegistry()
    register_builtin_agents(registry)
    return registry


def run_agent(
    registry: AgentRegistry, name: str, step_input: JSON
) -> tuple[JSON, InMemoryAgentContext]:
    ctx = InMemoryAgentContext(registry, step_id=name)

    async def call() -> JSON:
        return await registry.agent(name)(ctx, step_input)

    return asyncio.run(call()), ctx


def run_chain(
    registry: AgentRegistry, question: str
) -> dict[str, tuple[JSON, InMemoryAgentContext]]:
    """Run the cost_optimization steps in order, wiring inputs as the process does."""
    steps: dict[str, tuple[JSON, InMemoryAgentContext]] = {}
    steps["triage"] = run_agent(registry, "triage", {"question": question})
    steps["data"] = run_agent(registry, "data", {"focus": steps["triage"][0]})
    steps["optimization"] = run_agent(registry, "optimization", {"findings": steps["data"][0]})
    summary_input = {"question": question, "recommendations": steps["optimization"][0]}
    steps["summary"] = run_agent(registry, "summary", summary_input)
    return steps


def csv_rows(days: int) -> list[dict[str, str]]:
    with CSV_PATH.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    last = max(dt.date.fromisoformat(r["date"]) for r in rows)
    first = last - dt.timedelta(days=days - 1)
    return [r for r in rows if dt.date.fromisoformat(r["date"]) >= first]


THINKING_AGENTS = [
    ("triage", {"question": SAMPLE_QUESTION}),
    ("data", {"focus": {"category": "cost", "focus": "all", "keywords": []}}),
    ("optimization", {"findings": {}}),
    ("summary", {"question": SAMPLE_QUESTION, "recommendations": []}),
]


@pytest.mark.parametrize(("agent", "step_input"), THINKING_AGENTS)
def test_each_sample_agent_thinks_before_its_first_tool_call(
    registry: AgentRegistry, agent: str, step_input: JSON
) -> None:
    _, ctx = run_agent(registry, agent, step_input)

    assert ctx.kinds[0] == "agent_thinking"
    assert "tool_executing" in ctx.kinds
    assert ctx.kinds.count("tool_executing") == ctx.kinds.count("tool_completed")


@pytest.mark.parametrize(
    ("question", "category", "focus"),
    [
        (SAMPLE_QUESTION, "cost", "llm"),
        ("How do we reduce our GPU bill?", "cost", "cloud"),
        ("Why is search so slow?", "performance", "all"),
        ("Hello there", "general", "all"),
    ],
)
def test_triage_classifies_a_question_by_category_and_focus(
    registry: AgentRegistry, question: str, category: str, focus: str
) -> None:
    output, _ = run_agent(registry, "triage", {"question": question})

    assert (output["category"], output["focus"]) == (category, focus)


def test_triage_keeps_the_meaningful_words_of_the_question_as_keywords(
    registry: AgentRegistry,
) -> None:
    output, _ = run_agent(registry, "triage", {"question": SAMPLE_QUESTION})

    assert output["keywords"] == ["cut", "llm", "spend"]


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("spend_overview", {"days": 0}),
        ("spend_overview", {"days": 91}),
        ("spend_overview", {"days": "30"}),
        ("spend_overview", {"days": True}),
        ("spend_overview", {"weeks": 4}),
        ("spend_by", {}),
        ("spend_by", {"dimension": "colour"}),
        ("spend_by", {"dimension": "team", "top": 0}),
        ("model_usage", {"model": "gpt-5"}),
        ("estimate_model_switch", {"from_model": "gpt-4o", "to_model": "gpt-4o", "share": 0.5}),
        (
            "estimate_model_switch",
            {"from_model": "gpt-4o", "to_model": "gpt-4o-mini", "share": 1.5},
        ),
        ("estimate_model_switch", {"from_model": "gpt-4o", "to_model": "gpt-4o-mini", "share": 0}),
        (
            "estimate_model_switch",
            {"from_model": "gpt-4o", "to_model": "gpt-4o-mini", "share": 0.5, "team": "finance"},
        ),
        ("estimate_prompt_caching", {"model": "llama-70b"}),
        ("idle_capacity", {"days": -1}),
    ],
)
def test_a_tool_rejects_bad_arguments_with_a_non_retryable_tool_error(
    registry: AgentRegistry, tool: str, args: dict[str, Any]
) -> None:
    with pytest.raises(ToolError) as raised:
        registry.tool(tool)(**args)

    assert raised.value.retryable is False
    assert str(raised.value)


def test_a_failed_tool_call_is_recorded_and_raised_to_the_agent(registry: AgentRegistry) -> None:
    ctx = InMemoryAgentContext(registry)

    with pytest.raises(ToolError, match="model must be one of"):
        asyncio.run(ctx.call_tool("model_usage", model="gpt-5"))

    assert ctx.kinds == ["tool_executing", "tool_failed"]


def test_the_sample_question_yields_a_positive_saving_equal_to_its_recommendations(
    registry: AgentRegistry,
) -> None:
    steps = run_chain(registry, SAMPLE_QUESTION)
    optimization, summary = steps["optimization"][0], steps["summary"][0]
    savings = [r["projected_monthly_savings_usd"] for r in summary["recommendations"]]

    assert summary["projected_monthly_savings_usd"] > 0
    assert summary["projected_monthly_savings_usd"] == round(sum(savings), 2)
    assert (
        optimization["total_projected_monthly_savings_usd"]
        == summary["projected_monthly_savings_usd"]
    )
    assert f"${summary['projected_monthly_savings_usd']:,.2f}" in summary["answer"]


def test_the_model_switch_saving_matches_an_independent_computation_from_the_csv(
    registry: AgentRegistry,
) -> None:
    summary = run_chain(registry, SAMPLE_QUESTION)["summary"][0]
    switch = next(r for r in summary["recommendations"] if r["kind"] == "model_switch")
    evidence = switch["evidence"]
    rows = [
        r
        for r in csv_rows(30)
        if r["team"] == evidence["team"] and r["model"] == evidence["from_model"]
    ]
    cost = sum(float(r["cost_usd"]) for r in rows)
    input_tokens = sum(int(r["input_tokens"]) for r in rows)
    output_tokens = sum(int(r["output_tokens"]) for r in rows)
    on_haiku = (input_tokens * HAIKU_PER_MILLION[0] + output_tokens * HAIKU_PER_MILLION[1]) / 1e6

    assert (evidence["team"], evidence["from_model"], evidence["to_model"]) == (
        "support",
        "claude-sonnet",
        "claude-haiku",
    )
    assert switch["projected_monthly_savings_usd"] == pytest.approx(
        evidence["share"] * (cost - on_haiku), abs=0.01
    )


def test_idle_capacity_savings_match_the_idle_days_billed_in_the_csv(
    registry: AgentRegistry,
) -> None:
    summary = run_chain(registry, "How do we reduce our cloud bill?")["summary"][0]
    idle = [r for r in summary["recommendations"] if r["kind"] == "idle_capacity"]
    billed_while_idle = sum(
        float(r["cost_usd"])
        for r in csv_rows(30)
        if r["service"] in {"compute", "gpu"} and r["requests"] == "0"
    )

    assert idle
    assert sum(r["projected_monthly_savings_usd"] for r in idle) == pytest.approx(
        billed_while_idle, abs=0.01 * len(idle)
    )


def test_the_chain_is_deterministic_and_returns_plain_json(registry: AgentRegistry) -> None:
    first, second = run_chain(registry, SAMPLE_QUESTION), run_chain(registry, SAMPLE_QUESTION)

    for step, (output, ctx) in first.items():
        assert output == second[step][0]
        assert ctx.recorded == second[step][1].recorded
        assert json.loads(json.dumps(output, allow_nan=False)) == output


@pytest.mark.parametrize("step_input", [None, {}, {"question": 42}, {"findings": "odd"}])
@pytest.mark.parametrize("agent", ["triage", "data", "optimization", "summary"])
def test_an_agent_given_missing_or_odd_fields_falls_back_to_defaults(
    registry: AgentRegistry, agent: str, step_input: JSON
) -> None:
    output, _ = run_agent(registry, agent, step_input)

    assert isinstance(output, dict)


@pytest.mark.parametrize("agent", ["triage", "data", "optimization", "summary"])
def test_an_agent_given_a_non_object_input_fails_without_retrying(
    registry: AgentRegistry, agent: str
) -> None:
    with pytest.raises(AgentError) as raised:
        run_agent(registry, agent, ["not", "an", "object"])

    assert raised.value.retryable is False


@pytest.mark.parametrize(
    "step_input", [None, "text", 3.5, [1, {"a": None}], {"nested": {"x": [True]}}]
)
def test_echo_returns_its_input_unchanged_without_thinking_or_tools(
    registry: AgentRegistry, step_input: JSON
) -> None:
    output, ctx = run_agent(registry, "echo", step_input)

    assert output == step_input
    assert ctx.recorded == []


def test_every_llm_row_of_the_data_set_is_priced_at_the_list_price() -> None:
    for row in csv_rows(spend.covered_days()):
        if row["model"]:
            price = spend.PRICES[row["model"]]
            expected = price.cost(int(row["input_tokens"]), int(row["output_tokens"]))
            assert float(row["cost_usd"]) == pytest.approx(expected, abs=0.0051)


def test_the_sample_processes_name_only_registered_agents(registry: AgentRegistry) -> None:
    steps = COST_OPTIMIZATION["steps"] + ECHO["steps"]

    assert [s["id"] for s in COST_OPTIMIZATION["steps"]] == [
        "triage",
        "data",
        "optimization",
        "summary",
    ]
    assert all(registry.has_agent(s["agent"]) for s in steps)
