"""Operator control: resume failed executions (one, or many by filter), fork from a step."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Body, Response
from pydantic import BaseModel, Field

from agent_ledger.application.lineage import ForkRequest, fork, resume, resume_many
from agent_ledger.infrastructure.api.attribution import CorrelationDep
from agent_ledger.infrastructure.api.dependencies import CallerDep, ExecutionsDep, StatusQueriesDep
from agent_ledger.infrastructure.api.instants import Instant
from agent_ledger.infrastructure.api.problem_responses import AUTHENTICATED, problems
from agent_ledger.infrastructure.auth.tokens import Caller, PermissionDeniedError

router = APIRouter(prefix="/v1/executions", tags=["lineage"], responses=AUTHENTICATED)

Reason = Annotated[str, Field(max_length=1000, description="why, recorded with the resume")]
ResumableStatus = Literal["failed", "timed_out", "cancelled"]
MAX_BULK = 1000


def _every_resumable() -> list[ResumableStatus]:
    return ["failed", "timed_out", "cancelled"]


class ResumeExecution(BaseModel):
    reason: Reason = "resumed"


class ResumeAccepted(BaseModel):
    id: UUID
    position: int


class BulkResume(BaseModel):
    """Which executions to resume: the list filters of `GET /v1/executions`."""

    status: list[ResumableStatus] = Field(default_factory=_every_resumable, min_length=1)
    process: str | None = Field(default=None, max_length=200)
    from_: Instant | None = Field(default=None, alias="from")
    to: Instant | None = None
    limit: int = Field(default=100, ge=1, le=MAX_BULK)
    reason: Reason = "resumed in bulk"


class NotResumed(BaseModel):
    id: UUID
    detail: str


class BulkResumed(BaseModel):
    resumed: list[UUID]
    not_resumed: list[NotResumed]
    position: int | None = Field(description="the store position of the last resume, if any")


class ForkExecution(BaseModel):
    from_step: str = Field(min_length=1, max_length=64)
    input: dict[str, Any] | None = Field(
        default=None, description="the fork's input; the parent's when absent"
    )


class ForkCreated(BaseModel):
    id: UUID
    parent_id: UUID
    from_step: str
    copied: list[str] = Field(description="the parent's steps whose outputs were copied")
    position: int


def _actor_may_resume(caller: Caller) -> None:
    if not {"user", "admin"} & caller.roles:
        raise PermissionDeniedError("auditors read executions; they do not resume or fork them")


@router.post(
    "/{execution_id}/resume",
    status_code=202,
    response_model=ResumeAccepted,
    responses=problems(400, 403, 404, 409, 413),
)
async def resume_execution(
    execution_id: UUID,
    caller: CallerDep,
    executions: ExecutionsDep,
    correlation_id: CorrelationDep,
    body: Annotated[ResumeExecution | None, Body()] = None,
) -> ResumeAccepted:
    """Run a `failed`, `timed_out` or `cancelled` execution again: completed steps keep their
    outputs; failed, skipped-by-failure and cancelled steps run again with their retry
    budget afresh; the execution's timeout restarts. 409 when it is running or completed."""
    _actor_may_resume(caller)
    resumed = await asyncio.to_thread(
        resume,
        executions,
        execution_id,
        user_id=None if caller.is_admin else caller.user_id,
        actor=caller.user_id,
        reason=(body or ResumeExecution()).reason,
        correlation_id=correlation_id,
    )
    return ResumeAccepted(id=resumed.execution_id, position=resumed.position)


@router.post(
    "/resume",
    response_model=BulkResumed,
    responses=problems(400, 403, 413),
)
async def resume_in_bulk(
    body: BulkResume,
    caller: CallerDep,
    executions: ExecutionsDep,
    statuses: StatusQueriesDep,
    correlation_id: CorrelationDep,
) -> BulkResumed:
    """Resume up to `limit` executions matching the filters, oldest first (admins: every
    user's; users: their own). Those that cannot be resumed now are listed with why."""
    _actor_may_resume(caller)
    owner = None if caller.is_admin else caller.user_id

    def run() -> BulkResumed:
        rows = []
        for status in body.status:
            rows += statuses.list_rows(
                user_id=owner,
                status=status,
                process=body.process,
                limit=body.limit,
                started_from=body.from_,
                started_to=body.to,
            )
        rows.sort(key=lambda r: (r.started_at, r.execution_id))
        done = resume_many(
            executions,
            [r.execution_id for r in rows[: body.limit]],
            user_id=owner,
            actor=caller.user_id,
            reason=body.reason,
            correlation_id=correlation_id,
        )
        return BulkResumed(
            resumed=[r.execution_id for r in done.resumed],
            not_resumed=[NotResumed(id=i, detail=why) for i, why in done.refused],
            position=max((r.position for r in done.resumed), default=None),
        )

    return await asyncio.to_thread(run)


@router.post(
    "/{execution_id}/fork",
    status_code=201,
    response_model=ForkCreated,
    responses=problems(400, 403, 404, 413),
)
async def fork_execution(
    execution_id: UUID,
    body: ForkExecution,
    caller: CallerDep,
    executions: ExecutionsDep,
    response: Response,
    correlation_id: CorrelationDep,
) -> ForkCreated:
    """A new execution (same owner, same process version) from `from_step`: the parent's
    completed steps that do not wait for it are copied with their outputs, `from_step` and
    everything after it run; `input` replaces the parent's input."""
    _actor_may_resume(caller)
    forked = await asyncio.to_thread(
        fork,
        executions,
        ForkRequest(
            parent_id=execution_id,
            from_step=body.from_step,
            caller=caller.user_id,
            owner_filter=None if caller.is_admin else caller.user_id,
            input=body.input,
            correlation_id=correlation_id,
        ),
    )
    response.headers["Location"] = f"/v1/executions/{forked.execution_id}"
    return ForkCreated(
        id=forked.execution_id,
        parent_id=execution_id,
        from_step=body.from_step,
        copied=list(forked.copied),
        position=forked.position,
    )
