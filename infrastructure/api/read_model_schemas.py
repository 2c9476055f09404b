"""Response bodies of the read-model endpoints: executions with their lineage and steps,
and metrics."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from agent_ledger.infrastructure.api.schemas import ExecutionView
from agent_ledger.projections.execution_status import ExecutionStatusRow
from agent_ledger.projections.metric_figures import Figures, NameFigures
from agent_ledger.projections.metrics import ModelUsage
from agent_ledger.projections.step_status import StepStatusRow


class StepView(BaseModel):
    """One step of an execution, from the step status projection."""

    id: str
    status: str = Field(
        description="pending, scheduled, running, waiting (for a signal), retrying, timed_out, "
        "completed, failed, skipped or cancelled"
    )
    awaiting: str | None = Field(
        default=None, description="the signal a waiting step waits for; null otherwise"
    )
    attempt: int
    retries: int
    agent: str | None
    started_at: datetime | None = Field(
        description="first start of the step (since the execution was last resumed)"
    )
    finished_at: datetime | None
    duration_ms: float | None = Field(description="from that start to its end")
    error: dict[str, Any] | None
    skip_reason: str | None
    last_event: str
    last_position: int
    copied: bool = Field(
        default=False,
        description="completed in the execution this one was forked from: its output was "
        "copied, the step did not run here",
    )

    @classmethod
    def of(cls, row: StepStatusRow) -> StepView:
        return cls(
            id=row.step_id,
            status=row.status,
            attempt=row.attempt,
            retries=row.retries,
            agent=row.agent,
            started_at=row.started_at,
            finished_at=row.finished_at,
            duration_ms=row.duration_ms,
            error=row.error,
            skip_reason=row.skip_reason,
            last_event=row.last_event,
            last_position=row.last_position,
            awaiting=row.awaiting,
            copied=row.copied,
        )


class ExecutionSummary(ExecutionView):
    """The status of one execution, with where it comes from: the execution it forks, and
    how often it was resumed."""

    parent_id: UUID | None = Field(
        default=None, description="the execution this one was forked from; null otherwise"
    )
    forked_from_step: str | None = Field(
        default=None, description="the step of the parent it was forked from (it ran here)"
    )
    resumes: int = Field(
        default=0,
        description="how often it was resumed; its duration runs from its first start",
    )
    resumed_at: datetime | None = Field(
        default=None, description="its last resume (its timeout counts from there)"
    )

    @classmethod
    def of_row(cls, row: ExecutionStatusRow) -> ExecutionSummary:
        return cls(
            **ExecutionView.of(row).model_dump(),
            parent_id=row.parent_id,
            forked_from_step=row.forked_from_step,
            resumes=row.resumes,
            resumed_at=row.resumed_at,
        )


class ExecutionSummaryPage(BaseModel):
    items: list[ExecutionSummary]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next (older) page")


MAX_CHILDREN = 20


class ExecutionDetail(ExecutionSummary):
    """An execution's status with its steps in the process's order and its forks."""

    steps: list[StepView]
    children: list[UUID] = Field(
        default_factory=list,
        description=f"executions forked from this one, newest first, at most {MAX_CHILDREN} "
        "(`GET /v1/executions?parent_id=` lists them all)",
    )
    more_children: bool = Field(
        default=False, description=f"more than {MAX_CHILDREN} executions were forked from it"
    )


class DurationPercentiles(BaseModel):
    p50: float | None
    p95: float | None
    p99: float | None


class UsageFigures(BaseModel):
    """What the runs' model calls used: each `LlmCallCompleted` of their attempts or
    executions counted once, whatever the attempt's outcome."""

    model_calls: int
    prompt_tokens: int = Field(description="tokens the calls reported for their prompts")
    completion_tokens: int = Field(description="tokens the calls reported for their answers")
    cost_usd: float | None = Field(
        description="the sum of the calls' known costs in USD; null when there were calls and "
        "none had a known cost (0 when there were none)"
    )
    unpriced_calls: int = Field(
        description="calls whose cost is unknown (a model without a price, or no token "
        "counts): not in cost_usd, which is then a lower bound"
    )

    @classmethod
    def of(cls, usage: ModelUsage) -> UsageFigures:
        return cls(
            model_calls=usage.model_calls,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_usd=usage.cost_usd,
            unpriced_calls=usage.unpriced_calls,
        )


class FigureSet(BaseModel):
    """Counts and durations of runs (durations: successes, failures and timeouts), and what
    their model calls used."""

    runs: int
    successes: int
    failures: int
    timeouts: int
    cancelled: int
    running: int = Field(
        description="runs not finished yet (an execution waiting for a signal is one)"
    )
    retries: int
    sla_breaches: int = Field(description="finished runs slower than the SLA target")
    duration_ms: DurationPercentiles
    usage: UsageFigures

    @classmethod
    def of(cls, figures: Figures) -> FigureSet:
        return cls(
            runs=figures.runs,
            successes=figures.successes,
            failures=figures.failures,
            timeouts=figures.timeouts,
            cancelled=figures.cancelled,
            running=figures.running,
            retries=figures.retries,
            sla_breaches=figures.sla_breaches,
            duration_ms=DurationPercentiles(
                p50=figures.p50_ms, p95=figures.p95_ms, p99=figures.p99_ms
            ),
            usage=UsageFigures.of(figures.usage),
        )


class MinuteFigures(FigureSet):
    minute: datetime = Field(description="start of the minute (UTC) the runs started in")


class NamedMetrics(BaseModel):
    """Totals of one agent, tool, process or user, and its per-minute series."""

    name: str = Field(description="the agent, tool or process; the user on /v1/metrics/users")
    sla_target_ms: float | None
    totals: FigureSet
    series: list[MinuteFigures] = Field(description="minutes with runs, oldest first")

    @classmethod
    def of(cls, named: NameFigures) -> NamedMetrics:
        return cls(
            name=named.name,
            sla_target_ms=named.sla_target_ms,
            totals=FigureSet.of(named.totals),
            series=[
                MinuteFigures(minute=m, **FigureSet.of(f).model_dump()) for m, f in named.series
            ],
        )


_FIGURES_EXAMPLE: dict[str, Any] = {
    "runs": 120,
    "successes": 110,
    "failures": 6,
    "timeouts": 3,
    "cancelled": 1,
    "running": 0,
    "retries": 8,
    "sla_breaches": 4,
    "duration_ms": {"p50": 812.4, "p95": 4410.0, "p99": 5230.7},
    "usage": {
        "model_calls": 131,
        "prompt_tokens": 182040,
        "completion_tokens": 20511,
        "cost_usd": 0.039613,
        "unpriced_calls": 0,
    },
}


class MetricsPage(BaseModel):
    """Figures per name over a time range (runs that started in [from, to))."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "kind": "agent",
                    "from": "2025-06-01T12:00:00Z",
                    "to": "2025-06-01T13:00:00Z",
                    "position": 52311,
                    "items": [
                        {
                            "name": "triage",
                            "sla_target_ms": 5000.0,
                            "totals": _FIGURES_EXAMPLE,
                            "series": [{"minute": "2025-06-01T12:00:00Z", **_FIGURES_EXAMPLE}],
                        }
                    ],
                }
            ]
        },
        populate_by_name=True,
    )

    kind: str = Field(description="agent, tool, process or user")
    start: datetime | None = Field(alias="from")
    end: datetime | None = Field(alias="to")
    position: int = Field(description="store position the figures include")
    items: list[NamedMetrics]
