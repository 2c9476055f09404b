"""Webhooks: each user's events POSTed, signed, to a URL of theirs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent_ledger.application.event_log import EVENT_TYPES
from agent_ledger.infrastructure.agents.egress import EgressRefusedError, HostNotResolvedError
from agent_ledger.infrastructure.api.dependencies import (
    CallerDep,
    ExecutionsDep,
    WebhookEgressDep,
    WebhooksDep,
)
from agent_ledger.infrastructure.api.errors import ProblemError
from agent_ledger.infrastructure.api.problem_responses import AUTHENTICATED, problems
from agent_ledger.infrastructure.webhooks.book import Delivery, Webhook, WebhookNotFoundError

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=AUTHENTICATED)

WebhookName = Annotated[
    str,
    Path(
        pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$",
        description="letters, digits, `_`, `.` and `-`, starting with a letter; 64 at most",
    ),
]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {**problems(404)[404], "description": "The caller has no webhook of this name"}
}


class WebhookBody(BaseModel):
    """Where to POST which of the caller's events, and the secret that signs them."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "url": "https://hooks.example.com/agent-ledger",
                    "types": ["execution_completed", "execution_failed"],
                    "secret": "a-long-random-secret-of-yours",
                }
            ]
        },
    )

    url: str = Field(
        min_length=1,
        max_length=2000,
        pattern=r"^https?://",
        description="http:// or https://; the egress rule of HTTP agents applies",
    )
    types: list[str] = Field(
        default_factory=list,
        max_length=100,
        description="event types to deliver (`execution_completed`, ...); empty: every type",
    )
    secret: str = Field(
        min_length=16,
        max_length=200,
        description="signs each body (HMAC-SHA256); stored, never shown again",
    )

    @field_validator("types")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - EVENT_TYPES)
        if unknown:
            raise ValueError(f"unknown event types {unknown}")
        return value


class WebhookView(BaseModel):
    """A webhook (its secret is never shown) and how far it has delivered."""

    name: str
    url: str
    types: list[str] = Field(description="empty: every type")
    state: str = Field(description="`active`, or `failing` once retries ran out")
    position: int = Field(description="the last store position the receiver acknowledged")
    attempt: int = Field(description="failed tries of the next event")
    failing_since: datetime | None
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, hook: Webhook) -> WebhookView:
        return cls(
            name=hook.name,
            url=hook.url,
            types=list(hook.types),
            state=hook.state,
            position=hook.position,
            attempt=hook.attempt,
            failing_since=hook.failing_since,
            next_attempt_at=hook.next_attempt_at,
            last_error=hook.last_error,
            created_at=hook.created_at,
            updated_at=hook.updated_at,
        )


class DeliveryView(BaseModel):
    """One try of one event."""

    position: int
    event_type: str
    attempt: int
    status_code: int | None = Field(description="the receiver's answer; null: none")
    error: str | None = Field(description="why it failed; null: delivered")
    duration_ms: float
    at: datetime

    @classmethod
    def of(cls, delivery: Delivery) -> DeliveryView:
        return cls(**delivery.__dict__)


class RedeliverBody(BaseModel):
    """From which position to deliver again; absent: from the next unacknowledged event."""

    model_config = ConfigDict(extra="forbid")

    from_position: int | None = Field(default=None, ge=1, le=2**53, strict=True)


@contextmanager
def _problems() -> Iterator[None]:
    try:
        yield
    except WebhookNotFoundError as error:
        raise ProblemError(404, "not-found", "Webhook not found", str(error)) from None


@router.put(
    "/{name}",
    response_model=WebhookView,
    responses={
        201: {"model": WebhookView, "description": "The webhook was defined"},
        **problems(400, 413),
    },
)
def put_webhook(
    name: WebhookName,
    body: WebhookBody,
    caller: CallerDep,
    webhooks: WebhooksDep,
    egress: WebhookEgressDep,
    executions: ExecutionsDep,
    response: Response,
) -> WebhookView:
    """Define a webhook (201: it delivers events recorded from now on) or change one (200);
    either makes it active again. 422 `webhook-url-refused` when the egress rule refuses
    its URL."""
    try:
        egress.check(body.url)
    except (EgressRefusedError, HostNotResolvedError) as error:
        raise ProblemError(
            422, "webhook-url-refused", "Webhook URL refused", str(error), field="url"
        ) from None
    hook, created = webhooks.put(
        caller.user_id,
        name,
        url=body.url,
        types=body.types,
        secret=body.secret,
        head=executions.last_position(),
    )
    response.status_code = 201 if created else 200
    return WebhookView.of(hook)


@router.get("", response_model=list[WebhookView])
def list_webhooks(caller: CallerDep, webhooks: WebhooksDep) -> list[WebhookView]:
    """The caller's webhooks, by name."""
    return [WebhookView.of(hook) for hook in webhooks.of_user(caller.user_id)]


@router.get("/{name}", response_model=WebhookView, responses=NOT_FOUND)
def get_webhook(name: WebhookName, caller: CallerDep, webhooks: WebhooksDep) -> WebhookView:
    """One of the caller's webhooks; another user's does not exist for them."""
    with _problems():
        return WebhookView.of(webhooks.get(caller.user_id, name))


@router.delete("/{name}", status_code=204, response_class=Response, responses=NOT_FOUND)
def delete_webhook(name: WebhookName, caller: CallerDep, webhooks: WebhooksDep) -> None:
    """Delete a webhook and its delivery log: nothing more is delivered."""
    with _problems():
        webhooks.delete(caller.user_id, name)


@router.get("/{name}/deliveries", response_model=list[DeliveryView], responses=NOT_FOUND)
def list_deliveries(
    name: WebhookName,
    caller: CallerDep,
    webhooks: WebhooksDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeliveryView]:
    """The webhook's newest tries, newest first: position, type, attempt, answer, time."""
    with _problems():
        return [DeliveryView.of(d) for d in webhooks.deliveries(caller.user_id, name, limit)]


@router.post(
    "/{name}/redeliver",
    status_code=202,
    response_model=WebhookView,
    responses={**NOT_FOUND, **problems(400, 413)},
)
def redeliver(
    name: WebhookName,
    caller: CallerDep,
    webhooks: WebhooksDep,
    body: RedeliverBody | None = None,
) -> WebhookView:
    """Make the webhook active again and deliver from its next unacknowledged event, or
    from `from_position` (events from there on are delivered again)."""
    from_position = None if body is None else body.from_position
    with _problems():
        return WebhookView.of(webhooks.redeliver(caller.user_id, name, from_position))
