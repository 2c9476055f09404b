"""Runs projections over the store: each batch of events and its tracking in one transaction."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

import sqlalchemy as sa

from agent_ledger.application.backoff import Backoff
from agent_ledger.application.event_log import LoggedEvent
from agent_ledger.application.executions import Executions
from agent_ledger.infrastructure.feed.reconnect import unavailable
from agent_ledger.infrastructure.read_models.deferred_writes import deferred_writes
from agent_ledger.infrastructure.read_models.locks import ProjectionLocks
from agent_ledger.infrastructure.read_models.parked import apply_or_park, is_transient
from agent_ledger.infrastructure.read_models.registry import all_projection_names, apply_events
from agent_ledger.infrastructure.read_models.tracking import (
    active_position,
    advance_all,
    tracked_tables,
)
from agent_ledger.projections.execution_status import ExecutionStatusProjection

log = logging.getLogger(__name__)


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
        # kept between rounds: a checkout per batch cost a pool round and a pre-ping query
        self._connection: sa.Connection | None = None
        self._connection_lock = threading.Lock()

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
            with self._transaction() as connection:
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
                    with self._transaction() as connection:
                        reached = self._apply_batches(connection, [name])
                except Exception as error:
                    if is_transient(error):
                        raise
                    # an event of this batch fails: apply one by one, parking what fails
                    with self._transaction() as connection:
                        reached = self._apply_batches(connection, [name], parking=True)
            except Exception as error:
                failure = failure or error
            else:
                applied += self._reached(reached)
        if failure is not None:
            raise failure
        return applied

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sa.Connection]:
        """A transaction on the projector's own connection; a failure closes the connection
        (the next round takes a fresh one from the pool, checked by its pre-ping)."""
        with self._connection_lock:
            if self._connection is None:
                self._connection = self.engine.connect()
            connection = self._connection
            try:
                with connection.begin():
                    yield connection
            except BaseException:
                self._close_connection()
                raise

    def _close_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()

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
        tables, tracking, olds = tracked_tables(connection, names)
        writes = None if parking else deferred_writes(connection)  # parking: event by event
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
                apply_events(
                    connection,
                    name,
                    tables.get(name),
                    events,
                    writes.as_connection() if writes is not None else None,
                )
                moves.append((tracking[name], old, events[-1].position))
            reached[name] = (len(events), events[-1].position if events else old)
        if moves:
            advance_all(connection, moves, writes)
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
        self,
        position: int,
        timeout: float,
        name: str = ExecutionStatusProjection.name,
        *,
        wake: bool = True,
    ) -> bool:
        """Block until the projection has applied `position`; False on timeout. `wake` first
        makes the projector look at the store (a reader of its own write wants that; a
        follower that only waits for whatever comes next does not)."""
        if wake:
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
        if self._connection_lock.acquire(timeout=5):  # not while a stuck round holds it
            self._close_connection()
            self._connection_lock.release()
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
            if applied and self.backlog:
                continue  # a full batch means a backlog: read on at once
            # what committed while the batch was applied set the wake-up: the next batch
            self._wake.wait(self.poll_interval)
