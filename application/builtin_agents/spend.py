"""The bundled sample data set of daily cloud and LLM spend, and pure queries over it."""

from __future__ import annotations

import csv
import datetime as dt
import functools
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType

DAYS_PER_MONTH = 30
TOKENS_PER_PRICE_UNIT = 1_000_000
DIMENSIONS = ("team", "provider", "service", "model")
# Capacity reserved by the day: serving no requests on a day means paying for nothing.
RESERVED_SERVICES = frozenset({"compute", "gpu"})


@dataclass(frozen=True)
class ModelPrice:
    """A model's list price in USD per million tokens."""

    vendor: str
    input_per_million: float
    output_per_million: float
    cached_input_per_million: float | None = None

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """Return what these tokens cost at this price."""
        return (
            input_tokens * self.input_per_million + output_tokens * self.output_per_million
        ) / TOKENS_PER_PRICE_UNIT


# The providers' published prices, which the sample data was generated with
# (llama-70b is the internal charge-back rate of the self-hosted cluster).
PRICES: Mapping[str, ModelPrice] = MappingProxyType(
    {
        "gpt-4o": ModelPrice("openai", 2.50, 10.00, 1.25),
        "gpt-4o-mini": ModelPrice("openai", 0.15, 0.60, 0.075),
        "claude-sonnet": ModelPrice("anthropic", 3.00, 15.00, 0.30),
        "claude-haiku": ModelPrice("anthropic", 0.80, 4.00, 0.08),
        "llama-70b": ModelPrice("meta", 0.40, 0.40),
    }
)


@dataclass(frozen=True)
class SpendRecord:
    """One day of one team's spend on one provider's service (and model, for LLMs)."""

    date: dt.date
    team: str
    provider: str
    service: str
    model: str | None
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: float

    @property
    def is_llm(self) -> bool:
        """Say whether this is spend on a language model."""
        return self.model is not None


@dataclass(frozen=True)
class Usage:
    """Requests, tokens and cost summed over some records."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def avg_input_tokens(self) -> float:
        """Return the mean input tokens per request."""
        return self.input_tokens / self.requests if self.requests else 0.0

    @property
    def avg_output_tokens(self) -> float:
        """Return the mean output tokens per request."""
        return self.output_tokens / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class IdleResource:
    """Reserved capacity that served no requests on some days of a window."""

    team: str
    provider: str
    service: str
    idle_days: int
    idle_cost_usd: float
    idle_since: dt.date | None


@functools.cache
def records() -> tuple[SpendRecord, ...]:
    """Return every record of the bundled data set, loaded once."""
    text = resources.files(__package__).joinpath("spend.csv").read_text(encoding="utf-8")
    return tuple(
        SpendRecord(
            date=dt.date.fromisoformat(row["date"]),
            team=row["team"],
            provider=row["provider"],
            service=row["service"],
            model=row["model"] or None,
            requests=int(row["requests"]),
            input_tokens=int(row["input_tokens"]),
            output_tokens=int(row["output_tokens"]),
            cost_usd=float(row["cost_usd"]),
        )
        for row in csv.DictReader(io.StringIO(text))
    )


def last_day() -> dt.date:
    """Return the last day the data set covers."""
    return max(r.date for r in records())


def covered_days() -> int:
    """Return how many days the data set covers."""
    return (last_day() - min(r.date for r in records())).days + 1


def window(days: int) -> tuple[SpendRecord, ...]:
    """Return the records of the last `days` days of the data set."""
    first = last_day() - dt.timedelta(days=days - 1)
    return tuple(r for r in records() if r.date >= first)


def window_start(days: int) -> dt.date:
    """Return the first day of the last `days` days of the data set."""
    return last_day() - dt.timedelta(days=days - 1)


def teams() -> tuple[str, ...]:
    """Return the teams in the data set, sorted."""
    return tuple(sorted({r.team for r in records()}))


def monthly(cost_usd: float, days: int) -> float:
    """Return the monthly run-rate of a cost incurred over `days` days."""
    return cost_usd * DAYS_PER_MONTH / days


def total(selected: Iterable[SpendRecord]) -> float:
    """Return the total cost of some records."""
    return sum(r.cost_usd for r in selected)


def totals_by(selected: Iterable[SpendRecord], dimension: str) -> list[tuple[str, float]]:
    """Return the cost per value of a dimension, largest first (ties by name)."""
    sums: dict[str, float] = {}
    for r in selected:
        value: str | None = getattr(r, dimension)
        if value is not None:
            sums[value] = sums.get(value, 0.0) + r.cost_usd
    return sorted(sums.items(), key=lambda item: (-item[1], item[0]))


def usage(selected: Iterable[SpendRecord]) -> Usage:
    """Return the requests, tokens and cost summed over some records."""
    requests = input_tokens = output_tokens = 0
    cost = 0.0
    for r in selected:
        requests += r.requests
        input_tokens += r.input_tokens
        output_tokens += r.output_tokens
        cost += r.cost_usd
    return Usage(requests, input_tokens, output_tokens, cost)


def model_usage(model: str, days: int, team: str | None = None) -> Usage:
    """Return a model's usage over the last `days` days, for one team or all."""
    return usage(r for r in window(days) if r.model == model and (team is None or r.team == team))


def usage_by_team(model: str, days: int) -> list[tuple[str, Usage]]:
    """Return each team's usage of a model over the last `days` days, costliest first."""
    per_team = [(team, model_usage(model, days, team)) for team in teams()]
    used = [(team, u) for team, u in per_team if u.requests]
    return sorted(used, key=lambda item: (-item[1].cost_usd, item[0]))


def idle_resources(days: int) -> list[IdleResource]:
    """Return reserved capacity with idle days in the last `days` days, costliest first."""
    recent = {(r.team, r.provider, r.service) for r in window(days)}
    history: dict[tuple[str, str, str], list[SpendRecord]] = {}
    for r in records():
        key = (r.team, r.provider, r.service)
        if r.service in RESERVED_SERVICES and key in recent:
            history.setdefault(key, []).append(r)
    first = window_start(days)
    idle: list[IdleResource] = []
    for (team, provider, service), rows in history.items():
        unused = [r for r in rows if r.requests == 0 and r.date >= first]
        if unused:
            since = _idle_since(rows)
            idle.append(IdleResource(team, provider, service, len(unused), total(unused), since))
    return sorted(idle, key=lambda i: (-i.idle_cost_usd, i.team, i.provider, i.service))


def _idle_since(rows: list[SpendRecord]) -> dt.date | None:
    """Return the first day of the idle streak that runs to the end, if there is one."""
    since: dt.date | None = None
    for r in sorted(rows, key=lambda r: r.date, reverse=True):
        if r.requests:
            break
        since = r.date
    return since
