"""Typed views of the API's JSON bodies (pydantic), named after the server's OpenAPI schemas.

Each model declares the fields of its schema in `/openapi.json` (the SDK's tests check
that they agree) and keeps any field a newer server adds (`extra="allow"`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict

TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "timed_out"})
TERMINAL_EVENTS = (
    "execution_completed",
    "execution_failed",
    "execution_cancelled",
    "execution_timed_out",
)


class ApiModel(BaseModel):
    """A response body; `schema_name` is its schema in the server's OpenAPI document."""

    model_config = ConfigDict(extra="allow", frozen=True)
    schema_name: ClassVar[str] = ""


class Event(ApiModel):
    """One stored event, as `GET .../events` and the live tail carry it."""

    schema_name: ClassVar[str] = "EventMessage"
    position: int
    execution_id: UUID
    version: int
    type: str
    timestamp: datetime
    user_id: str | None
    data: dict[str, Any]


class Step(ApiModel):
    """A step's row in an execution's status view."""

    schema_name: ClassVar[str] = "agent_ledger__infrastructure__api__read_model_schemas__StepView"
    id: str
    status: str
    awaiting: str | None = None
    attempt: int
    retries: int
    agent: str | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: float | None
    error: dict[str, Any] | None
    skip_reason: str | None
    last_event: str
    last_position: int
    copied: bool = False


class ExecutionSummary(ApiModel):
    """An execution as `GET /v1/executions` lists it."""

    schema_name: ClassVar[str] = "ExecutionSummary"
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
    model_calls: int
    prompt_tokens: int | None
    completion_tokens: int | None
    cost_usd: float | None
    parent_id: UUID | None = None
    forked_from_step: str | None = None
    resumes: int = 0
    resumed_at: datetime | None = None

    @property
    def finished(self) -> bool:
        """Whether it has ended (completed, failed, cancelled or timed out)."""
        return self.status in TERMINAL_STATUSES


class Execution(ExecutionSummary):
    """An execution's status view with its steps and forks (`GET /v1/executions/{id}`)."""

    schema_name: ClassVar[str] = "ExecutionDetail"
    steps: list[Step]
    children: list[dict[str, Any]] = []
    more_children: bool = False


class Started(ApiModel):
    """`POST /v1/executions`: `created` is false when an idempotent repeat was replayed."""

    schema_name: ClassVar[str] = "ExecutionCreated"
    id: UUID
    process: str
    version: int
    position: int
    created: bool


class SignalDelivered(ApiModel):
    """A start with `thread_policy: signal` that was delivered to a waiting execution."""

    schema_name: ClassVar[str] = "SignalDelivered"
    id: UUID
    delivered: str
    signal: str
    position: int


class Accepted(ApiModel):
    """A command taken (cancel, resume): the execution and the store position of its event."""

    schema_name: ClassVar[str] = "Accepted"
    id: UUID
    position: int


class SignalAccepted(ApiModel):
    """`POST /v1/executions/{id}/signals/{name}`."""

    schema_name: ClassVar[str] = "SignalAccepted"
    id: UUID
    signal: str
    position: int


class Forked(ApiModel):
    """`POST /v1/executions/{id}/fork`: the new execution and the steps copied into it."""

    schema_name: ClassVar[str] = "ForkCreated"
    id: UUID
    parent_id: UUID
    from_step: str
    copied: list[str]
    position: int


class ExecutionState(ApiModel):
    """The state rebuilt from events at a version or a time (`GET .../state`)."""

    schema_name: ClassVar[str] = "ExecutionState"
    id: UUID
    version: int
    as_of: datetime
    user_id: str
    process: str
    process_version: int
    thread_id: str | None
    status: str
    steps: dict[str, Any]
    output: Any = None
    error: dict[str, Any] | None = None
    cancellation: dict[str, Any] | None = None
    chain_head: str


class BrokenLink(ApiModel):
    """Where a hash chain breaks."""

    schema_name: ClassVar[str] = "BrokenLink"
    version: int
    position: int | None
    reason: str


class Verification(ApiModel):
    """`GET .../verify`: `ok`, or the first broken link."""

    schema_name: ClassVar[str] = "VerificationView"
    execution_id: UUID
    ok: bool
    events: int
    head_version: int | None
    head_hash: str | None
    broken: BrokenLink | None
    checkpoint: dict[str, Any] | None


MODELS: tuple[type[ApiModel], ...] = (
    Event,
    Step,
    ExecutionSummary,
    Execution,
    Started,
    SignalDelivered,
    Accepted,
    SignalAccepted,
    Forked,
    ExecutionState,
    BrokenLink,
    Verification,
)
