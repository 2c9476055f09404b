"""How far each projection is behind the store, in events and in seconds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from application.executions import Executions
from infrastructure.projection_tables import active_version
from infrastructure.projector import VERSIONED_PROJECTIONS, active_position, all_projection_names


@dataclass(frozen=True)
class ProjectionLag:
    """One projection's position against the store's head."""

    name: str
    version: int
    position: int
    head: int
    seconds: float

    @property
    def events(self) -> int:
        return max(self.head - self.position, 0)


def projection_lags(executions: Executions, engine: sa.Engine) -> list[ProjectionLag]:
    """Every projection's lag; seconds = age of the oldest event it has not applied yet."""
    head = executions.last_position()
    now = datetime.now(UTC)
    lags = []
    oldest: dict[int, float] = {}
    with engine.connect() as connection:
        for name in all_projection_names():
            version = active_version(connection, name) if name in VERSIONED_PROJECTIONS else 1
            position = active_position(connection, name)
            if position < head and position not in oldest:
                pending = executions.read_log(after=position, limit=1)
                stamped = getattr(pending[0].event, "timestamp", now) if pending else now
                age = (now - stamped).total_seconds()
                oldest[position] = max(age, 0.0)
            seconds = oldest.get(position, 0.0) if position < head else 0.0
            lags.append(ProjectionLag(name, version, position, head, seconds))
    return lags
