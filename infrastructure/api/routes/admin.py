"""Operators' views of the service's own health: events the projections passed by."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from agent_ledger.infrastructure.api.dependencies import CallerDep, ReadEngineDep
from agent_ledger.infrastructure.api.problem_responses import AUTHENTICATED, problems
from agent_ledger.infrastructure.auth.tokens import PermissionDeniedError
from agent_ledger.infrastructure.read_models.parked import ParkedEvent, parked
from agent_ledger.infrastructure.read_models.table_sets import projection_version

router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=AUTHENTICATED)


class ParkedEventView(BaseModel):
    """A stored event a projection could not apply; the projection went on without it."""

    projection: str
    version: int = Field(description="the projection's table version that parked it")
    position: int
    event_type: str
    execution_id: UUID | None
    error: str
    first_seen: datetime
    last_tried: datetime
    tries: int

    @classmethod
    def of(cls, event: ParkedEvent) -> ParkedEventView:
        return cls(
            projection=event.projection,
            version=projection_version(event.tracking_name)[1],
            position=event.position,
            event_type=event.event_type,
            execution_id=event.execution_id,
            error=event.error,
            first_seen=event.first_seen,
            last_tried=event.last_tried,
            tries=event.tries,
        )


class ParkedEventPage(BaseModel):
    items: list[ParkedEventView]
    retry: str = Field(
        description="how to apply one again once its cause is fixed",
        default="agent-ledger projections parked --retry POSITION",
    )


@router.get("/parked", response_model=ParkedEventPage, responses=problems(403))
def list_parked(
    caller: CallerDep,
    read_engine: ReadEngineDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ParkedEventPage:
    """Events a projection could not apply (admins), oldest position first."""
    if not caller.is_admin:
        raise PermissionDeniedError("only admins see parked events")
    with read_engine.connect() as connection:
        events = parked(connection, limit=limit)
    return ParkedEventPage(items=[ParkedEventView.of(e) for e in events])
