"""Request and response bodies of the HTTP API."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agent_ledger.application.thread_policies import ThreadPolicy
from agent_ledger.infrastructure.api.bounds import INT32_MAX
from agent_ledger.projections.execution_status import ExecutionStatusRow


class StartExecution(BaseModel):
    """Start an execution of a registered process."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "process": "cost_optimization",
                    "input": {"question": "Where can we cut our LLM spend?"},
                }
            ]
        },
    )

    process: str = Field(min_length=1, max_length=100)
    version: int | None = Field(default=None, ge=1, le=INT32_MAX)
    input: dict[str, Any] = Field(default_factory=dict)
    thread_id: str | None = Field(default=None, min_length=1, max_length=200)
    thread_policy: ThreadPolicy | None = Field(
        default=None,
        description="with `thread_id`, what to do while the thread has an execution that has "
        "not finished (pending, running or waiting): `enqueue` (the default) starts anyway; "
        "`reject` refuses (409 `thread-busy`); `interrupt` cancels it (reason `interrupted by "
        "<new id>`), then starts; `signal` delivers `input` as the signal `message` to one "
        "that waits for it (202), else starts",
    )

    @model_validator(mode="after")
    def _policy_needs_thread(self) -> StartExecution:
        if self.thread_policy is not None and self.thread_id is None:
            raise ValueError("thread_policy needs a thread_id")
        return self

    @field_validator("input")
    @classmethod
    def _strict_json(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Python's parser accepts NaN and Infinity; JSON (RFC 8259) does not."""
        try:
            json.dumps(value, allow_nan=False)
        except ValueError:
            raise ValueError("NaN and Infinity are not JSON numbers") from None
        return value


class CancelExecution(BaseModel):
    """Why the execution should stop."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="cancelled by request", max_length=1000)


class ExecutionCreated(BaseModel):
    id: UUID
    process: str
    version: int
    position: int = Field(description="store position of the last event; use as ?after=")
    created: bool = Field(description="false when an Idempotency-Key replayed an earlier start")


class SignalDelivered(BaseModel):
    """A start with `thread_policy: signal` whose input went to an execution of the thread,
    as the signal `message` that one of its steps waits for; nothing was started."""

    id: UUID = Field(description="the execution of the thread that received the signal")
    delivered: Literal["signal"]
    signal: Literal["message"]
    position: int = Field(description="store position of its `SignalReceived`; use as ?after=")


class Accepted(BaseModel):
    id: UUID
    position: int


class ExecutionView(BaseModel):
    """The status of one execution, from the status projection."""

    id: UUID
    user_id: str
    process: str
    process_version: int
    thread_id: str | None
    status: str
    current_steps: list[str]
    attempts: int
    retries: int
    cancellation_requested: bool
    started_at: datetime
    finished_at: datetime | None
    duration_ms: float | None
    last_event: str
    last_position: int
    version: int
    output: Any = None
    error: dict[str, Any] | None = None
    model_calls: int = Field(description="calls its model agents made to a language model")
    prompt_tokens: int | None = Field(
        description="tokens of those calls' prompts; null: no call, or one did not say"
    )
    completion_tokens: int | None = Field(
        description="tokens of those calls' answers; null: no call, or one did not say"
    )
    cost_usd: float | None = Field(
        description="what those calls cost in USD; null: no call, or one whose cost is unknown "
        "(a model without a price), never 0 for unknown",
    )

    @classmethod
    def of(cls, row: ExecutionStatusRow) -> ExecutionView:
        return cls(
            id=row.execution_id,
            user_id=row.user_id,
            process=row.process_name,
            process_version=row.process_version,
            thread_id=row.thread_id,
            status=row.status,
            current_steps=row.current_steps,
            attempts=row.attempts,
            retries=row.retries,
            cancellation_requested=row.cancellation_requested,
            started_at=row.started_at,
            finished_at=row.finished_at,
            duration_ms=row.duration_ms,
            last_event=row.last_event,
            last_position=row.last_position,
            version=row.version,
            output=row.output,
            error=row.error,
            model_calls=row.model_calls,
            prompt_tokens=row.prompt_tokens,
            completion_tokens=row.completion_tokens,
            cost_usd=row.cost_usd,
        )


class ExecutionPage(BaseModel):
    items: list[ExecutionView]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next (older) page")


class EventMessage(BaseModel):
    """One stored event, as the history API and the live tail send it."""

    position: int
    execution_id: UUID
    version: int
    type: str
    timestamp: str = Field(description="ISO 8601, UTC; the same text the live tail sends")
    user_id: str | None
    data: dict[str, Any]


class EventPage(BaseModel):
    items: list[EventMessage]
    next_after: int | None = Field(description="pass as ?after= for the next page, if any")


class ProcessView(BaseModel):
    """One registered version of a process definition."""

    name: str
    version: int
    content_hash: str
    definition: dict[str, Any]
