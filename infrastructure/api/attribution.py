"""Who acts, under which correlation id; auditors' reads are written to the audit log."""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, Header

from agent_ledger.application.audit import AuditRead, AuditReadLog
from agent_ledger.infrastructure.auth.tokens import Caller


def actor_of(caller: Caller) -> str:
    """The caller as events and the audit log name it: `role:subject`."""
    role = "admin" if caller.is_admin else "auditor" if caller.is_auditor else "user"
    return f"{role}:{caller.user_id}"


async def get_correlation_id(
    correlation: Annotated[str | None, Header(alias="X-Correlation-ID", max_length=200)] = None,
    request: Annotated[str | None, Header(alias="X-Request-ID", max_length=200)] = None,
) -> str:
    """The request's correlation id: `X-Correlation-ID`, else `X-Request-ID`, else a new one."""
    return correlation or request or uuid.uuid4().hex


CorrelationDep = Annotated[str, Depends(get_correlation_id)]


def record_auditor_read(
    reads: AuditReadLog,
    caller: Caller,
    action: str,
    execution_id: UUID | None,
    correlation_id: str,
    **detail: Any,
) -> None:
    """Write an auditor's (or admin's) read to the audit log; users' own reads are not logged."""
    if not caller.is_auditor:
        return
    read = AuditRead(actor_of(caller), action, execution_id, correlation_id, detail=detail)
    reads.record(read)
