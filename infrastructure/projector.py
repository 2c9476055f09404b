"""Runs projections over the store: each batch of events and its tracking in one transaction."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

import sqlalchemy as sa

from application.backoff import Backoff
from application.executions import Executions, LoggedEvent
from infrastructure.event_index_sql import EventIndexBatch
from infrastructure.metrics_batch import MetricsBatch
from infrastructure.parked_events import describe, park, parked, unpark
from infrastructure.projection_lock import ProjectionLocks
from infrastructure.projection_tables import (
    TableSet,
    active_table_sets,
    active_tables,
    table_set,
)
from infrastructure.reconnect import unavailable
from infrastructure.status_batch import ExecutionStatusBatch
from infrastructure.tables import projection_tracking
from projections.event_index import EventIndexProjection
from projections.execution_status import ExecutionStatusProjection
from projections.metrics import MetricsProjection

log = logging.getLogger(__name__)

BATCH_GATHER_SECONDS = 0.02
"""Pause between batches while events keep coming (lag target: 100 ms at p99)."""


class TrackingConflictError(Exception):
    """Another projector advanced this projection first; this batch was rolled back."""


class BatchProjection(Protocol):
    """A projection bound to one transaction: apply events, then flush."""

    def process(self, event: object, position: int) -> None: ...

    def flush(self) -> None: ...


# projections with one table set, rebuilt in place
PROJECTIONS: dict[str, Callable[[sa.Connection], BatchProjection]] = {
    EventIndexProjection.name: EventIndexBatch,
}

# projections with versioned table sets, rebuilt side by side (`projections rebuild NAME`)
VERSIONED_PROJECTIONS: dict[str, Callable[[sa.Connection, TableSet], BatchProjection]] = {
    ExecutionStatusProjection.name: ExecutionStatusBatch,
    MetricsProjection.name: MetricsBatch,
}


def all_projection_names() -> tuple[str, ...]:
    return (*VERSIONED_PROJECTIONS, *PROJECTIONS)


def tracked_position(connection: sa.Connection, name: str) -> int:
    position = connection.execute(
        sa.select(projection_tracking.c.position).where(projection_tracking.c.name == name)
    ).scalar()
    return int(position or 0)


def active_position(connection: sa.Connection, name: str) -> int:
    """How far the version of `name` that queries read has got."""
    if name in VERSIONED_PROJECTIONS:
        return tracked_position(connection, active_tables(connection, name).tracking_name)
    return tracked_position(connection, name)


def advance_tracking(connection: sa.Connection, name: str, old: int, new: int) -> None:
    """Move the tracked position from `old` to `new`, or fail if someone else moved it."""
    now = datetime.now(UTC)
    if old == 0:
        exists = connection.execute(
            sa.select(projection_tracking.c.name).where(projection_tracking.c.name == name)
        ).first()
        if exists is None:
            connection.execute(
                sa.insert(projection_tracking).values(name=name, position=new, updated_at=now)
            )
            return
    moved = connection.execute(
        sa.update(projection_tracking)
        .where(projection_tracking.c.name == name, projection_tracking.c.position == old)
        .values(position=new, updated_at=now)
    ).rowcount
    if moved != 1:
        raise TrackingConflictError(f"projection {name!r} moved past {old} elsewhere")


def tracked_positions(connection: sa.Connection, names: list[str]) -> dict[str, int]:
    """The tracked position of each of these names (0 for one not tracked yet)."""
    rows = connection.execute(
        sa.select(projection_tracking.c.name, projection_tracking.c.position).where(
            projection_tracking.c.name.in_(names)
        )
    )
    return {name: 0 for name in names} | {row.name: int(row.position) for row in rows}


def advance_all(connection: sa.Connection, moves: list[tuple[str, int, int]]) -> None:
    """`advance_tracking` for each (name, old, new), in one statement on PostgreSQL."""
    guarded = [move for move in moves if move[1] != 0]
    if connection.dialect.name != "postgresql" or len(guarded) < 2:
        for name, old, new in moves:
            advance_tracking(connection, name, old, new)
        return
    for name, old, new in moves:
        if old == 0:
            advance_tracking(connection, name, old, new)
    moved = {
        row[0]
        for row in connection.exec_driver_sql(
            _ADVANCE,
            (
                datetime.now(UTC),
                [name for name, _, _ in guarded],
                [old for _, old, _ in guarded],
                [new for _, _, new in guarded],
            ),
        )
    }
    lost = sorted({name for name, _, _ in guarded} - moved)
    if lost:
        raise TrackingConflictError(f"projections {lost} moved on elsewhere")


_ADVANCE = (
    f'UPDATE "{projection_tracking.name}" AS t SET position = v.new, updated_at = %b '
    "FROM unnest(%b::text[], %b::bigint[], %b::bigint[]) AS v(name, old, new) "
    "WHERE t.name = v.name AND t.position = v.old RETURNING t.name"
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


def apply_events(
    connection: sa.Connection, name: str, tables: TableSet | None, events: list[LoggedEvent]
) -> None:
    """Apply `events` to a projection's tables (the caller moves the tracking row)."""
    batch = (
        VERSIONED_PROJECTIONS[name](connection, tables)
        if tables is not None
        else PROJECTIONS[name](connection)
    )
    for logged in events:
        batch.process(logged.event, logged.position)
    batch.flush()


class Projector:
    """Follows the store and keeps every projection's tables current, exactly once.

    With `locks`, it runs only the projections whose lock it holds and stands by for the
    others (reading their positions), taking over when the holder dies.
    """

    def __init__(
        self,
        executions: Executions,
        engine: sa.Engine,
        *,
        names: tuple[str, ...] | None = None,
        batch_size: int = 500,
        poll_interval: float = 0.5,
        locks: ProjectionLocks | None = None,
    ):
        self.executions = executions
        self.engine = engine
        self.names = names if names is not None else all_projection_names()
        self.batch_size = batch_size
        self.backlog = False  # the last run_once found a full batch somewhere
        self.poll_interval = poll_interval
        self.locks = locks
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._progress = threading.Condition()
        self._positions: dict[str, int] = {}
        self._active: set[str] = set()
        self._thread: threading.Thread | None = None

    def wake(self, *_: object) -> None:
        """Look at the store again soon (any arguments are ignored)."""
        self._wake.set()

    def run_once(self) -> int:
        """Apply the next batch of every projection this process runs; returns events applied.

        The batches share one transaction; should that fail, each projection retries in a
        transaction of its own, so that one broken projection does not hold up the others.
        """
        self.backlog = False
        names = []
        for name in self.names:
            if self.locks is not None and not self.locks.try_acquire(name):
                self._active.discard(name)
                self.refresh(name)
                continue
            self._active.add(name)
            names.append(name)
        try:
            with self.engine.begin() as connection:
                reached = self._apply_batches(connection, names)
        except Exception as error:
            if unavailable(error):
                raise  # the database is away: the loop tries the whole round again
            log.warning("a shared projection batch failed; one transaction each", exc_info=True)
            return self._run_separately(names)
        return self._reached(reached)

    def _run_separately(self, names: list[str]) -> int:
        applied, failure = 0, None
        for name in names:
            try:
                try:
                    with self.engine.begin() as connection:
                        reached = self._apply_batches(connection, [name])
                except Exception as error:
                    if is_transient(error):
                        raise
                    # an event of this batch fails: apply one by one, parking what fails
                    with self.engine.begin() as connection:
                        reached = self._apply_batches(connection, [name], parking=True)
            except Exception as error:
                failure = failure or error
            else:
                applied += self._reached(reached)
        if failure is not None:
            raise failure
        return applied

    def _reached(self, reached: dict[str, tuple[int, int]]) -> int:
        applied = 0
        for name, (count, position) in reached.items():
            self._publish(name, position)
            applied += count
            self.backlog |= count == self.batch_size
        return applied

    def catch_up(self) -> None:
        while self.run_once():
            pass

    def active(self, name: str) -> bool:
        return name in self._active

    def refresh(self, name: str) -> None:
        """Read the position another process has reached (this one is standing by)."""
        with self.engine.connect() as connection:
            self._publish(name, active_position(connection, name))

    def _apply_batches(
        self, connection: sa.Connection, names: list[str], *, parking: bool = False
    ) -> dict[str, tuple[int, int]]:
        """Apply each projection's next batch; returns how many events and the position reached."""
        tables = active_table_sets(connection, [n for n in names if n in VERSIONED_PROJECTIONS])
        tracking = {n: tables[n].tracking_name if n in tables else n for n in names}
        olds = tracked_positions(connection, list(tracking.values()))
        reached, moves = {}, []
        page: tuple[int, list[LoggedEvent]] | None = None  # projections at one position share it
        for name in names:
            old = olds[tracking[name]]
            if page is None or page[0] != old:
                page = (old, self.executions.read_log(after=old, limit=self.batch_size))
            events = page[1]
            if events and parking:
                apply_or_park(connection, name, tables.get(name), events, tracking[name])
                moves.append((tracking[name], old, events[-1].position))
            elif events:
                apply_events(connection, name, tables.get(name), events)
                moves.append((tracking[name], old, events[-1].position))
            reached[name] = (len(events), events[-1].position if events else old)
        advance_all(connection, moves)
        return reached

    def _publish(self, name: str, position: int) -> None:
        with self._progress:
            # never backwards: a switch to a rebuilt version starts at or past the old one
            self._positions[name] = max(position, self._positions.get(name, 0))
            self._progress.notify_all()

    def position(self, name: str = ExecutionStatusProjection.name) -> int:
        with self._progress:
            return self._positions.get(name, 0)

    def wait_for(
        self, position: int, timeout: float, name: str = ExecutionStatusProjection.name
    ) -> bool:
        """Block until the projection has applied `position`; False on timeout."""
        self.wake()
        deadline = time.monotonic() + timeout
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            standing_by = not self.active(name)
            with self._progress:
                if self._progress.wait_for(
                    lambda: self._positions.get(name, 0) >= position,
                    timeout=min(remaining, 0.05) if standing_by else remaining,
                ):
                    return True
            if time.monotonic() >= deadline:
                return False
            if standing_by:
                self.refresh(name)  # the active projector is another process: look at its row

    # -- background thread ------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="projector", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.locks is not None:
            self.locks.release_all()

    def _run(self) -> None:
        backoff = Backoff("projecting", log, expected=unavailable)
        while not self._stopped.is_set():
            self._wake.clear()  # before reading, so a wake-up during the batch is not lost
            try:
                applied = self.run_once()
            except Exception as error:
                self._wake.wait(backoff.failed(error))  # or sooner: notifications are back
                continue
            backoff.succeeded()
            if applied:
                if not self.backlog:
                    # caught up while commits keep notifying: gather fuller batches
                    self._stopped.wait(BATCH_GATHER_SECONDS)
                continue  # a full batch means a backlog: read on at once
            self._wake.wait(self.poll_interval)


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
        name, _, version = event.tracking_name.partition("@v")
        tables = table_set(name, int(version or 1)) if name in VERSIONED_PROJECTIONS else None
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
