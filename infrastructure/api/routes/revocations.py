"""Token revocation: admins void a subject's tokens, which ends their open subscriptions."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from agent_ledger.infrastructure.api.dependencies import CallerDep
from agent_ledger.infrastructure.api.problem_responses import AUTHENTICATED, problems
from agent_ledger.infrastructure.api.tail_session import TailService
from agent_ledger.infrastructure.auth.tokens import PermissionDeniedError

router = APIRouter(prefix="/v1/auth", tags=["auth"], responses=AUTHENTICATED)


class RevocationRequest(BaseModel):
    """Whose tokens to void."""

    sub: str = Field(min_length=1, max_length=200, description="the subject (user id)")


class Revocation(BaseModel):
    """Tokens of `sub` issued at or before `revoked_at` are no longer honoured."""

    sub: str
    revoked_at: datetime


@router.post("/revocations", status_code=201, responses=problems(400, 403, 413))
async def revoke(body: RevocationRequest, caller: CallerDep, request: Request) -> Revocation:
    """Revoke every token of a subject issued up to now (admin only)."""
    if not caller.is_admin:
        raise PermissionDeniedError("only admins may revoke tokens")
    service: TailService = request.app.state.tail
    revoked_at = await service.revoke(body.sub)
    return Revocation(sub=body.sub, revoked_at=datetime.fromtimestamp(revoked_at, UTC))
