"""Rebuild a projection from the whole log into a fresh table set, then switch queries to it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa

from agent_ledger.application.event_log import LoggedEvent
from agent_ledger.application.executions import Executions
from agent_ledger.infrastructure.read_models.locks import lock_key
from agent_ledger.infrastructure.read_models.parked import (
    apply_or_park,
    forget,
    is_transient,
    ready_for_savepoints,
)
from agent_ledger.infrastructure.read_models.registry import VERSIONED_PROJECTIONS, apply_events
from agent_ledger.infrastructure.read_models.table_sets import (
    TableSet,
    active_version,
    create_version,
    drop_version,
    mark_building,
    next_version,
    switch_to,
    table_set,
)
from agent_ledger.infrastructure.read_models.tables import projection_tracking, projection_versions
from agent_ledger.infrastructure.read_models.tracking import advance_tracking, tracked_position


class RebuildError(Exception):
    """The projection cannot be rebuilt now (unknown, or another rebuild is running)."""


@dataclass(frozen=True)
class RebuildProgress:
    """Where a rebuild is: events applied of the head seen, and how fast."""

    name: str
    version: int
    position: int
    head: int
    events: int
    seconds: float
    switched: bool = False
    parked: int = 0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


Report = Callable[[RebuildProgress], None]


class Rebuild:
    """Builds version N+1 of a projection beside the live one; the API reads the old one until
    the switch, which happens in one transaction once the new one has caught up."""

    def __init__(
        self,
        executions: Executions,
        engine: sa.Engine,
        name: str,
        *,
        batch_size: int = 5000,
        report: Report | None = None,
        report_interval: float = 1.0,
    ):
        if name not in VERSIONED_PROJECTIONS:
            known = ", ".join(sorted(VERSIONED_PROJECTIONS))
            raise RebuildError(f"no rebuildable projection {name!r}; choose from {known}")
        self.executions = executions
        self.engine = engine
        self.name = name
        self.batch_size = batch_size
        self.report = report or (lambda _: None)
        self.report_interval = report_interval
        self._started = time.monotonic()
        self._reported = 0.0
        self._events = 0
        self._parked = 0

    def run(self, grace_seconds: float = 5.0) -> RebuildProgress:
        """Build, switch, then drop the old tables after `grace_seconds` (for queries in flight)."""
        with self._exclusive():
            tables = self.prepare()
            self.catch_up(tables)
            old, final = self.switch(tables)
        threading.Event().wait(grace_seconds)
        with self.engine.begin() as connection:
            drop_version(connection, self.name, old)
            forget(connection, table_set(self.name, old).tracking_name)
        return final

    def prepare(self) -> TableSet:
        """Create the next version's empty tables and mark it as being built."""
        with self.engine.begin() as connection:
            version = next_version(connection, self.name)
            mark_building(connection, self.name, version)
            return create_version(connection, self.name, version)

    def catch_up(self, tables: TableSet) -> int:
        """Apply the log to `tables` until a page comes back short; returns the position."""
        while True:
            with self.engine.begin() as connection:
                position, count = self._apply_page(connection, tables)
            if count < self.batch_size:
                return position

    def switch(self, tables: TableSet) -> tuple[int, RebuildProgress]:
        """Finish catching up and make `tables` the active version, in one transaction."""
        with self.engine.begin() as connection:
            connection.execute(
                sa.select(projection_versions.c.name)
                .where(projection_versions.c.name == self.name)
                .with_for_update()
            )
            old = active_version(connection, self.name)
            old_tracking = table_set(self.name, old).tracking_name
            connection.execute(  # the live projector waits here, so it cannot pass our position
                sa.select(projection_tracking.c.position)
                .where(projection_tracking.c.name == old_tracking)
                .with_for_update()
            )
            while self._apply_page(connection, tables)[1]:
                pass
            switch_to(connection, self.name, tables.version)
            position = tracked_position(connection, tables.tracking_name)
        final = self._progress(tables, position, switched=True)
        self.report(final)
        return old, final

    def _apply_page(self, connection: sa.Connection, tables: TableSet) -> tuple[int, int]:
        old = tracked_position(connection, tables.tracking_name)
        events = self._read(old)
        if not events:
            return old, 0
        ready_for_savepoints(connection)
        try:
            with connection.begin_nested():
                apply_events(connection, self.name, tables, events)
        except Exception as error:
            if is_transient(error):
                raise
            self._parked += apply_or_park(
                connection, self.name, tables, events, tables.tracking_name
            )
        advance_tracking(connection, tables.tracking_name, old, events[-1].position)
        self._events += len(events)
        now = time.monotonic()
        if now - self._reported >= self.report_interval:
            self._reported = now
            self.report(self._progress(tables, events[-1].position))
        return events[-1].position, len(events)

    def _read(self, after: int) -> list[LoggedEvent]:
        notifications = self.executions.recorder.select_notifications(
            start=after, limit=self.batch_size, inclusive_of_start=False
        )
        mapper = self.executions.mapper  # decoded one by one: one that fails is parked
        return [LoggedEvent.stored(n.id, n, mapper) for n in notifications]

    def _progress(self, tables: TableSet, position: int, switched: bool = False) -> RebuildProgress:
        return RebuildProgress(
            self.name,
            tables.version,
            position,
            max(self.executions.last_position(), position),
            self._events,
            time.monotonic() - self._started,
            switched,
            self._parked,
        )

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One rebuild of a projection at a time (PostgreSQL; embedded mode has one process)."""
        if self.engine.dialect.name != "postgresql":
            yield
            return
        with self.engine.connect() as connection:
            key = lock_key(f"rebuild:{self.name}")
            taken = connection.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar()
            connection.commit()
            if not taken:
                raise RebuildError(f"another rebuild of {self.name!r} is running")
            try:
                yield
            finally:
                connection.execute(sa.select(sa.func.pg_advisory_unlock(key)))
                connection.commit()


def build_copy(executions: Executions, engine: sa.Engine, name: str) -> TableSet:
    """Build a fresh version from the whole log without switching to it (for comparisons)."""
    rebuild = Rebuild(executions, engine, name)
    tables = rebuild.prepare()
    rebuild.catch_up(tables)
    return tables
