"""Each API call as data (method, path, query, body, how to read the answer), shared by the
sync and async clients so that both send exactly the same requests."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

import httpx

from agent_ledger_client.errors import api_error
from agent_ledger_client.schemas import (
    Accepted,
    ApiModel,
    Event,
    Execution,
    ExecutionState,
    ExecutionSummary,
    Forked,
    SignalAccepted,
    SignalDelivered,
    Started,
    Verification,
)

T = TypeVar("T")
M = TypeVar("M", bound=ApiModel)
AUTO = "auto"
"""`idempotency_key=AUTO` (the default): a fresh key per call, reused by its retries."""


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and the reading of its answer."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def retry_safe(self) -> bool:
        """A GET, or a command with an Idempotency-Key: sending it again changes nothing."""
        return self.method == "GET" or "Idempotency-Key" in self.headers


def check(response: httpx.Response) -> httpx.Response:
    """The response, or its problem as an `ApiError`."""
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            body = None
        raise api_error(response.status_code, body, response.text)
    return response


def model(kind: type[M]) -> Callable[[httpx.Response], M]:
    return lambda response: kind.model_validate(check(response).json())


def _key(idempotency_key: str | None) -> dict[str, str]:
    if idempotency_key is None:
        return {}
    return {"Idempotency-Key": str(uuid.uuid4()) if idempotency_key == AUTO else idempotency_key}


def _started(response: httpx.Response) -> Started | SignalDelivered:
    body = check(response).json()
    return (
        SignalDelivered.model_validate(body)
        if response.status_code == 202
        else Started.model_validate(body)
    )


def _params(**values: Any) -> dict[str, Any]:
    """Query parameters without the unset ones, times as ISO 8601."""
    return {
        k: v.isoformat() if isinstance(v, datetime) else str(v)
        for k, v in values.items()
        if v is not None
    }


def start(
    process: str,
    input: dict[str, Any] | None,
    idempotency_key: str | None,
    **options: Any,
) -> Call[Started | SignalDelivered]:
    body = {"process": process, "input": input or {}}
    body.update({k: v for k, v in options.items() if v is not None})
    return Call("POST", "/v1/executions", _started, json=body, headers=_key(idempotency_key))


def get(execution_id: UUID | str, after: int | None = None) -> Call[Execution]:
    return Call("GET", f"/v1/executions/{execution_id}", model(Execution), _params(after=after))


def page(cursor: str | None, **filters: Any) -> Call[tuple[list[ExecutionSummary], str | None]]:
    def read(response: httpx.Response) -> tuple[list[ExecutionSummary], str | None]:
        body = check(response).json()
        items = [ExecutionSummary.model_validate(item) for item in body["items"]]
        return items, body["next_cursor"]

    return Call("GET", "/v1/executions", read, _params(cursor=cursor, **filters))


def events(
    execution_id: UUID | str, after: int, limit: int
) -> Call[tuple[list[Event], int | None]]:
    def read(response: httpx.Response) -> tuple[list[Event], int | None]:
        body = check(response).json()
        return [Event.model_validate(item) for item in body["items"]], body["next_after"]

    path = f"/v1/executions/{execution_id}/events"
    return Call("GET", path, read, _params(after=after, limit=limit))


def cancel(execution_id: UUID | str, reason: str | None) -> Call[Accepted]:
    body = {"reason": reason} if reason is not None else {}
    return Call("POST", f"/v1/executions/{execution_id}/cancel", model(Accepted), json=body)


def signal(
    execution_id: UUID | str, name: str, payload: Any, idempotency_key: str | None
) -> Call[SignalAccepted]:
    path = f"/v1/executions/{execution_id}/signals/{name}"
    return Call(
        "POST",
        path,
        model(SignalAccepted),
        json={"payload": payload},
        headers=_key(idempotency_key),
    )


def resume(execution_id: UUID | str, reason: str | None) -> Call[Accepted]:
    body = {"reason": reason} if reason is not None else {}
    return Call("POST", f"/v1/executions/{execution_id}/resume", model(Accepted), json=body)


def fork(execution_id: UUID | str, from_step: str, input: dict[str, Any] | None) -> Call[Forked]:
    body: dict[str, Any] = {"from_step": from_step}
    if input is not None:
        body["input"] = input
    return Call("POST", f"/v1/executions/{execution_id}/fork", model(Forked), json=body)


def state(
    execution_id: UUID | str, version: int | None, at: datetime | str | None
) -> Call[ExecutionState]:
    path = f"/v1/executions/{execution_id}/state"
    return Call("GET", path, model(ExecutionState), _params(version=version, at=at))


def verify(execution_id: UUID | str) -> Call[Verification]:
    return Call("GET", f"/v1/executions/{execution_id}/verify", model(Verification))


def export(execution_id: UUID | str) -> Call[str]:
    return Call("GET", f"/v1/executions/{execution_id}/export", lambda r: check(r).text)
