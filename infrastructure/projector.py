"""Runs projections over the store: each batch of events and its tracking in one transaction."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

import sqlalchemy as sa

from application.executions import Executions, LoggedEvent
from infrastructure.execution_status_sql import SqlExecutionStatusView
from infrastructure.tables import projection_tracking
from projections.execution_status import ExecutionStatusProjection

log = logging.getLogger(__name__)


class TrackingConflictError(Exception):
    """Another projector advanced this projection first; this batch was rolled back."""


class BatchProjection(Protocol):
    """A projection bound to one transaction: apply events, then flush."""

    def process(self, event: object, position: int) -> None: ...

    def flush(self) -> None: ...


class _ExecutionStatusBatch:
    def __init__(self, connection: sa.Connection):
        self.view = SqlExecutionStatusView(connection)
        self.projection = ExecutionStatusProjection(self.view)

    def process(self, event: object, position: int) -> None:
        self.projection.process(event, position)

    def flush(self) -> None:
        self.view.flush()


PROJECTIONS: dict[str, Callable[[sa.Connection], BatchProjection]] = {
    ExecutionStatusProjection.name: _ExecutionStatusBatch,
}


def tracked_position(connection: sa.Connection, name: str) -> int:
    position = connection.execute(
        sa.select(projection_tracking.c.position).where(projection_tracking.c.name == name)
    ).scalar()
    return int(position or 0)


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


class Projector:
    """Follows the store and keeps every projection's tables current, exactly once."""

    def __init__(
        self,
        executions: Executions,
        engine: sa.Engine,
        *,
        names: tuple[str, ...] = tuple(PROJECTIONS),
        batch_size: int = 500,
        poll_interval: float = 0.5,
    ):
        self.executions = executions
        self.engine = engine
        self.names = names
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._progress = threading.Condition()
        self._positions: dict[str, int] = {}
        self._thread: threading.Thread | None = None

    def wake(self, *_: object) -> None:
        """Look at the store again soon (any arguments are ignored)."""
        self._wake.set()

    def run_once(self) -> int:
        """Apply the next batch of every projection; returns how many events were applied."""
        applied = 0
        for name in self.names:
            applied += self._run_batch(name)
        return applied

    def catch_up(self) -> None:
        while self.run_once():
            pass

    def _run_batch(self, name: str) -> int:
        with self.engine.begin() as connection:
            old = tracked_position(connection, name)
            events: list[LoggedEvent] = self.executions.read_log(after=old, limit=self.batch_size)
            if not events:
                self._publish(name, old)
                return 0
            batch = PROJECTIONS[name](connection)
            for logged in events:
                batch.process(logged.event, logged.position)
            batch.flush()
            advance_tracking(connection, name, old, events[-1].position)
        self._publish(name, events[-1].position)
        return len(events)

    def _publish(self, name: str, position: int) -> None:
        with self._progress:
            self._positions[name] = position
            self._progress.notify_all()

    def position(self, name: str = ExecutionStatusProjection.name) -> int:
        with self._progress:
            return self._positions.get(name, 0)

    def wait_for(
        self, position: int, timeout: float, name: str = ExecutionStatusProjection.name
    ) -> bool:
        """Block until the projection has applied `position`; False on timeout."""
        self.wake()
        with self._progress:
            return self._progress.wait_for(
                lambda: self._positions.get(name, 0) >= position, timeout=timeout
            )

    # -- background thread ------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="projector", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stopped.is_set():
            self._wake.clear()  # before reading, so a wake-up during the batch is not lost
            try:
                if self.run_once():
                    continue
            except Exception:
                log.exception("projection batch failed; retrying")
                self._stopped.wait(1.0)
            self._wake.wait(self.poll_interval)
