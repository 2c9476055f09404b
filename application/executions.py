"""The Executions application: commands and queries on execution aggregates."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Notification, RecordConflictError, Recording

from application.processes import RegisteredProcess
from application.work import Enqueue, Wake, WorkChange
from domain.errors import DomainError
from domain.execution_state import CancellationAlreadyRequestedError, execution_id_for
from domain.executions import Execution

MAX_PAGE = 1000
SNAPSHOT_INTERVAL = 100
"""Every this many events a snapshot is stored, so a long execution loads quickly."""


class ExecutionNotFoundError(DomainError):
    """No execution with this id exists for this caller."""

    def __init__(self, execution_id: UUID):
        super().__init__(f"execution {execution_id} was not found")
        self.execution_id = execution_id


class IdempotencyKeyReusedError(DomainError):
    """The idempotency key was already used for a different request."""

    def __init__(self, key: str):
        super().__init__(
            f"the Idempotency-Key {key!r} was already used with a different request; "
            "use a new key for a new request"
        )


@dataclass(frozen=True)
class LoggedEvent:
    """A stored domain event with its position in the store's total order."""

    position: int
    event: DomainEventProtocol[UUID]


@dataclass(frozen=True)
class StartedExecution:
    """The outcome of a start command."""

    execution_id: UUID
    position: int
    created: bool


class HistoryReader(Protocol):
    """Reads one execution's stored notifications in order, after a position."""

    def __call__(self, execution_id: UUID, after: int, limit: int) -> Sequence[Notification]: ...


SavedListener = Callable[[int], None]
"""Called with the last position after every successful save (an in-process wake-up)."""


class Executions(Application[UUID]):
    """Starts, cancels and reads executions; every change is an event in the store."""

    name = "Executions"
    snapshotting_intervals = {Execution: SNAPSHOT_INTERVAL}

    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__(env)
        self._listeners: list[SavedListener] = []
        self._listeners_lock = threading.Lock()
        self.history_reader: HistoryReader = self._scan_history

    # -- commands ------------------------------------------------------------------------------

    def start_execution(
        self,
        *,
        user_id: str,
        process: RegisteredProcess,
        input: dict[str, Any],
        thread_id: str | None = None,
        idempotency_key: str | None = None,
        request_id: str | None = None,
        caused_by: str | None = None,
        correlation_id: str | None = None,
    ) -> StartedExecution:
        """Record `ExecutionStarted`; with an idempotency key, a repeated request starts nothing."""
        if idempotency_key is not None:
            existing = self._replay(user_id, idempotency_key, process, input, thread_id)
            if existing is not None:
                return existing
        execution = Execution.start(
            user_id=user_id,
            process_name=process.name,
            process_version=process.version,
            definition=process.document,
            step_ids=list(process.definition.topological_order()),
            input=input,
            thread_id=thread_id,
            request_id=request_id,
            idempotency_key=idempotency_key,
            caused_by=caused_by or f"user:{user_id}",
            correlation_id=correlation_id or request_id,
        )
        try:
            position = self.save_and_position(execution, work=[Enqueue(execution.id, user_id)])
        except RecordConflictError:
            assert idempotency_key is not None  # random ids do not collide
            existing = self._replay(user_id, idempotency_key, process, input, thread_id)
            if existing is None:
                raise
            return existing
        return StartedExecution(execution.id, position, created=True)

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

    def get_history(
        self, execution_id: UUID, *, after: int = 0, limit: int = MAX_PAGE
    ) -> list[LoggedEvent]:
        """One execution's events, in order, after a position."""
        notifications = self.history_reader(execution_id, after, min(limit, MAX_PAGE))
        return self._decode(notifications)

    def read_log(self, *, after: int, limit: int = MAX_PAGE) -> list[LoggedEvent]:
        """Every event after a position, in the store's order."""
        notifications = self.recorder.select_notifications(
            start=after, limit=min(limit, MAX_PAGE), inclusive_of_start=False
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

    def _replay(
        self,
        user_id: str,
        key: str,
        process: RegisteredProcess,
        input: dict[str, Any],
        thread_id: str | None,
    ) -> StartedExecution | None:
        try:
            execution = self.get_execution(execution_id_for(user_id, key), user_id=user_id)
        except ExecutionNotFoundError:
            return None
        if (execution.process_name, execution.input, execution.thread_id) != (
            process.name,
            input,
            thread_id,
        ):
            raise IdempotencyKeyReusedError(key)
        return StartedExecution(execution.id, self.last_position(), created=False)

    def _decode(self, notifications: Iterable[Notification]) -> list[LoggedEvent]:
        return [LoggedEvent(n.id, self.mapper.to_domain_event(n)) for n in notifications]

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
