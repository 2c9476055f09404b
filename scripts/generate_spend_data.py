"""Generate the bundled sample spend data set (`application/builtin_agents/spend.csv`).

Deterministic: a seeded `random.Random` and the standard library only, so running it
again reproduces the same file byte for byte. Run from the project root:

    .venv/bin/python scripts/generate_spend_data.py
"""

from __future__ import annotations

import csv
import datetime as dt
import random
from dataclasses import dataclass
from pathlib import Path

OUTPUT = Path(__file__).resolve().parent.parent / "application" / "builtin_agents" / "spend.csv"
SEED = 20260801
FIRST_DAY = dt.date(2026, 8, 1)
DAYS = 90

# USD per million (input, output) tokens; must match `PRICES` in
# application/builtin_agents/spend.py (a unit test checks every row against it).
PRICES = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "claude-sonnet": (3.00, 15.00),
    "claude-haiku": (0.80, 4.00),
    "llama-70b": (0.40, 0.40),
}

# The research team's training cluster stops being used on this day but keeps running.
GPU_IDLE_FROM = dt.date(2026, 9, 12)


@dataclass(frozen=True)
class Workload:
    """An LLM workload: a team calling one model through one provider."""

    team: str
    provider: str
    model: str
    requests: int
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Resource:
    """A cloud resource billed per day, serving some requests a day."""

    team: str
    provider: str
    service: str
    daily_cost: float
    requests: int
    usage: str = "steady"  # steady | weekdays | until_idle


WORKLOADS = [
    Workload("search", "openai", "gpt-4o-mini", 60_000, 900, 60),
    Workload("search", "anthropic", "claude-sonnet", 4_000, 7_500, 450),
    Workload("search", "aws-bedrock", "claude-sonnet", 1_500, 7_800, 420),
    # Support answers short, simple tickets with a frontier model.
    Workload("support", "anthropic", "claude-sonnet", 28_000, 380, 140),
    Workload("support", "aws-bedrock", "claude-sonnet", 9_000, 360, 130),
    Workload("support", "openai", "gpt-4o", 600, 3_200, 700),
    Workload("support", "openai", "gpt-4o-mini", 12_000, 500, 40),
    Workload("growth", "openai", "gpt-4o", 2_500, 1_600, 650),
    Workload("growth", "azure", "gpt-4o", 900, 1_500, 620),
    Workload("growth", "openai", "gpt-4o-mini", 20_000, 700, 90),
    Workload("growth", "anthropic", "claude-haiku", 5_000, 1_200, 300),
    Workload("platform", "self-hosted", "llama-70b", 30_000, 1_100, 250),
    Workload("platform", "openai", "gpt-4o-mini", 8_000, 600, 120),
    Workload("research", "anthropic", "claude-sonnet", 700, 9_000, 1_200),
    Workload("research", "openai", "gpt-4o", 500, 3_000, 900),
    Workload("research", "anthropic", "claude-haiku", 3_000, 2_000, 400),
    Workload("research", "self-hosted", "llama-70b", 6_000, 1_500, 500),
]

RESOURCES = [
    Resource("search", "pinecone", "vector-db", 95.0, 70_000),
    Resource("search", "aws", "compute", 210.0, 180_000),
    Resource("search", "aws", "storage", 38.0, 400_000),
    Resource("search", "gcp", "compute", 64.0, 45_000),
    Resource("support", "pinecone", "vector-db", 42.0, 38_000),
    Resource("support", "aws", "compute", 120.0, 95_000),
    Resource("support", "aws", "storage", 21.0, 150_000),
    Resource("growth", "aws", "compute", 88.0, 40_000),
    Resource("growth", "aws", "storage", 17.0, 90_000),
    # Growth's batch jobs only run on weekdays; the cluster stays up all week.
    Resource("growth", "gcp", "compute", 54.0, 2_400, usage="weekdays"),
    Resource("platform", "aws", "gpu", 310.0, 36_000),
    Resource("platform", "aws", "compute", 260.0, 220_000),
    Resource("platform", "gcp", "compute", 75.0, 60_000),
    Resource("platform", "aws", "storage", 64.0, 800_000),
    Resource("platform", "gcp", "storage", 29.0, 210_000),
    Resource("platform", "pinecone", "vector-db", 36.0, 25_000),
    Resource("research", "aws", "gpu", 136.08, 180, usage="until_idle"),
    Resource("research", "gcp", "gpu", 98.0, 120),
    Resource("research", "aws", "storage", 33.0, 60_000),
    Resource("research", "gcp", "storage", 14.0, 20_000),
]

COLUMNS = [
    "date",
    "team",
    "provider",
    "service",
    "model",
    "requests",
    "input_tokens",
    "output_tokens",
    "cost_usd",
]


def activity(day: dt.date, index: int, rng: random.Random) -> float:
    """Return a day's activity factor: weekly seasonality, slow growth and noise."""
    weekend = day.weekday() >= 5
    return (0.55 if weekend else 1.0) * (1.0 + 0.002 * index) * rng.uniform(0.9, 1.1)


def workload_row(w: Workload, day: dt.date, index: int, rng: random.Random) -> list[object]:
    """Return one day's row for an LLM workload, its cost priced per token."""
    requests = max(1, round(w.requests * activity(day, index, rng)))
    input_tokens = round(requests * w.input_tokens * rng.uniform(0.92, 1.08))
    output_tokens = round(requests * w.output_tokens * rng.uniform(0.9, 1.1))
    price_in, price_out = PRICES[w.model]
    cost = (input_tokens * price_in + output_tokens * price_out) / 1_000_000
    service = "llm-inference" if w.provider == "self-hosted" else "llm-api"
    return [
        day,
        w.team,
        w.provider,
        service,
        w.model,
        requests,
        input_tokens,
        output_tokens,
        f"{cost:.2f}",
    ]


def resource_row(r: Resource, day: dt.date, index: int, rng: random.Random) -> list[object]:
    """Return one day's row for a cloud resource, billed whether it is used or not."""
    idle = (r.usage == "weekdays" and day.weekday() >= 5) or (
        r.usage == "until_idle" and day >= GPU_IDLE_FROM
    )
    requests = 0 if idle else max(1, round(r.requests * activity(day, index, rng)))
    # Reserved capacity costs the same every day; usage-billed services vary a little.
    fixed = r.service in {"gpu", "compute"} and r.usage != "steady"
    cost = r.daily_cost if fixed else r.daily_cost * rng.uniform(0.96, 1.04)
    return [day, r.team, r.provider, r.service, "", requests, 0, 0, f"{cost:.2f}"]


def generate() -> list[list[object]]:
    """Return all rows, ordered by date and then as declared."""
    rng = random.Random(SEED)
    rows: list[list[object]] = []
    for index in range(DAYS):
        day = FIRST_DAY + dt.timedelta(days=index)
        rows.extend(workload_row(w, day, index, rng) for w in WORKLOADS)
        rows.extend(resource_row(r, day, index, rng) for r in RESOURCES)
    return rows


def main() -> None:
    """Write the data set."""
    rows = generate()
    with OUTPUT.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows to {OUTPUT}")


if __name__ == "__main__":
    main()
