"""The Executions application: commands and queries on execution aggregates."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from eventsourcing.application import (
    AggregateNotFoundError,
    Application,
    ProcessingEvent,
    project_aggregate,
)
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import (
    Notification,
    RecordConflictError,
    Recording,
    StoredEvent,
)

from agent_ledger.application.event_log import LoggedEvent, topics_by_type
from agent_ledger.application.work import Wake, WorkChange
from agent_ledger.domain.errors import DomainError
from agent_ledger.domain.execution_state import CancellationAlreadyRequestedError
from agent_ledger.domain.executions import Execution

MAX_PAGE = 1000
SNAPSHOT_INTERVAL = 100
"""Every this many events a snapshot is stored, so a long execution loads quickly."""


@dataclass(frozen=True)
class PreparedSave:
    """Events of a write, encoded, with the work changes that go with them."""

    processing: ProcessingEvent[UUID]
    stored: list[StoredEvent]
    work: list[WorkChange]


class ExecutionNotFoundError(DomainError):
    """No execution with this id exists for this caller."""

    def __init__(self, execution_id: UUID):
        super().__init__(f"execution {execution_id} was not found")
        self.execution_id = execution_id


HistoriesReader = Callable[[Sequence[UUID]], Mapping[UUID, Sequence[StoredEvent]]]
"""Execution ids → each one's latest snapshot (if any) then its events after it, in order."""


class HistoryReader(Protocol):
    """Reads one execution's stored notifications in order, after a position."""

    def __call__(self, execution_id: UUID, after: int, limit: int) -> Sequence[Notification]: ...


SavedListener = Callable[[int], None]
"""Called with the last position after every successful save (an in-process wake-up)."""


class Executions(Application[UUID]):
    """Saves, cancels and reads executions; every change is an event in the store.

    Starts are `agent_ledger.application.starter`'s command.
    """

    name = "Executions"
    snapshotting_intervals = {Execution: SNAPSHOT_INTERVAL}

    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__(env)
        self._listeners: list[SavedListener] = []
        self._listeners_lock = threading.Lock()
        self.history_reader: HistoryReader = self._scan_history
        self.histories_reader: HistoriesReader | None = None

    # -- commands ------------------------------------------------------------------------------

    def request_cancellation(
        self,
        execution_id: UUID,
        *,
        user_id: str | None,
        by: str,
        reason: str,
        caused_by: str | None = None,
        correlation_id: str | None = None,
    ) -> int:
        """Record that cancellation was asked for; the engine then stops the execution."""
        for _ in range(5):
            execution = self.get_execution(execution_id, user_id=user_id)
            try:
                execution.act_as(caused_by or f"user:{by}", correlation_id)
                execution.request_cancellation(by=by, reason=reason)
            except CancellationAlreadyRequestedError:
                return self.last_position()
            try:
                return self.save_and_position(execution, work=[Wake(execution_id, cancel=True)])
            except RecordConflictError:
                continue  # the engine wrote meanwhile: decide again on the newer state
        raise RecordConflictError(f"execution {execution_id} kept changing; try again")

    def save_collected(
        self,
        changes: Sequence[tuple[Execution, Sequence[DomainEventProtocol[UUID]]]],
        work: Sequence[WorkChange] = (),
    ) -> list[Recording[UUID]]:
        """Save events already collected from their executions, in one transaction.

        Like `save()`, snapshots included, for callers that collect each execution's
        events when its change is made and save many changes later, together.
        """
        processing = ProcessingEvent[UUID]()
        for execution, events in changes:
            processing.events.extend(events)
            processing.aggregates[execution.id] = execution
        processing.saved_kwargs["work"] = list(work)
        recordings = self._record(processing)
        self._take_snapshots(processing)
        self._notify(recordings)
        return recordings

    def prepare_save(
        self,
        changes: Sequence[tuple[Execution, Sequence[DomainEventProtocol[UUID]]]],
        work: Sequence[WorkChange] = (),
    ) -> PreparedSave:
        """The first half of `save_collected` for a writer of its own (an asyncio one): the
        events encoded as they are stored. `finish_save` does the rest once they are."""
        processing = ProcessingEvent[UUID]()
        for execution, events in changes:
            processing.events.extend(events)
            processing.aggregates[execution.id] = execution
        processing.saved_kwargs["work"] = list(work)
        stored = [self.mapper.to_stored_event(event) for event in processing.events]
        return PreparedSave(processing, stored, list(work))

    def snapshots_due(self, prepared: PreparedSave) -> bool:
        """Whether `finish_save` will write a snapshot (it then blocks on the store)."""
        return any(event.originator_version % SNAPSHOT_INTERVAL == 0 for event in prepared.stored)

    def finish_save(
        self, prepared: PreparedSave, notification_ids: Sequence[int]
    ) -> list[Recording[UUID]]:
        """The second half of `save_collected`, once the events are stored at these
        positions: snapshots, then the listeners."""
        recordings = [
            Recording(
                event,
                Notification(
                    originator_id=stored.originator_id,
                    originator_version=stored.originator_version,
                    topic=stored.topic,
                    state=stored.state,
                    id=notification_id,
                ),
            )
            for event, stored, notification_id in zip(
                prepared.processing.events, prepared.stored, notification_ids, strict=True
            )
        ]
        self._take_snapshots(prepared.processing)
        self._notify(recordings)
        return recordings

    def save_and_position(self, *aggregates: Execution, work: Sequence[WorkChange] = ()) -> int:
        """Save, with the work queue changes that follow, and return the last event's position."""
        recordings = self.save(*aggregates, work=list(work))
        return recordings[-1].notification.id if recordings else self.last_position()

    # -- queries -------------------------------------------------------------------------------

    def get_execution(
        self, execution_id: UUID, *, user_id: str | None = None, version: int | None = None
    ) -> Execution:
        """Load an execution; with `user_id`, another user's execution does not exist."""
        try:
            execution: Execution = self.repository.get(execution_id, version=version)
        except AggregateNotFoundError:
            raise ExecutionNotFoundError(execution_id) from None
        if user_id is not None and execution.user_id != user_id:
            raise ExecutionNotFoundError(execution_id)
        return execution

    def get_executions(self, execution_ids: Sequence[UUID]) -> dict[UUID, Execution]:
        """Load many executions at once (those that exist)."""
        if self.histories_reader is None:
            found = {}
            for execution_id in execution_ids:
                with contextlib.suppress(ExecutionNotFoundError):
                    found[execution_id] = self.get_execution(execution_id)
            return found
        executions: dict[UUID, Execution] = {}
        for execution_id, stored in self.histories_reader(execution_ids).items():
            execution = self.from_history(stored)
            if execution is not None:
                executions[execution_id] = execution
        return executions

    def from_history(self, stored: Iterable[StoredEvent]) -> Execution | None:
        """The execution its stored snapshot (if any) and later events make; None if none."""
        return project_aggregate(None, [self.mapper.to_domain_event(s) for s in stored])

    def get_history(
        self, execution_id: UUID, *, after: int = 0, limit: int = MAX_PAGE
    ) -> list[LoggedEvent]:
        """One execution's events, in order, after a position."""
        notifications = self.history_reader(execution_id, after, min(limit, MAX_PAGE))
        return self._decode(notifications)

    def read_log(
        self,
        *,
        after: int,
        limit: int = MAX_PAGE,
        upto: int | None = None,
        types: Collection[str] | None = None,
    ) -> list[LoggedEvent]:
        """Every event after a position (up to `upto`), in the store's order; with `types`,
        only events of those wire types."""
        topics = () if types is None else [topics_by_type()[t] for t in sorted(types)]
        if types is not None and not topics:
            return []
        notifications = self.recorder.select_notifications(
            start=after,
            limit=min(limit, MAX_PAGE),
            stop=upto,
            topics=topics,
            inclusive_of_start=False,
        )
        return self._decode(notifications)

    def last_position(self) -> int:
        return self.recorder.max_notification_id() or 0

    # -- in-process wake-ups -------------------------------------------------------------------

    def add_listener(self, listener: SavedListener) -> None:
        with self._listeners_lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: SavedListener) -> None:
        with self._listeners_lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _notify(self, recordings: list[Recording[UUID]]) -> None:
        super()._notify(recordings)
        if recordings:
            with self._listeners_lock:
                listeners = list(self._listeners)
            for listener in listeners:
                listener(recordings[-1].notification.id)

    # -- internals -----------------------------------------------------------------------------

    def _decode(self, notifications: Iterable[Notification]) -> list[LoggedEvent]:
        return [LoggedEvent.stored(n.id, n, self.mapper) for n in notifications]

    def _scan_history(self, execution_id: UUID, after: int, limit: int) -> list[Notification]:
        """Fallback history reader for stores without an index by originator (in-memory)."""
        found: list[Notification] = []
        position = after
        while len(found) < limit:
            page = self.recorder.select_notifications(
                start=position, limit=MAX_PAGE, inclusive_of_start=False
            )
            if not page:
                break
            found.extend(n for n in page if n.originator_id == execution_id)
            position = page[-1].id
        return found[:limit]
