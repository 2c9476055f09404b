"""The work queue port: which executions need a worker, and who holds each one.

Every change to the queue that follows from an execution's events is written in the
same transaction as those events (`Executions.save(..., work=[...])`), so the queue
never disagrees with the store: an execution is queued exactly when it starts, a
worker that lost its lease cannot write, and a finished execution leaves the queue.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Recording, StoredEvent


class LeaseLostError(Exception):
    """The worker no longer holds the execution's lease: another worker took it over."""

    def __init__(self, execution_id: UUID | None = None):
        super().__init__(f"the lease on execution {execution_id} was lost")
        self.execution_id = execution_id


@dataclass(frozen=True)
class Enqueue:
    """A new execution waits for a worker (and for a slot among its user's executions)."""

    execution_id: UUID
    user_id: str


@dataclass(frozen=True)
class Fence:
    """Refuse the whole write unless `owner` still holds the execution's lease."""

    execution_id: UUID
    owner: str


@dataclass(frozen=True)
class Reschedule:
    """Nothing to do before `ready_at` (a timer or a retry delay); optionally let go."""

    execution_id: UUID
    ready_at: datetime
    release: bool


@dataclass(frozen=True)
class Park:
    """Only signals can move the execution on: let go, and hold no slot of its user's
    running limit until a signal (a `Wake`) or `ready_at` (its deadline) comes."""

    execution_id: UUID
    ready_at: datetime | None


@dataclass(frozen=True)
class Finish:
    """The execution reached a terminal state: it leaves the queue."""

    execution_id: UUID


@dataclass(frozen=True)
class Wake:
    """Something happened from outside (a cancellation request, a signal): look at it now.
    A parked execution takes its turn again within its user's running limit, ahead of those
    started after it."""

    execution_id: UUID
    cancel: bool = False


WorkChange = Enqueue | Fence | Reschedule | Park | Finish | Wake


@dataclass(frozen=True)
class Claim:
    """An execution this worker now holds; `taken_over_from` names a lost previous holder.

    `history` is its latest snapshot (if any) and later events, read by the claim's own
    statement where the store can (None: load it). Only a claim nobody held before carries
    one: a previous holder's last write may land after that read.
    """

    execution_id: UUID
    taken_over_from: str | None
    history: tuple[StoredEvent, ...] | None = None


@dataclass(frozen=True)
class Renewal:
    """What renewing leases found: those still held, and which of them should be cancelled."""

    held: frozenset[UUID]
    cancel_requested: frozenset[UUID]


class WorkQueue(Protocol):
    """Claims, renews and releases leases on queued executions."""

    def claim(self, owner: str, limit: int, lease_seconds: float) -> list[Claim]:
        """Admit waiting executions within the per-user limit, then lease up to `limit`."""

    def renew(self, owner: str, execution_ids: list[UUID], lease_seconds: float) -> Renewal:
        """Extend the leases `owner` holds on these executions."""

    def release(
        self, owner: str, execution_ids: list[UUID], ready_at: datetime | None = None
    ) -> None:
        """Give leases back so another worker may continue at once, or at `ready_at`."""

    def next_ready_at(self) -> datetime | None:
        """The earliest time any queued execution becomes ready (for sleeping workers);
        executions parked until a signal, with no deadline, have none."""


class LoopStore(Protocol):
    """The store's two statements on every execution's path, awaited on the caller's event
    loop (no hand-off to a thread): a group commit's write and a claim with its load."""

    async def save(
        self,
        changes: Sequence[tuple[Any, Sequence[DomainEventProtocol[UUID]]]],
        work: Sequence[WorkChange],
    ) -> list[Recording[UUID]]:
        """Save the collected events of these executions with the work changes, at once."""

    async def claim(self, owner: str, limit: int, lease_seconds: float) -> list[Claim]:
        """`WorkQueue.claim`, each claim with its history where it can be read with it."""

    async def close(self) -> None:
        """Close this loop's connections."""
