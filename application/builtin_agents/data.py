"""The data agent: gather the spend figures that matter for the triaged question."""

from __future__ import annotations

from agent_ledger.application.agents import JSON, AgentContext
from agent_ledger.application.builtin_agents.inputs import (
    DEFAULT_DAYS,
    days_field,
    focus_field,
    object_field,
    object_input,
)

TOP = 10


async def data_agent(ctx: AgentContext, step_input: JSON) -> JSON:
    """Gather spend figures for `{"focus": <triage output>}` over the last 30 days."""
    request = object_input(step_input, "data")
    triaged = object_field(request, "focus")
    focus = focus_field(request.get("focus"))
    category = triaged.get("category", "general")
    days = days_field(triaged, DEFAULT_DAYS)
    await ctx.think(f"Gathering the last {days} days of spend, focused on {focus}.")
    findings: dict[str, JSON] = {
        "category": category if isinstance(category, str) else "general",
        "focus": focus,
        "days": days,
        "overview": await ctx.call_tool("spend_overview", days=days),
        "by_team": await ctx.call_tool("spend_by", dimension="team", days=days, top=TOP),
    }
    if focus in ("llm", "all"):
        by_model = await ctx.call_tool("spend_by", dimension="model", days=days, top=TOP)
        findings["by_model"] = by_model
        findings["model_usage"] = [
            await ctx.call_tool("model_usage", model=row["key"], days=days)
            for row in by_model["rows"]
        ]
    if focus in ("cloud", "all"):
        findings["by_service"] = await ctx.call_tool(
            "spend_by", dimension="service", days=days, top=TOP
        )
        findings["idle_capacity"] = await ctx.call_tool("idle_capacity", days=days)
    return findings
