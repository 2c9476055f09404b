"""Executions: start, list, show, history, cancel."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Body, Depends, Header, Query, Response

from agent_ledger.application.event_log import to_message
from agent_ledger.application.executions import Executions
from agent_ledger.application.path_timing import mark
from agent_ledger.application.processes import RegisteredProcess, resolve_process
from agent_ledger.application.starter import StartedExecution, StartRequest
from agent_ledger.application.thread_policies import (
    MESSAGE,
    Signalled,
    ThreadMembers,
    ThreadPolicies,
    ThreadPolicy,
)
from agent_ledger.domain.execution_state import ExecutionStatus
from agent_ledger.infrastructure.api.attribution import (
    CorrelationDep,
    actor_of,
    record_auditor_read,
)
from agent_ledger.infrastructure.api.bounds import INT64_MAX
from agent_ledger.infrastructure.api.dependencies import (
    AuditReadsDep,
    CallerDep,
    CatalogDep,
    ExecutionsDep,
    ProjectionProgress,
    ProjectionsDep,
    SettingsDep,
    StarterDep,
    StatusQueriesDep,
)
from agent_ledger.infrastructure.api.errors import ProblemError
from agent_ledger.infrastructure.api.instants import Instant
from agent_ledger.infrastructure.api.problem_responses import AUTHENTICATED, problems
from agent_ledger.infrastructure.api.read_model_schemas import (
    MAX_CHILDREN,
    ExecutionDetail,
    ExecutionSummary,
    ExecutionSummaryPage,
    StepView,
)
from agent_ledger.infrastructure.api.schemas import (
    Accepted,
    CancelExecution,
    EventMessage,
    EventPage,
    ExecutionCreated,
    SignalDelivered,
    StartExecution,
)
from agent_ledger.infrastructure.auth.tokens import Caller
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.projections.traces import parse_traceparent

router = APIRouter(prefix="/v1/executions", tags=["executions"], responses=AUTHENTICATED)

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]
RequestId = Annotated[str | None, Header(alias="X-Request-ID", max_length=200)]
TraceParent = Annotated[str | None, Header(alias="traceparent", max_length=200)]
After = Annotated[
    int | None, Query(ge=0, le=INT64_MAX, description="wait until the view has this position")
]
StartedFrom = Annotated[
    Instant | None, Query(alias="from", description="started at or after (RFC 3339)")
]
StartedTo = Annotated[Instant | None, Query(alias="to", description="started before (RFC 3339)")]
UNFINISHED = [status.value for status in ExecutionStatus if not status.is_terminal]
StatusFilter = Annotated[
    ExecutionStatus | None,
    Query(
        description="only executions with this status (`waiting`: every attempt under way "
        "waits for a signal)"
    ),
]

ParentFilter = Annotated[
    UUID | None, Query(description="only the executions forked from this one (its children)")
]


async def _thread_members(
    executions: ExecutionsDep,
    statuses: StatusQueriesDep,
    projections: ProjectionsDep,
    settings: SettingsDep,
) -> ThreadMembers:
    """The thread's executions from the status view, once it has applied every event stored
    when the request arrived (read your own writes; 503 `projection-lagging` after
    `read_wait_timeout`): the view has no lag to hide them, and the store is not indexed by
    thread."""

    def members(user_id: str, thread_id: str) -> list[UUID]:
        _wait_for_view(projections, settings, executions.last_position())
        rows = [
            row
            for status in UNFINISHED
            for row in statuses.list_rows(
                user_id=user_id, thread_id=thread_id, status=status, limit=200
            )
        ]
        return [r.execution_id for r in sorted(rows, key=lambda r: (r.started_at, r.execution_id))]

    return members


ThreadMembersDep = Annotated[ThreadMembers, Depends(_thread_members)]


@router.post(
    "",
    status_code=201,
    response_model=None,
    responses={
        201: {"model": ExecutionCreated, "description": "Started"},
        200: {
            "model": ExecutionCreated,
            "description": "An earlier start with the same `Idempotency-Key`, replayed",
            "headers": {"Idempotent-Replayed": {"schema": {"type": "string", "enum": ["true"]}}},
        },
        202: {
            "model": SignalDelivered,
            "description": "`thread_policy: signal`: the input went to an execution of the "
            "thread as its `message` signal; nothing was started",
            "headers": {"Idempotent-Replayed": {"schema": {"type": "string", "enum": ["true"]}}},
        },
        **problems(400, 403, 409, 413),
    },
)
async def start_execution(
    body: StartExecution,
    caller: CallerDep,
    settings: SettingsDep,
    catalog: CatalogDep,
    starter: StarterDep,
    thread: ThreadMembersDep,
    response: Response,
    correlation_id: CorrelationDep,
    idempotency_key: IdempotencyKey = None,
    request_id: RequestId = None,
    traceparent: TraceParent = None,
) -> ExecutionCreated | SignalDelivered:
    """Start an execution; repeat safely with the same `Idempotency-Key`.

    With `thread_id`, `thread_policy` says what to do while the caller's thread has an
    execution that has not finished; `reject` is 409 and `signal` may answer 202. A signal
    the waiting step refuses is 403 or 422, as `POST .../signals/message` would be. A W3C
    `traceparent` becomes the start's correlation id: the execution's trace continues it.
    """
    mark("api.route")
    _check_input_size(body, settings.max_input_bytes)
    process = await resolve_process(catalog, body.process, body.version)
    request = StartRequest(
        user_id=caller.user_id,
        process=process,
        input=body.input,
        thread_id=body.thread_id,
        idempotency_key=idempotency_key,
        request_id=request_id,
        caused_by=actor_of(caller),
        correlation_id=traceparent if parse_traceparent(traceparent) else correlation_id,
    )
    policy = body.thread_policy or ThreadPolicy.ENQUEUE
    outcome = await ThreadPolicies(starter, thread).start(request, policy, caller.roles)
    if isinstance(outcome, Signalled):
        return _delivered(outcome, response)
    return _created(outcome, process, response)


def _created(
    started: StartedExecution, process: RegisteredProcess, response: Response
) -> ExecutionCreated:
    response.headers["Location"] = f"/v1/executions/{started.execution_id}"
    if not started.created:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    mark("api.respond", started.execution_id)
    return ExecutionCreated(
        id=started.execution_id,
        process=process.name,
        version=process.version,
        position=started.position,
        created=started.created,
    )


def _delivered(signalled: Signalled, response: Response) -> SignalDelivered:
    response.status_code = 202
    response.headers["Location"] = f"/v1/executions/{signalled.execution_id}"
    if signalled.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return SignalDelivered(
        id=signalled.execution_id, delivered="signal", signal=MESSAGE, position=signalled.position
    )


@router.get("", response_model=ExecutionSummaryPage, responses=problems(400))
def list_executions(
    caller: CallerDep,
    statuses: StatusQueriesDep,
    projections: ProjectionsDep,
    settings: SettingsDep,
    status: StatusFilter = None,
    process: str | None = None,
    thread_id: str | None = None,
    parent_id: ParentFilter = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
    after: After = None,
    started_from: StartedFrom = None,
    started_to: StartedTo = None,
) -> ExecutionSummaryPage:
    """The caller's executions, newest first (auditors see everyone's)."""
    _wait_for_view(projections, settings, after)
    rows = statuses.list_rows(
        user_id=caller.owner_filter,
        status=None if status is None else status.value,
        process=process,
        thread_id=thread_id,
        parent_id=parent_id,
        limit=limit,
        before=_decode(cursor),
        started_from=started_from,
        started_to=started_to,
    )
    next_cursor = (
        _encode(rows[-1].started_at, rows[-1].execution_id) if len(rows) == limit else None
    )
    items = [ExecutionSummary.of_row(r) for r in rows]
    return ExecutionSummaryPage(items=items, next_cursor=next_cursor)


@router.get(  # a uuid convertor: /v1/executions/resume is not an execution id
    "/{execution_id:uuid}", response_model=ExecutionDetail, responses=problems(404)
)
def get_execution(
    execution_id: UUID,
    caller: CallerDep,
    statuses: StatusQueriesDep,
    executions: ExecutionsDep,
    projections: ProjectionsDep,
    settings: SettingsDep,
    after: After = None,
) -> ExecutionDetail:
    """One execution's status, its steps and its forks; another user's execution does not
    exist for the caller."""
    _wait_for_view(projections, settings, after)
    row = statuses.get(execution_id, caller.owner_filter)
    if row is None and projections.wait_for_projection(executions.last_position(), 2.0):
        row = statuses.get(execution_id, caller.owner_filter)  # it may have been lag
    if row is None:
        raise ProblemError(
            404, "not-found", "Execution not found", f"execution {execution_id} was not found"
        )
    steps = [StepView.of(step) for step in statuses.steps(execution_id)]
    children = statuses.children(execution_id, caller.owner_filter, MAX_CHILDREN + 1)
    return ExecutionDetail(
        **ExecutionSummary.of_row(row).model_dump(),
        steps=steps,
        children=children[:MAX_CHILDREN],
        more_children=len(children) > MAX_CHILDREN,
    )


@router.get("/{execution_id}/events", response_model=EventPage, responses=problems(404))
def get_execution_events(
    execution_id: UUID,
    caller: CallerDep,
    executions: ExecutionsDep,
    reads: AuditReadsDep,
    correlation_id: CorrelationDep,
    after: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> EventPage:
    """The execution's full history from the store, in order, paged by position."""
    _check_owner(executions, execution_id, caller)
    events = executions.get_history(execution_id, after=after, limit=limit)
    record_auditor_read(
        reads, caller, "history", execution_id, correlation_id, after=after, limit=limit
    )
    items = [EventMessage.model_validate(to_message(e)) for e in events]
    return EventPage(items=items, next_after=items[-1].position if len(items) == limit else None)


@router.post(
    "/{execution_id}/cancel",
    status_code=202,
    response_model=Accepted,
    responses=problems(400, 404, 409, 413),
)
def cancel_execution(
    execution_id: UUID,
    caller: CallerDep,
    executions: ExecutionsDep,
    correlation_id: CorrelationDep,
    body: Annotated[CancelExecution | None, Body()] = None,
) -> Accepted:
    """Ask for the execution to stop; the engine records `ExecutionCancelled`."""
    reason = (body or CancelExecution()).reason
    position = executions.request_cancellation(
        execution_id,
        user_id=None if caller.is_admin else caller.user_id,
        by=caller.user_id,
        reason=reason,
        caused_by=actor_of(caller),
        correlation_id=correlation_id,
    )
    return Accepted(id=execution_id, position=position)


def _check_owner(executions: Executions, execution_id: UUID, caller: Caller) -> None:
    executions.get_execution(execution_id, user_id=caller.owner_filter, version=1)


def _check_input_size(body: StartExecution, limit: int) -> None:
    size = len(json.dumps(body.input, separators=(",", ":")).encode())
    if size > limit:
        raise ProblemError(
            413,
            "input-too-large",
            "Input too large",
            f"the input is {size} bytes; the limit is {limit}",
            limit=limit,
        )


def _wait_for_view(projections: ProjectionProgress, settings: Settings, after: int | None) -> None:
    if after is None:
        return
    if not projections.wait_for_projection(after, settings.read_wait_timeout):
        raise ProblemError(
            503,
            "projection-lagging",
            "Read model is behind",
            f"the status view has not reached position {after} yet; retry",
            position=projections.projection_position(),
        )


def _encode(started_at: datetime, execution_id: UUID) -> str:
    raw = f"{started_at.isoformat()}|{execution_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str | None) -> tuple[datetime, UUID] | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        started, _, execution_id = raw.partition("|")
        return datetime.fromisoformat(started), UUID(execution_id)
    except ValueError:
        raise ProblemError(
            400, "invalid-cursor", "Invalid cursor", "the cursor is not one this API returned"
        ) from None
