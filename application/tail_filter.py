"""What one tail subscription may and wants to see: an owner, an execution, event types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from agent_ledger.application.event_log import EVENT_TYPES
from agent_ledger.domain.event_names import event_type


class UnknownEventTypeError(ValueError):
    """A type filter named an event type that does not exist."""


def parse_types(text: str | None) -> frozenset[str]:
    """`agent_started,tool_executing` as a set; empty means every type."""
    if not text:
        return frozenset()
    chosen = frozenset(t.strip() for t in text.split(",") if t.strip())
    unknown = chosen - EVENT_TYPES
    if unknown:
        raise UnknownEventTypeError(
            f"unknown event types {sorted(unknown)}; known: {', '.join(sorted(EVENT_TYPES))}"
        )
    return chosen


@dataclass(frozen=True)
class TailFilter:
    """Selects messages: one user's (None: every user's), one execution's, some types."""

    user_id: str | None
    execution_id: UUID | None = None
    types: frozenset[str] = frozenset()

    def accepts(self, message: dict[str, Any]) -> bool:
        return (
            (self.user_id is None or message["user_id"] == self.user_id)
            and (self.execution_id is None or message["execution_id"] == str(self.execution_id))
            and (not self.types or message["type"] in self.types)
        )

    def accepts_event(self, event: object) -> bool:
        return (
            (self.user_id is None or getattr(event, "user_id", None) == self.user_id)
            and (
                self.execution_id is None
                or getattr(event, "originator_id", None) == self.execution_id
            )
            and (not self.types or event_type(event) in self.types)
        )
