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

from agent_ledger.application.event_log import LoggedEvent
from agent_ledger.application.executions import Executions
from agent_ledger.infrastructure.feed.reconnect import unavailable
from agent_ledger.infrastructure.read_models.registry import VERSIONED_PROJECTIONS, apply_events
from agent_ledger.infrastructure.read_models.table_sets import (
    TableSet,
    projection_version,
    table_set,
)
from agent_ledger.infrastructure.read_models.tables import parked_events, projection_tracking
from agent_ledger.infrastructure.read_models.tracking import TrackingConflictError

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


def is_transient(error: BaseException) -> bool:
    """Whether a failed batch says nothing about its events: the database went away, or
    another projector moved on. Such batches are retried whole; other failures are an
    event's own, and that event is parked."""
    return unavailable(error) or isinstance(error, TrackingConflictError)


def ready_for_savepoints(connection: sa.Connection) -> None:
    """Make savepoints nest in the connection's transaction on SQLite too.

    Python's sqlite3 opens a transaction only before a write, and a savepoint opened outside
    one commits when released: a write that changes nothing opens it first.
    """
    if connection.dialect.name == "sqlite":
        connection.execute(
            sa.update(projection_tracking).where(sa.false()).values(name=projection_tracking.c.name)
        )


def apply_or_park(
    connection: sa.Connection,
    name: str,
    tables: TableSet | None,
    events: list[LoggedEvent],
    tracking_name: str,
) -> int:
    """Apply `events` one by one, each in a savepoint; park each that fails for a reason of
    its own. Returns how many were parked."""
    parked = 0
    ready_for_savepoints(connection)
    for logged in events:
        try:
            with connection.begin_nested():
                apply_events(connection, name, tables, [logged])
        except Exception as error:
            if is_transient(error):
                raise
            park(connection, name, tracking_name, logged, error)
            parked += 1
    return parked


def retry_parked(executions: Executions, engine: sa.Engine, position: int) -> dict[str, str | None]:
    """Apply the event at `position` again to each projection that parked it.

    Returns, per tracking name, None where it applied (the event is no longer parked) or
    why it failed again. The event is applied after the events that followed it, which
    is what an operator asks for once the cause is fixed.
    """
    found = executions.read_log(after=position - 1, limit=1)
    if not found or found[0].position != position:
        raise ValueError(f"no event at position {position} in the store")
    results: dict[str, str | None] = {}
    with engine.connect() as connection:
        waiting = parked(connection, position=position)
    for event in waiting:
        name, version = projection_version(event.tracking_name)
        tables = table_set(name, version) if name in VERSIONED_PROJECTIONS else None
        try:
            with engine.begin() as connection:
                apply_events(connection, name, tables, found)
                unpark(connection, event.tracking_name, position)
        except Exception as error:
            with engine.begin() as connection:
                park(connection, name, event.tracking_name, found[0], error)
            results[event.tracking_name] = describe(error)
        else:
            log.info("projection %s applied the parked event %d", event.tracking_name, position)
            results[event.tracking_name] = None
    return results
