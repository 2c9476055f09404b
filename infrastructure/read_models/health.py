"""How far each projection is behind the store, in events and in seconds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from agent_ledger.application.executions import Executions
from agent_ledger.infrastructure.read_models.parked import parked_counts
from agent_ledger.infrastructure.read_models.registry import (
    VERSIONED_PROJECTIONS,
    all_projection_names,
)
from agent_ledger.infrastructure.read_models.table_sets import active_version, tracking_name
from agent_ledger.infrastructure.read_models.tracking import active_position


@dataclass(frozen=True)
class ProjectionLag:
    """One projection's position against the store's head."""

    name: str
    version: int
    position: int
    head: int
    seconds: float
    parked: int = 0
    """Events this projection passed by because it could not apply them."""

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
        versions = {
            name: active_version(connection, name) if name in VERSIONED_PROJECTIONS else 1
            for name in all_projection_names()
        }
        parked = parked_counts(
            connection, [tracking_name(name, version) for name, version in versions.items()]
        )
        for name, version in versions.items():
            position = active_position(connection, name)
            if position < head and position not in oldest:
                pending = executions.read_log(after=position, limit=1)
                try:
                    stamped = getattr(pending[0].event, "timestamp", now) if pending else now
                except Exception:  # an event that cannot be decoded: the projector parks it
                    stamped = now
                age = (now - stamped).total_seconds()
                oldest[position] = max(age, 0.0)
            seconds = oldest.get(position, 0.0) if position < head else 0.0
            parked_here = parked[tracking_name(name, version)]
            lags.append(ProjectionLag(name, version, position, head, seconds, parked_here))
    return lags
