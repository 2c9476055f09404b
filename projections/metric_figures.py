"""Dashboard figures of a set of runs: counts, duration percentiles, SLA breaches, model usage."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from agent_ledger.projections.metrics import FINISHED_OUTCOMES, RUNNING, ModelUsage

PERCENTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))


def nearest_rank(ordered: Sequence[float], fraction: float) -> float | None:
    """The first value whose rank reaches `fraction` of the count (SQL `percentile_disc`)."""
    if not ordered:
        return None
    return ordered[max(math.ceil(fraction * len(ordered)), 1) - 1]


@dataclass
class Figures:
    """What a dashboard shows of one agent, tool or process over a time range (or minute)."""

    runs: int = 0
    successes: int = 0
    failures: int = 0
    timeouts: int = 0
    cancelled: int = 0
    running: int = 0
    retries: int = 0
    sla_breaches: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    usage: ModelUsage = field(default_factory=ModelUsage)


@dataclass
class NameFigures:
    """Totals of one name, with its per-minute series (minutes that had runs, oldest first)."""

    name: str
    sla_target_ms: float | None
    totals: Figures
    series: list[tuple[datetime, Figures]] = field(default_factory=list)


@dataclass(frozen=True)
class RunFacts:
    """The columns of a run the figures need."""

    name: str
    started_at: datetime
    outcome: str
    duration_ms: float | None
    retries: int
    usage: ModelUsage = field(default_factory=ModelUsage)


def figures_of(runs: Iterable[RunFacts], target_ms: float | None) -> Figures:
    """Count and rank the runs (durations of finished runs only; cancelled ones are not)."""
    result = Figures()
    durations: list[float] = []
    counters = {
        "success": "successes",
        "failure": "failures",
        "timeout": "timeouts",
        "cancelled": "cancelled",
        RUNNING: "running",
    }
    for run in runs:
        result.runs += 1
        result.retries += run.retries
        result.usage += run.usage
        attribute = counters.get(run.outcome)
        if attribute is not None:
            setattr(result, attribute, getattr(result, attribute) + 1)
        if run.outcome in FINISHED_OUTCOMES and run.duration_ms is not None:
            durations.append(run.duration_ms)
            if target_ms is not None and run.duration_ms > target_ms:
                result.sla_breaches += 1
    durations.sort()
    result.p50_ms, result.p95_ms, result.p99_ms = (
        nearest_rank(durations, fraction) for _, fraction in PERCENTILES
    )
    return result


def minute_of(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


@dataclass(frozen=True)
class SlaTargets:
    """Duration targets in milliseconds by name, and the one for names not listed."""

    by_name: dict[str, float] = field(default_factory=dict)
    default: float | None = None

    def __call__(self, name: str) -> float | None:
        return self.by_name.get(name, self.default)


def figures_by_name(
    runs: Iterable[RunFacts], targets: SlaTargets, *, series: bool
) -> list[NameFigures]:
    """Totals (and per-minute series) for every name, sorted by name."""
    grouped: dict[str, list[RunFacts]] = {}
    for run in runs:
        grouped.setdefault(run.name, []).append(run)
    result = []
    for name in sorted(grouped):
        target = targets(name)
        named = NameFigures(name, target, figures_of(grouped[name], target))
        if series:
            minutes: dict[datetime, list[RunFacts]] = {}
            for run in grouped[name]:
                minutes.setdefault(minute_of(run.started_at), []).append(run)
            named.series = [(m, figures_of(minutes[m], target)) for m in sorted(minutes)]
        result.append(named)
    return result
