"""Audit: state at a version or time, chain verification, export bundles, the read log."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from agent_ledger.application.audit import Audit
from agent_ledger.infrastructure.api.attribution import CorrelationDep, record_auditor_read
from agent_ledger.infrastructure.api.audit_schemas import (
    AuditReadPage,
    AuditReadView,
    ExecutionState,
    VerificationView,
)
from agent_ledger.infrastructure.api.bounds import INT64_MAX
from agent_ledger.infrastructure.api.dependencies import (
    CallerDep,
    ExecutionsDep,
    ReadEngineDep,
    SettingsDep,
)
from agent_ledger.infrastructure.api.errors import ProblemError
from agent_ledger.infrastructure.api.instants import Instant
from agent_ledger.infrastructure.api.problem_responses import AUTHENTICATED, problems
from agent_ledger.infrastructure.audit.export import bundle_line
from agent_ledger.infrastructure.audit.service import open_audit
from agent_ledger.infrastructure.auth.tokens import PermissionDeniedError

router = APIRouter(tags=["audit"], responses=AUTHENTICATED)


def get_audit(
    settings: SettingsDep, executions: ExecutionsDep, read_engine: ReadEngineDep
) -> Audit:
    return open_audit(settings, executions, read_engine)


AuditDep = Annotated[Audit, Depends(get_audit)]


@router.get(
    "/v1/executions/{execution_id}/state",
    response_model=ExecutionState,
    responses=problems(400, 404),
)
def get_state(
    execution_id: UUID,
    caller: CallerDep,
    audit: AuditDep,
    correlation_id: CorrelationDep,
    version: Annotated[
        int | None, Query(ge=1, le=INT64_MAX, description="state after this event")
    ] = None,
    at: Annotated[Instant | None, Query(description="state as of this instant (RFC 3339)")] = None,
) -> ExecutionState:
    """The execution as it was, rebuilt from its events (and snapshots); no agent re-runs."""
    if version is not None and at is not None:
        raise ProblemError(
            400, "invalid-request", "Choose one", "give either version or at, not both"
        )
    execution = audit.get_state(execution_id, owner=caller.owner_filter, version=version, at=at)
    asked = {"version": version, "at": at.isoformat() if at else None}
    record_auditor_read(audit.reads, caller, "state", execution_id, correlation_id, **asked)
    return ExecutionState.of(execution)


@router.get(
    "/v1/executions/{execution_id}/verify",
    response_model=VerificationView,
    responses=problems(404),
)
def verify_execution(
    execution_id: UUID,
    caller: CallerDep,
    audit: AuditDep,
    correlation_id: CorrelationDep,
) -> VerificationView:
    """Recompute the hash chain: `ok`, or the first broken link and why."""
    verification = audit.verify(execution_id, owner=caller.owner_filter)
    record_auditor_read(
        audit.reads, caller, "verify", execution_id, correlation_id, ok=verification.ok
    )
    return VerificationView.of(verification)


@router.get(
    "/v1/executions/{execution_id}/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}, **problems(404)},
)
def export_execution(
    execution_id: UUID,
    caller: CallerDep,
    audit: AuditDep,
    correlation_id: CorrelationDep,
) -> StreamingResponse:
    """The self-contained JSON Lines bundle; check it with `agent-ledger audit verify FILE`."""
    lines = list(audit.export(execution_id, owner=caller.owner_filter))
    record_auditor_read(audit.reads, caller, "export", execution_id, correlation_id)
    return StreamingResponse(
        _ndjson(lines),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="{execution_id}.jsonl"'},
    )


@router.get("/v1/audit/reads", response_model=AuditReadPage, responses=problems(403))
def list_audit_reads(
    caller: CallerDep,
    audit: AuditDep,
    actor: str | None = None,
    execution_id: UUID | None = None,
    after: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditReadPage:
    """Auditors' reads of history, state, verification and exports (admins only)."""
    if not caller.is_admin:
        raise PermissionDeniedError("only admins may list the audit log")
    reads = audit.reads.list(actor=actor, execution_id=execution_id, after=after, limit=limit)
    items = [AuditReadView.of(r) for r in reads]
    return AuditReadPage(items=items, next_after=items[-1].id if len(items) == limit else None)


def _ndjson(lines: list[dict[str, Any]]) -> Iterator[str]:
    for document in lines:
        yield bundle_line(document)
