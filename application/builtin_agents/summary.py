"""The summary agent: answer the question in prose from the priced recommendations."""

from __future__ import annotations

from agent_ledger.application.agents import JSON, AgentContext
from agent_ledger.application.builtin_agents.inputs import (
    days_field,
    focus_field,
    number,
    object_input,
)

# The run-rate of `spend_overview` that a saving is measured against, by focus.
RUN_RATES = {
    "llm": ("llm_monthly_run_rate_usd", "LLM spend"),
    "cloud": ("cloud_monthly_run_rate_usd", "cloud spend"),
    "all": ("monthly_run_rate_usd", "total spend"),
}


async def summary_agent(ctx: AgentContext, step_input: JSON) -> JSON:
    """Answer `{"question", "recommendations": <optimization output>}` with the total saving."""
    request = object_input(step_input, "summary")
    question = request.get("question")
    question = question.strip() if isinstance(question, str) else ""
    optimized = request.get("recommendations")
    recommendations = _recommendations(optimized)
    await ctx.think(f"Summarising {len(recommendations)} recommendations for the question.")
    overview = await ctx.call_tool("spend_overview", days=days_field(optimized))
    total = round(sum(number(r["projected_monthly_savings_usd"]) for r in recommendations), 2)
    lines = [question] if question else []
    lines += _answer(recommendations, total, overview, focus_field(optimized))
    return {
        "answer": "\n".join(lines),
        "projected_monthly_savings_usd": total,
        "recommendations": recommendations,
    }


def _recommendations(optimized: JSON) -> list[dict[str, JSON]]:
    """Return the recommendations in an optimization output (or a bare list of them)."""
    items = optimized.get("recommendations") if isinstance(optimized, dict) else optimized
    return [
        item
        for item in (items if isinstance(items, list) else [])
        if isinstance(item, dict) and "projected_monthly_savings_usd" in item
    ]


def _answer(
    recommendations: list[dict[str, JSON]], total: float, overview: JSON, focus: str
) -> list[str]:
    """Return the lines of the answer: the headline saving, then each recommendation."""
    key, spend = RUN_RATES[focus]
    run_rate = number(overview.get(key))
    period = f"the last {overview['days']} days ({overview['start']} to {overview['end']})"
    if not recommendations:
        return [
            f"No change worth making was found in {period}; "
            f"{spend} runs at ${run_rate:,.2f} a month."
        ]
    share = f" ({total / run_rate:.1%} of {spend}, ${run_rate:,.2f} a month)" if run_rate else ""
    lines = [
        f"Projected savings: ${total:,.2f} a month{share}, "
        f"from {len(recommendations)} changes based on {period}:"
    ]
    for rank, r in enumerate(recommendations, start=1):
        saving = number(r["projected_monthly_savings_usd"])
        lines.append(f"{rank}. {r.get('title')}: ${saving:,.2f} a month. {r.get('detail')}")
    return lines
