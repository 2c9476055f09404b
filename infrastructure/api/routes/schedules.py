"""Schedules: each user's processes started on a cron, and started by hand."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent_ledger.application.cron import Cron, time_zone
from agent_ledger.application.scheduler import ScheduleBusyError
from agent_ledger.application.schedules import (
    InvalidScheduleError,
    ScheduleNotFoundError,
    ScheduleRow,
)
from agent_ledger.domain.schedules import SCHEDULE_NAME_PATTERN, Overlap, ScheduleDefinition
from agent_ledger.infrastructure.api.attribution import CorrelationDep, actor_of
from agent_ledger.infrastructure.api.bounds import INT32_MAX
from agent_ledger.infrastructure.api.dependencies import CallerDep, SchedulesDep, SettingsDep
from agent_ledger.infrastructure.api.errors import ProblemError
from agent_ledger.infrastructure.api.problem_responses import AUTHENTICATED, problems

router = APIRouter(prefix="/v1/schedules", tags=["schedules"], responses=AUTHENTICATED)

UPCOMING = 5
"""How many next fire times a schedule shows."""
ScheduleName = Annotated[
    str,
    Path(
        pattern=f"^{SCHEDULE_NAME_PATTERN.pattern}$",
        description="letters, digits, `_`, `.` and `-`, starting with a letter; 64 at most",
    ),
]


def _problem(status: int, description: str) -> dict[int | str, dict[str, Any]]:
    """The problem `status` documented with what it means for these routes."""
    return {status: {**problems(status)[status], "description": description}}


NOT_FOUND = _problem(404, "The caller has no schedule of this name (`not-found`)")
CHANGED = _problem(409, "It kept changing while ticks were recorded: retry (`concurrent-change`)")


class ScheduleBody(BaseModel):
    """What to start, on which cron, in which time zone, and what a tick does meanwhile."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "process": "cost_optimization",
                    "input": {"question": "Where can we cut our LLM spend?"},
                    "cron": "0 9 * * 1-5",
                    "timezone": "Europe/Paris",
                    "overlap": "skip",
                }
            ]
        },
    )

    process: str = Field(min_length=1, max_length=100)
    version: int | None = Field(
        default=None,
        ge=1,
        le=INT32_MAX,
        strict=True,
        description="a fixed version; absent: the latest",
    )
    input: dict[str, Any] = Field(default_factory=dict)
    cron: str = Field(
        min_length=1,
        max_length=200,
        description="5 fields (minute hour day month weekday), 6 with seconds first "
        "(`*/10 * * * * *`), or `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`",
    )
    timezone: str = Field(
        default="UTC", min_length=1, max_length=64, description="IANA, e.g. `Europe/Paris`"
    )
    paused: bool = Field(default=False, strict=True, description="paused, its ticks start nothing")
    overlap: Overlap = Field(
        default=Overlap.SKIP,
        description="while its latest execution has not finished, a tick is `skip`ped "
        "(recorded), starts one more (`allow`), or cancels it first (`cancel_previous`)",
    )

    @field_validator("timezone")
    @classmethod
    def _iana(cls, value: str) -> str:
        time_zone(value)  # its CronError is a ValueError
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        Cron.parse(value)  # its CronError is a ValueError
        return value

    @field_validator("input")
    @classmethod
    def _strict_json(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Python's parser accepts NaN and Infinity; JSON (RFC 8259) does not."""
        try:
            json.dumps(value, allow_nan=False)
        except ValueError:
            raise ValueError("NaN and Infinity are not JSON numbers") from None
        return value

    def definition(self) -> ScheduleDefinition:
        return ScheduleDefinition(**self.model_dump())


class ScheduleView(BaseModel):
    """A schedule, its next fire times and the last tick it handled."""

    name: str
    process: str
    version: int | None
    input: dict[str, Any]
    cron: str
    timezone: str
    paused: bool
    overlap: Overlap
    next_fire_times: list[datetime] = Field(
        description=f"the next {UPCOMING} ticks, in its time zone; none while paused"
    )
    last_tick: datetime | None = Field(description="the latest tick handled (fired or skipped)")
    last_execution_id: UUID | None = Field(description="the latest execution it started")
    created_at: datetime
    updated_at: datetime
    updated_by: str = Field(description="who defined or changed it last")

    @classmethod
    def of(cls, row: ScheduleRow) -> ScheduleView:
        definition = row.definition
        now = datetime.now(UTC)
        upcoming = (
            [] if definition.paused else row.cron().upcoming(max(now, row.reference), UPCOMING)
        )
        return cls(
            name=row.name,
            **definition.plain(),
            next_fire_times=upcoming,
            last_tick=row.last_tick,
            last_execution_id=row.last_execution_id,
            created_at=row.created_at,
            updated_at=row.updated_at,
            updated_by=row.updated_by,
        )


class ScheduleTriggered(BaseModel):
    """A start asked for by hand."""

    schedule: str
    at: datetime = Field(description="its tick time: the key is `schedule:<user>:<name>:<at>`")
    execution_id: UUID
    cancelled: UUID | None = Field(description="`cancel_previous`: the execution it cancelled")
    position: int = Field(description="store position of the start; use as ?after=")


@router.put(
    "/{name}",
    response_model=ScheduleView,
    responses={
        201: {"model": ScheduleView, "description": "The schedule was defined"},
        **problems(400, 413),
        **CHANGED,
    },
)
def put_schedule(
    name: ScheduleName,
    body: ScheduleBody,
    caller: CallerDep,
    schedules: SchedulesDep,
    settings: SettingsDep,
    response: Response,
    correlation_id: CorrelationDep,
) -> ScheduleView:
    """Define a schedule (201) or change it (200; an unchanged one records nothing)."""
    _check_input_size(body, settings.max_input_bytes)
    with _problems():
        put = schedules.book.put_schedule(
            caller.user_id,
            name,
            body.definition(),
            by=actor_of(caller),
            correlation_id=correlation_id,
        )
    response.status_code = 201 if put.created else 200
    return ScheduleView.of(put.row)


@router.get("", response_model=list[ScheduleView])
def list_schedules(caller: CallerDep, schedules: SchedulesDep) -> list[ScheduleView]:
    """The caller's schedules, by name, with their next fire times."""
    return [ScheduleView.of(row) for row in schedules.book.list_schedules(caller.user_id)]


@router.get("/{name}", response_model=ScheduleView, responses=NOT_FOUND)
def get_schedule(name: ScheduleName, caller: CallerDep, schedules: SchedulesDep) -> ScheduleView:
    """One of the caller's schedules; another user's does not exist for them."""
    with _problems():
        return ScheduleView.of(schedules.book.get_schedule(caller.user_id, name))


@router.delete(
    "/{name}", status_code=204, response_class=Response, responses={**NOT_FOUND, **CHANGED}
)
def delete_schedule(
    name: ScheduleName, caller: CallerDep, schedules: SchedulesDep, correlation_id: CorrelationDep
) -> None:
    """Delete a schedule: its ticks stop; its history stays recorded."""
    with _problems():
        schedules.book.delete_schedule(
            caller.user_id, name, by=actor_of(caller), correlation_id=correlation_id
        )


@router.post(
    "/{name}/trigger",
    status_code=201,
    response_model=ScheduleTriggered,
    responses={
        **NOT_FOUND,
        **_problem(
            409,
            "`overlap: skip` and its latest execution has not finished (`schedule-busy`), or "
            "it kept changing (`concurrent-change`)",
        ),
    },
)
def trigger_schedule(
    name: ScheduleName,
    caller: CallerDep,
    schedules: SchedulesDep,
    response: Response,
    correlation_id: CorrelationDep,
) -> ScheduleTriggered:
    """Start the schedule's process now, paused or not; its `overlap` applies."""
    with _problems():
        triggered = schedules.scheduler("api").trigger(
            caller.user_id, name, by=actor_of(caller), correlation_id=correlation_id
        )
    response.headers["Location"] = f"/v1/executions/{triggered.execution_id}"
    return ScheduleTriggered(
        schedule=name,
        at=triggered.at,
        execution_id=triggered.execution_id,
        cancelled=triggered.cancelled,
        position=triggered.position,
    )


def _check_input_size(body: ScheduleBody, limit: int) -> None:
    size = len(json.dumps(body.input, separators=(",", ":")).encode())
    if size > limit:
        raise ProblemError(
            413,
            "input-too-large",
            "Input too large",
            f"the input is {size} bytes; the limit is {limit}",
            limit=limit,
        )


@contextmanager
def _problems() -> Iterator[None]:
    """The schedules' own errors as problems (the others are errors.py's)."""
    try:
        yield
    except ScheduleNotFoundError as error:
        raise ProblemError(404, "not-found", "Schedule not found", str(error)) from None
    except InvalidScheduleError as error:
        kind = "unknown-process" if error.field in ("process", "version") else "invalid-schedule"
        raise ProblemError(
            422, kind, "Invalid schedule", error.problem, field=f"body.{error.field}"
        ) from None
    except ScheduleBusyError as error:
        raise ProblemError(
            409, "schedule-busy", "The schedule's execution is under way", str(error)
        ) from None
