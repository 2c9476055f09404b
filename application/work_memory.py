"""The work queue's in-memory twin, for unit tests and the in-memory store."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder, StoredEvent
from eventsourcing.popo import POPOApplicationRecorder, POPOFactory

from agent_ledger.application.work import (
    Claim,
    Enqueue,
    Fence,
    Finish,
    LeaseLostError,
    Park,
    Renewal,
    Reschedule,
    Wake,
    WorkChange,
)


@dataclass
class _Row:
    user_id: str
    seq: int
    ready_at: float
    admitted: bool = False
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    cancel_requested: bool = False
    waiting: bool = False


PARKED_FOREVER = 2.5e11
"""`ready_at` (epoch seconds, in the year 9892) of an execution parked without a deadline."""


class InMemoryWorkRecorder(POPOApplicationRecorder):
    """The in-memory recorder, applying work changes under the same lock as the events."""

    def __init__(self) -> None:
        super().__init__()
        self.work: dict[UUID, _Row] = {}
        self.now: Callable[[], float] = time.time
        self._seq = itertools.count(1)

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        with self._database_lock:
            changes: list[WorkChange] = list(kwargs.get("work", ()))
            for change in changes:
                if isinstance(change, Fence):
                    row = self.work.get(change.execution_id)
                    if row is None or row.lease_owner != change.owner:
                        raise LeaseLostError(change.execution_id)
            ids = super().insert_events(stored_events, **kwargs)
            for change in changes:
                self._apply(change, self.now())
            return ids

    def _apply(self, change: WorkChange, now: float) -> None:
        match change:
            case Enqueue(execution_id, user_id):
                self.work.setdefault(execution_id, _Row(user_id, next(self._seq), now))
            case Reschedule(execution_id, ready_at, release):
                row = self.work[execution_id]
                row.ready_at = ready_at.timestamp()
                if release:
                    row.lease_owner = row.lease_expires_at = None
            case Park(execution_id, ready_at):
                row = self.work[execution_id]
                row.ready_at = PARKED_FOREVER if ready_at is None else ready_at.timestamp()
                row.waiting = True
                row.lease_owner = row.lease_expires_at = None
            case Finish(execution_id):
                self.work.pop(execution_id, None)
            case Wake(execution_id, cancel):
                row_or_none = self.work.get(execution_id)
                if row_or_none is not None:
                    row_or_none.ready_at = min(row_or_none.ready_at, now)
                    row_or_none.cancel_requested |= cancel
                    # a parked execution takes its turn again within its user's limit
                    row_or_none.admitted = row_or_none.admitted and not row_or_none.waiting
                    row_or_none.waiting = False


class InMemoryWorkQueue:
    """Claims and leases over `InMemoryWorkRecorder`'s table, with the SQL queue's rules."""

    def __init__(
        self,
        recorder: InMemoryWorkRecorder,
        per_user_limit: int = 3,
        now: Callable[[], float] = time.time,
    ):
        self.recorder = recorder
        self.per_user_limit = per_user_limit
        self.now = now

    def claim(self, owner: str, limit: int, lease_seconds: float) -> list[Claim]:
        now = self.now()
        with self.recorder._database_lock:
            rows = self.recorder.work
            self._admit(rows, limit)
            ready = sorted(
                (
                    (row.ready_at, row.seq, execution_id)
                    for execution_id, row in rows.items()
                    if (row.admitted or row.cancel_requested)
                    and row.ready_at <= now
                    and (row.lease_owner is None or (row.lease_expires_at or 0) < now)
                ),
            )[:limit]
            claims = []
            for _, _, execution_id in ready:
                row = rows[execution_id]
                previous = row.lease_owner
                row.lease_owner, row.lease_expires_at = owner, now + lease_seconds
                row.waiting = False
                claims.append(Claim(execution_id, previous if previous != owner else None))
            return claims

    def _admit(self, rows: dict[UUID, _Row], limit: int) -> None:
        running: dict[str, int] = {}
        for row in rows.values():
            if row.admitted and not row.waiting:
                running[row.user_id] = running.get(row.user_id, 0) + 1
        waiting = sorted((r.seq, r) for r in rows.values() if not r.admitted)
        places: dict[str, int] = {}
        candidates = []
        for _, row in waiting:
            if row.cancel_requested:
                continue
            places[row.user_id] = places.get(row.user_id, 0) + 1
            if places[row.user_id] + running.get(row.user_id, 0) <= self.per_user_limit:
                candidates.append((places[row.user_id], row.seq, row))
        for _, _, row in sorted(candidates, key=lambda c: (c[0], c[1]))[:limit]:
            row.admitted = True

    def renew(self, owner: str, execution_ids: list[UUID], lease_seconds: float) -> Renewal:
        held, cancel = set(), set()
        with self.recorder._database_lock:
            for execution_id in execution_ids:
                row = self.recorder.work.get(execution_id)
                if row is not None and row.lease_owner == owner:
                    row.lease_expires_at = self.now() + lease_seconds
                    held.add(execution_id)
                    if row.cancel_requested:
                        cancel.add(execution_id)
        return Renewal(frozenset(held), frozenset(cancel))

    def release(
        self, owner: str, execution_ids: list[UUID], ready_at: datetime | None = None
    ) -> None:
        with self.recorder._database_lock:
            for execution_id in execution_ids:
                row = self.recorder.work.get(execution_id)
                if row is not None and row.lease_owner == owner:
                    row.lease_owner = row.lease_expires_at = None
                    if ready_at is not None:
                        row.ready_at = ready_at.timestamp()

    def next_ready_at(self) -> datetime | None:
        with self.recorder._database_lock:
            times = [r.ready_at for r in self.recorder.work.values() if r.ready_at < PARKED_FOREVER]
        return datetime.fromtimestamp(min(times), UTC) if times else None


class InMemoryFactory(POPOFactory):
    """The library's in-memory persistence, with the work-queue recorder."""

    def application_recorder(self) -> ApplicationRecorder:
        return InMemoryWorkRecorder()


IN_MEMORY_ENV = {"PERSISTENCE_MODULE": "agent_ledger.application.work_memory:InMemoryFactory"}
"""Environment for an `Executions` application held in memory with its work queue."""
