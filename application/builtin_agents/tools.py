"""Deterministic tools over the sample spend data, callable by the built-in agents."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from typing import Any

from agent_ledger.application.agents import JSON, AgentRegistry, Tool, ToolError
from agent_ledger.application.builtin_agents import spend

MAX_TOP = 50


def spend_overview(days: int = 30) -> JSON:
    """Return total, LLM and cloud spend over the last `days` days, with monthly run-rates."""
    days = _days(days)
    selected = spend.window(days)
    total = spend.total(selected)
    llm = spend.total(r for r in selected if r.is_llm)
    return {
        "days": days,
        "start": spend.window_start(days).isoformat(),
        "end": spend.last_day().isoformat(),
        "total_usd": _usd(total),
        "llm_usd": _usd(llm),
        "cloud_usd": _usd(total - llm),
        "monthly_run_rate_usd": _usd(spend.monthly(total, days)),
        "llm_monthly_run_rate_usd": _usd(spend.monthly(llm, days)),
        "cloud_monthly_run_rate_usd": _usd(spend.monthly(total - llm, days)),
    }


def spend_by(dimension: str, days: int = 30, top: int = 5) -> JSON:
    """Return the `top` values of a dimension by spend over the last `days` days."""
    if dimension not in spend.DIMENSIONS:
        raise _invalid(f"dimension must be one of {', '.join(spend.DIMENSIONS)}, not {dimension!r}")
    days = _days(days)
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= MAX_TOP:
        raise _invalid(f"top must be a whole number from 1 to {MAX_TOP}, not {top!r}")
    totals = spend.totals_by(spend.window(days), dimension)
    grand_total = sum(cost for _, cost in totals)
    return {
        "dimension": dimension,
        "days": days,
        "total_usd": _usd(grand_total),
        "rows": [
            {
                "key": key,
                "cost_usd": _usd(cost),
                "share": round(cost / grand_total, 4) if grand_total else 0.0,
                "monthly_run_rate_usd": _usd(spend.monthly(cost, days)),
            }
            for key, cost in totals[:top]
        ],
        "other_usd": _usd(sum(cost for _, cost in totals[top:])),
    }


def model_usage(model: str, days: int = 30) -> JSON:
    """Return a model's requests, tokens and spend over the last `days` days, per team."""
    model, days = _model(model), _days(days)
    overall = spend.model_usage(model, days)
    return {
        "model": model,
        "days": days,
        "requests": overall.requests,
        "input_tokens": overall.input_tokens,
        "output_tokens": overall.output_tokens,
        "cost_usd": _usd(overall.cost_usd),
        "monthly_run_rate_usd": _usd(spend.monthly(overall.cost_usd, days)),
        "teams": [
            {
                "team": team,
                "requests": u.requests,
                "avg_input_tokens": round(u.avg_input_tokens),
                "avg_output_tokens": round(u.avg_output_tokens),
                "cost_usd": _usd(u.cost_usd),
                "monthly_run_rate_usd": _usd(spend.monthly(u.cost_usd, days)),
            }
            for team, u in spend.usage_by_team(model, days)
        ],
    }


def model_prices() -> JSON:
    """Return each model's vendor and list prices in USD per million tokens."""
    return {
        model: {
            "vendor": price.vendor,
            "input_per_million": price.input_per_million,
            "output_per_million": price.output_per_million,
            "cached_input_per_million": price.cached_input_per_million,
        }
        for model, price in spend.PRICES.items()
    }


def estimate_model_switch(
    from_model: str, to_model: str, share: float, team: str | None = None, days: int = 30
) -> JSON:
    """Estimate the monthly saving of moving `share` of a model's traffic to another model."""
    from_model, to_model = _model(from_model), _model(to_model)
    if from_model == to_model:
        raise _invalid("from_model and to_model must differ")
    share, team, days = _share(share, "share"), _team(team), _days(days)
    current = spend.model_usage(from_model, days, team)
    repriced = spend.PRICES[to_model].cost(current.input_tokens, current.output_tokens)
    saving = share * (current.cost_usd - repriced)
    return {
        "from_model": from_model,
        "to_model": to_model,
        "team": team,
        "share": share,
        "days": days,
        "requests": current.requests,
        "current_monthly_cost_usd": _usd(spend.monthly(current.cost_usd, days)),
        "projected_monthly_cost_usd": _usd(spend.monthly(current.cost_usd - saving, days)),
        "projected_monthly_savings_usd": _usd(spend.monthly(saving, days)),
    }


def estimate_prompt_caching(
    model: str, cacheable_share: float = 0.5, team: str | None = None, days: int = 30
) -> JSON:
    """Estimate the monthly saving of serving `cacheable_share` of input tokens from cache.

    Cache writes are not charged extra: at these volumes a prefix is read far more
    often than it is written.
    """
    model = _model(model)
    cached_price = spend.PRICES[model].cached_input_per_million
    if cached_price is None:
        raise _invalid(f"{model} has no prompt-caching price")
    share, team, days = _share(cacheable_share, "cacheable_share"), _team(team), _days(days)
    current = spend.model_usage(model, days, team)
    discount = spend.PRICES[model].input_per_million - cached_price
    saving = current.input_tokens * share * discount / spend.TOKENS_PER_PRICE_UNIT
    return {
        "model": model,
        "team": team,
        "cacheable_share": share,
        "days": days,
        "input_tokens": current.input_tokens,
        "current_monthly_cost_usd": _usd(spend.monthly(current.cost_usd, days)),
        "projected_monthly_savings_usd": _usd(spend.monthly(saving, days)),
    }


def idle_capacity(days: int = 30) -> JSON:
    """Return reserved compute and GPU capacity that served no requests on some days."""
    days = _days(days)
    idle = spend.idle_resources(days)
    savings = [_usd(spend.monthly(i.idle_cost_usd, days)) for i in idle]
    return {
        "days": days,
        "resources": [
            {
                "team": i.team,
                "provider": i.provider,
                "service": i.service,
                "idle_days": i.idle_days,
                "idle_cost_usd": _usd(i.idle_cost_usd),
                "idle_since": i.idle_since.isoformat() if i.idle_since else None,
                "projected_monthly_savings_usd": saving,
            }
            for i, saving in zip(idle, savings, strict=True)
        ],
        "idle_cost_usd": _usd(sum(i.idle_cost_usd for i in idle)),
        "projected_monthly_savings_usd": _usd(sum(savings)),
    }


TOOLS: Mapping[str, Tool] = {
    "spend_overview": spend_overview,
    "spend_by": spend_by,
    "model_usage": model_usage,
    "model_prices": model_prices,
    "estimate_model_switch": estimate_model_switch,
    "estimate_prompt_caching": estimate_prompt_caching,
    "idle_capacity": idle_capacity,
}


def register_tools(registry: AgentRegistry) -> None:
    """Register every spend tool under its function's name."""
    for name, tool in TOOLS.items():
        registry.register_tool(name, _checked(tool))


def _checked(tool: Tool) -> Tool:
    """Wrap a tool so that calling it with unknown or missing arguments is a `ToolError`."""
    signature = inspect.signature(tool)

    @functools.wraps(tool)
    def call(**args: Any) -> JSON:
        try:
            signature.bind(**args)
        except TypeError as error:
            raise _invalid(f"{tool.__name__}: {error}") from None
        return tool(**args)

    return call


def _invalid(message: str) -> ToolError:
    return ToolError(message, retryable=False)


def _days(days: object) -> int:
    limit = spend.covered_days()
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= limit:
        raise _invalid(f"days must be a whole number from 1 to {limit}, not {days!r}")
    return days


def _model(model: object) -> str:
    if not isinstance(model, str) or model not in spend.PRICES:
        raise _invalid(f"model must be one of {', '.join(spend.PRICES)}, not {model!r}")
    return model


def _team(team: object) -> str | None:
    if team is None:
        return None
    if not isinstance(team, str) or team not in spend.teams():
        raise _invalid(f"team must be one of {', '.join(spend.teams())} or null, not {team!r}")
    return team


def _share(share: object, name: str) -> float:
    if not isinstance(share, int | float) or isinstance(share, bool) or not 0 < share <= 1:
        raise _invalid(f"{name} must be a number greater than 0 and at most 1, not {share!r}")
    return float(share)


def _usd(amount: float) -> float:
    return round(amount, 2)
