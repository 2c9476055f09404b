"""The event tail's index: which store positions belong to which user, execution and type."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from agent_ledger.domain.event_names import event_type


@dataclass(frozen=True)
class IndexEntry:
    """One indexed event: enough to find a user's events without reading anyone else's."""

    position: int
    user_id: str
    execution_id: UUID
    type: str


class EventIndexView(Protocol):
    """Where the index keeps its entries (SQL in production, a list in tests)."""

    def add(self, entry: IndexEntry) -> None: ...


class EventIndexProjection:
    """Indexes every execution event by its owner, so a user's catch-up reads only theirs."""

    name = "event_index"

    def __init__(self, view: EventIndexView):
        self.view = view

    def process(self, event: object, position: int) -> None:
        """Index one stored event at its position (events without an owner are skipped)."""
        user_id = getattr(event, "user_id", None)
        execution_id = getattr(event, "originator_id", None)
        if isinstance(user_id, str) and isinstance(execution_id, UUID):
            self.view.add(IndexEntry(position, user_id, execution_id, event_type(event)))
