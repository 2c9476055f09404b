"""Signals: messages to a running execution that a `wait_for_signal` step takes."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Body, Header, Path, Response
from pydantic import BaseModel, Field

from agent_ledger.application.signals import SignalRequest, send_signal
from agent_ledger.domain.process_validation import NAME_PATTERN
from agent_ledger.infrastructure.api.attribution import CorrelationDep
from agent_ledger.infrastructure.api.dependencies import CallerDep, ExecutionsDep
from agent_ledger.infrastructure.api.problem_responses import AUTHENTICATED, problems
from agent_ledger.infrastructure.auth.tokens import PermissionDeniedError

router = APIRouter(prefix="/v1/executions", tags=["signals"], responses=AUTHENTICATED)

SignalName = Annotated[
    str, Path(pattern=f"^{NAME_PATTERN.pattern}$", description="the signal's name")
]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]


class SendSignal(BaseModel):
    """What a signal carries: the output of the step that takes it."""

    payload: dict[str, Any] = Field(default_factory=dict)


class SignalAccepted(BaseModel):
    id: UUID
    signal: str
    position: int


@router.post(
    "/{execution_id}/signals/{name}",
    status_code=202,
    response_model=SignalAccepted,
    responses={
        **problems(400, 403, 404, 409, 413),
    },
)
async def send(
    execution_id: UUID,
    name: SignalName,
    caller: CallerDep,
    executions: ExecutionsDep,
    response: Response,
    correlation_id: CorrelationDep,
    body: Annotated[SendSignal | None, Body()] = None,
    idempotency_key: IdempotencyKey = None,
) -> SignalAccepted:
    """Record a signal (`SignalReceived`); the step waiting for it, now or later, takes it.

    The owner may send it when the step allows `user`, an admin when it allows `admin`;
    auditors never. A payload that does not fit the step's `schema` is 422 and nothing is
    recorded; a finished execution is 409. Repeat safely with the same `Idempotency-Key`.
    """
    if not {"user", "admin"} & caller.roles:
        raise PermissionDeniedError("auditors read executions; they do not send signals")
    request = SignalRequest(
        execution_id=execution_id,
        name=name,
        payload=(body or SendSignal()).payload,
        caller=caller.user_id,
        roles=caller.roles,
        idempotency_key=idempotency_key,
        correlation_id=correlation_id,
    )
    sent = await asyncio.to_thread(send_signal, executions, request)
    if sent.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return SignalAccepted(id=execution_id, signal=name, position=sent.position)
