"""The triage agent: classify a question about spend before anyone digs into data."""

from __future__ import annotations

import re

from agent_ledger.application.agents import JSON, AgentContext
from agent_ledger.application.builtin_agents.inputs import object_input


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


COST_WORDS = _words(
    "cost costs spend spending spent save saving savings cut cuts cheaper cheap budget bill "
    "billing expensive reduce lower optimise optimize money"
)
PERFORMANCE_WORDS = _words(
    "latency slow slower fast faster performance throughput speed timeout timeouts"
)
LLM_WORDS = _words(
    "llm llms model models token tokens gpt claude llama prompt prompts ai inference"
)
CLOUD_WORDS = _words(
    "cloud compute gpu gpus storage vector infrastructure infra server servers instance "
    "instances capacity idle"
)
STOP_WORDS = _words(
    "a an and are can could do does for from how i in is it of on or our should the to we "
    "what where which who why will with you your"
)


def classify(question: str) -> dict[str, JSON]:
    """Return the category, focus and keywords of a question."""
    words = re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", question.lower())
    found = set(words)
    if found & COST_WORDS:
        category = "cost"
    elif found & PERFORMANCE_WORDS:
        category = "performance"
    else:
        category = "general"
    llm, cloud = bool(found & LLM_WORDS), bool(found & CLOUD_WORDS)
    focus = "llm" if llm and not cloud else "cloud" if cloud and not llm else "all"
    keywords = list(dict.fromkeys(w for w in words if w not in STOP_WORDS))
    return {"category": category, "focus": focus, "keywords": keywords}


async def triage_agent(ctx: AgentContext, step_input: JSON) -> JSON:
    """Classify `{"question": ...}` as cost, performance or general, about LLMs, cloud or all."""
    request = object_input(step_input, "triage")
    question = request.get("question")
    question = question.strip() if isinstance(question, str) else ""
    await ctx.think(f"Classifying the question {question!r} by what it asks about.")
    classification = classify(question)
    overview = await ctx.call_tool("spend_overview", days=30)
    await ctx.think(
        f"It is a {classification['category']} question about {classification['focus']} spend; "
        f"current monthly run-rate is ${overview['monthly_run_rate_usd']:,.2f}."
    )
    return {
        **classification,
        "question": question,
        "monthly_run_rate_usd": overview["monthly_run_rate_usd"],
    }
