"""Events a projection cannot apply are parked, so that one stored event never stops it.

The store is append-only: an event that a projection fails on (written by an older
version without today's validation, or one that meets a projection bug) fails the same
way on every try. After a batch fails, the projection applies the events one by one,
each in a savepoint; one that fails for a reason of its own (not a lost connection or a
concurrent projector) is recorded here, in the transaction that moves the tracking row
past it, and the projection goes on. Operators see parked events in `/readyz`,
`/metrics`, `GET /v1/admin/parked` and `agent-ledger projections parked`, and retry one
once the cause is fixed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import sqlalchemy as sa

from application.executions import LoggedEvent
from infrastructure.tables import parked_events

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 1000


@dataclass(frozen=True)
class ParkedEvent:
    """One parked event of one projection (version)."""

    projection: str
    tracking_name: str
    position: int
    event_type: str
    execution_id: UUID | None
    error: str
    first_seen: datetime
    last_tried: datetime
    tries: int


def describe(error: BaseException) -> str:
    """A one-paragraph reason: the driver's message (not the SQL and its parameters, which
    may hold the event's data), printable, bounded."""
    cause = error.orig if isinstance(error, sa.exc.DBAPIError) and error.orig else error
    text = " ".join(f"{type(cause).__name__}: {cause}".split())  # one line
    text = text.encode("utf-8", "backslashreplace").decode().replace("\x00", "\\x00")
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def park(
    connection: sa.Connection,
    projection: str,
    tracking_name: str,
    logged: LoggedEvent,
    error: BaseException,
) -> None:
    """Record that `projection` passed `logged` by (in the caller's transaction)."""
    now = datetime.now(UTC)
    reason = describe(error)
    log.error(
        "projection %s parked the event at position %d (%s): %s; it goes on without it "
        "(see `agent-ledger projections parked`)",
        tracking_name,
        logged.position,
        logged.type,
        reason,
    )
    existing = connection.execute(
        sa.select(parked_events.c.tries).where(
            parked_events.c.tracking_name == tracking_name,
            parked_events.c.position == logged.position,
        )
    ).scalar()
    if existing is not None:
        connection.execute(
            sa.update(parked_events)
            .where(
                parked_events.c.tracking_name == tracking_name,
                parked_events.c.position == logged.position,
            )
            .values(error=reason, last_tried=now, tries=existing + 1)
        )
        return
    connection.execute(
        sa.insert(parked_events).values(
            tracking_name=tracking_name,
            position=logged.position,
            projection=projection,
            event_type=logged.type[:60],
            execution_id=logged.originator_id,
            error=reason,
            first_seen=now,
            last_tried=now,
            tries=1,
        )
    )


def parked(
    connection: sa.Connection,
    tracking_names: list[str] | None = None,
    *,
    position: int | None = None,
    limit: int = 1000,
) -> list[ParkedEvent]:
    """Parked events, oldest position first; of some tracking names, or at one position."""
    query = sa.select(parked_events).order_by(
        parked_events.c.position, parked_events.c.tracking_name
    )
    if tracking_names is not None:
        query = query.where(parked_events.c.tracking_name.in_(tracking_names))
    if position is not None:
        query = query.where(parked_events.c.position == position)
    return [
        ParkedEvent(
            projection=row.projection,
            tracking_name=row.tracking_name,
            position=int(row.position),
            event_type=row.event_type,
            execution_id=row.execution_id,
            error=row.error,
            first_seen=row.first_seen,
            last_tried=row.last_tried,
            tries=int(row.tries),
        )
        for row in connection.execute(query.limit(limit))
    ]


def parked_counts(connection: sa.Connection, tracking_names: list[str]) -> dict[str, int]:
    """How many events each of these tracking names has parked (0 for none)."""
    rows = connection.execute(
        sa.select(parked_events.c.tracking_name, sa.func.count())
        .where(parked_events.c.tracking_name.in_(tracking_names))
        .group_by(parked_events.c.tracking_name)
    )
    return {name: 0 for name in tracking_names} | {name: int(count) for name, count in rows}


def unpark(connection: sa.Connection, tracking_name: str, position: int) -> None:
    connection.execute(
        sa.delete(parked_events).where(
            parked_events.c.tracking_name == tracking_name,
            parked_events.c.position == position,
        )
    )


def forget(connection: sa.Connection, tracking_name: str) -> None:
    """Drop the parked events of a table version that no longer exists."""
    connection.execute(
        sa.delete(parked_events).where(parked_events.c.tracking_name == tracking_name)
    )
