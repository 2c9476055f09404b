"""The optimization agent: turn spend findings into priced recommendations."""

from __future__ import annotations

from agent_ledger.application.agents import JSON, AgentContext
from agent_ledger.application.builtin_agents.inputs import (
    days_field,
    focus_field,
    number,
    object_field,
    object_input,
)

# Short, simple requests rarely need a frontier model; keep a fifth of the traffic
# on it for the hard cases a cheaper model would get wrong.
SHORT_INPUT_TOKENS = 1_000
SHORT_OUTPUT_TOKENS = 300
SWITCH_SHARE = 0.8
# Prompts this long are mostly retrieved context and shared instructions, so about
# half of their input tokens repeat a prefix that a prompt cache can serve.
LONG_INPUT_TOKENS = 4_000
CACHEABLE_SHARE = 0.5
# Below this a recommendation is not worth the change it asks for.
MIN_MONTHLY_SAVINGS_USD = 50.0


async def optimization_agent(ctx: AgentContext, step_input: JSON) -> JSON:
    """Recommend changes for `{"findings": <data output>}`, each with its monthly saving."""
    request = object_input(step_input, "optimization")
    findings = object_field(request, "findings")
    focus, days = focus_field(findings), days_field(findings)
    await ctx.think(
        f"Looking for savings in {focus} spend over the last {days} days: cheaper models "
        "for short requests, prompt caching for long prompts, idle reserved capacity."
    )
    prices = await ctx.call_tool("model_prices")
    recommendations: list[dict[str, JSON]] = []
    if focus in ("llm", "all"):
        usages = findings.get("model_usage")
        if not isinstance(usages, list):
            usages = [await ctx.call_tool("model_usage", model=m, days=days) for m in prices]
        for usage in usages:
            recommendations += await _llm_recommendations(ctx, usage, prices, days)
    if focus in ("cloud", "all"):
        idle = await ctx.call_tool("idle_capacity", days=days)
        recommendations += [_idle_recommendation(r, days) for r in idle["resources"]]
    worthwhile = [
        r
        for r in recommendations
        if number(r["projected_monthly_savings_usd"]) >= MIN_MONTHLY_SAVINGS_USD
    ]
    worthwhile.sort(key=lambda r: (-number(r["projected_monthly_savings_usd"]), str(r["title"])))
    total = round(sum(number(r["projected_monthly_savings_usd"]) for r in worthwhile), 2)
    await ctx.think(f"{len(worthwhile)} recommendations save ${total:,.2f} a month.")
    return {
        "focus": focus,
        "days": days,
        "recommendations": worthwhile,
        "total_projected_monthly_savings_usd": total,
    }


async def _llm_recommendations(
    ctx: AgentContext, usage: JSON, prices: dict[str, JSON], days: int
) -> list[dict[str, JSON]]:
    """Return the recommendations for each team's use of one model."""
    model = usage.get("model") if isinstance(usage, dict) else None
    if not isinstance(model, str) or not object_field(prices, model):
        return []
    price = object_field(prices, model)
    teams = usage.get("teams")
    recommendations = []
    for entry in teams if isinstance(teams, list) else []:
        team = entry.get("team") if isinstance(entry, dict) else None
        if not isinstance(team, str):
            continue
        avg_in, avg_out = (
            number(entry.get("avg_input_tokens")),
            number(entry.get("avg_output_tokens")),
        )
        cheaper = _cheaper_model(model, prices)
        if cheaper and 0 < avg_in <= SHORT_INPUT_TOKENS and avg_out <= SHORT_OUTPUT_TOKENS:
            estimate = await ctx.call_tool(
                "estimate_model_switch",
                from_model=model,
                to_model=cheaper,
                share=SWITCH_SHARE,
                team=team,
                days=days,
            )
            title = f"Move {team}'s short {model} requests to {cheaper}"
            detail = (
                f"{team}'s {model} requests are short (about {avg_in:,.0f} input and "
                f"{avg_out:,.0f} output tokens each): route {SWITCH_SHARE:.0%} of them to "
                f"{cheaper} and keep the rest for the hard cases."
            )
            recommendations.append(_recommendation("model_switch", title, detail, team, estimate))
        elif avg_in >= LONG_INPUT_TOKENS and price.get("cached_input_per_million") is not None:
            estimate = await ctx.call_tool(
                "estimate_prompt_caching",
                model=model,
                cacheable_share=CACHEABLE_SHARE,
                team=team,
                days=days,
            )
            title = f"Cache {team}'s long {model} prompt prefixes"
            detail = (
                f"{team}'s {model} prompts average {avg_in:,.0f} input tokens: serving an "
                f"estimated {CACHEABLE_SHARE:.0%} of them from the prompt cache bills them "
                "at the cached-input price."
            )
            recommendations.append(_recommendation("prompt_caching", title, detail, team, estimate))
    return recommendations


def _cheaper_model(model: str, prices: dict[str, JSON]) -> str | None:
    """Return the same vendor's cheapest model if it is cheaper than `model`, else None."""

    def blended(name: str) -> float:
        price = object_field(prices, name)
        return number(price.get("input_per_million")) + number(price.get("output_per_million"))

    vendor = object_field(prices, model).get("vendor")
    peers = sorted(
        (blended(name), name)
        for name in prices
        if object_field(prices, name).get("vendor") == vendor
    )
    cheapest = peers[0][1] if peers else None
    return cheapest if cheapest and blended(cheapest) < blended(model) else None


def _idle_recommendation(resource: JSON, days: int) -> dict[str, JSON]:
    """Return the recommendation for one idle reserved resource."""
    team = resource.get("team")
    name = f"{resource.get('provider')} {resource.get('service')}"
    if resource.get("idle_since"):
        title = f"Turn off {team}'s idle {name}"
        detail = f"It has served no requests since {resource['idle_since']} but is still billed."
    else:
        title = f"Schedule {team}'s {name} to stop when idle"
        detail = (
            f"It served no requests on {resource.get('idle_days')} of the last {days} days "
            "but was billed for every one of them."
        )
    return _recommendation("idle_capacity", title, detail, team, resource)


def _recommendation(
    kind: str, title: str, detail: str, team: JSON, evidence: JSON
) -> dict[str, JSON]:
    saving = number(evidence.get("projected_monthly_savings_usd"))
    return {
        "kind": kind,
        "title": title,
        "detail": detail,
        "team": team,
        "projected_monthly_savings_usd": round(saving, 2),
        "evidence": evidence,
    }
