"""Dashboard metrics per agent, tool, process and user, from the metrics projection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from agent_ledger.infrastructure.api.bounds import INT64_MAX
from agent_ledger.infrastructure.api.dependencies import (
    CallerDep,
    MetricsQueriesDep,
    ProjectionsDep,
    SettingsDep,
)
from agent_ledger.infrastructure.api.errors import ProblemError
from agent_ledger.infrastructure.api.instants import Instant
from agent_ledger.infrastructure.api.problem_responses import AUTHENTICATED
from agent_ledger.infrastructure.api.read_model_schemas import MetricsPage, NamedMetrics
from agent_ledger.infrastructure.auth.tokens import Caller
from agent_ledger.projections.metric_figures import SlaTargets
from agent_ledger.projections.metrics import AGENT, PROCESS, TOOL, MetricsProjection

router = APIRouter(prefix="/v1/metrics", tags=["metrics"], responses=AUTHENTICATED)

USER = "user"

From = Annotated[
    Instant | None,
    Query(alias="from", description="runs started at or after this instant (RFC 3339)"),
]
To = Annotated[
    Instant | None, Query(alias="to", description="runs started before this instant (RFC 3339)")
]
Name = Annotated[
    str | None, Query(max_length=200, description="only this name (on /users: this user)")
]
Series = Annotated[bool, Query(description="add per-minute figures")]
UserFilter = Annotated[
    str | None, Query(max_length=200, description="auditors and admins: one user's runs only")
]
After = Annotated[
    int | None, Query(ge=0, le=INT64_MAX, description="wait until the metrics have this position")
]


@dataclass(frozen=True)
class MetricsRequest:
    """The query every metrics endpoint takes."""

    start: From = None
    end: To = None
    name: Name = None
    series: Series = True
    user_id: UserFilter = None
    after: After = None


RequestDep = Annotated[MetricsRequest, Depends()]


@dataclass(frozen=True)
class MetricsSources:
    """What every metrics endpoint reads: the figures, the projection's progress, settings."""

    queries: MetricsQueriesDep
    projections: ProjectionsDep
    settings: SettingsDep


SourcesDep = Annotated[MetricsSources, Depends()]


@router.get("/agents", response_model=MetricsPage, response_model_by_alias=True)
def agent_metrics(caller: CallerDep, sources: SourcesDep, query: RequestDep) -> MetricsPage:
    """Runs of each agent (one per attempt): outcomes, retries, durations, SLA breaches, and
    their model calls' tokens and cost."""
    targets = SlaTargets({k: v * 1000 for k, v in sources.settings.sla_agent_seconds.items()})
    return _page(AGENT, targets, caller, sources, query)


@router.get("/tools", response_model=MetricsPage, response_model_by_alias=True)
def tool_metrics(caller: CallerDep, sources: SourcesDep, query: RequestDep) -> MetricsPage:
    """Calls of each tool: outcomes, retries of their step, durations, SLA breaches."""
    targets = SlaTargets({k: v * 1000 for k, v in sources.settings.sla_tool_seconds.items()})
    return _page(TOOL, targets, caller, sources, query)


@router.get("/processes", response_model=MetricsPage, response_model_by_alias=True)
def process_metrics(caller: CallerDep, sources: SourcesDep, query: RequestDep) -> MetricsPage:
    """Executions of each process: outcomes, step retries, durations, whole-workflow SLA,
    and their model calls' tokens and cost."""
    targets = SlaTargets(default=sources.settings.sla_workflow_seconds * 1000)
    return _page(PROCESS, targets, caller, sources, query)


@router.get("/users", response_model=MetricsPage, response_model_by_alias=True)
def user_metrics(caller: CallerDep, sources: SourcesDep, query: RequestDep) -> MetricsPage:
    """Executions of each user (`name` is the user): outcomes, durations, whole-workflow SLA,
    and their model calls' tokens and cost. Users see their own; auditors and admins all."""
    targets = SlaTargets(default=sources.settings.sla_workflow_seconds * 1000)
    return _page(PROCESS, targets, caller, sources, query, per_user=True)


def _page(
    kind: str,
    targets: SlaTargets,
    caller: Caller,
    sources: MetricsSources,
    query: MetricsRequest,
    *,
    per_user: bool = False,
) -> MetricsPage:
    start, end, after = query.start, query.end, query.after
    if start is not None and end is not None and end <= start:
        raise ProblemError(
            422, "invalid-range", "Invalid time range", "`to` must be later than `from`"
        )
    if after is not None and not sources.projections.wait_for_projection(
        after, sources.settings.read_wait_timeout, MetricsProjection.name
    ):
        raise ProblemError(
            503,
            "projection-lagging",
            "Read model is behind",
            f"the metrics have not reached position {after} yet; retry",
            position=sources.projections.projection_position(MetricsProjection.name),
        )
    owner = caller.owner_filter if caller.owner_filter is not None else query.user_id
    position = sources.projections.projection_position(MetricsProjection.name)
    items = sources.queries.figures(
        kind,
        targets,
        user_id=owner,
        start=start,
        end=end,
        name=query.name,
        series=query.series,
        per_user=per_user,
    )
    return MetricsPage(
        kind=USER if per_user else kind,
        start=start,
        end=end,
        position=position,
        items=[NamedMetrics.of(i) for i in items],
    )
