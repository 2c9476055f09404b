"""The event log as readers see it: stored events with their positions, their wire
names and types, and the message every reader (history API, live tail) sends."""

from __future__ import annotations

import functools
from dataclasses import fields
from typing import Any
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, StoredEvent

from agent_ledger.domain.event_names import event_type, event_type_of_class_name
from agent_ledger.domain.executions import Execution


@functools.cache
def type_of_topic(topic: str) -> str:
    """The wire type of the event class a stored topic names."""
    return event_type_of_class_name(topic.rpartition(".")[2].rpartition(":")[2])


@functools.cache
def topics_by_type() -> dict[str, str]:
    """Each recorded event's wire type and stored topic (`agent_started`: `...AgentStarted`)."""
    return {
        event_type_of_class_name(cls.__name__): str(getattr(cls, "TOPIC"))  # noqa: B009
        for name, cls in vars(Execution).items()
        if isinstance(cls, type)
        and name not in {"Created", "Event", "Snapshot"}
        and isinstance(getattr(cls, "TOPIC", None), str)
    }


EVENT_TYPES = frozenset(topics_by_type())
"""Every event type on the wire (`agent_started`, `tool_executing`, ...)."""


class LoggedEvent:
    """A stored domain event with its position in the store's total order.

    Read from the store, it is decoded only when `event` is first asked for: readers that
    pass most events by (the tail, by their type) never pay for decoding them.
    """

    __slots__ = ("_event", "_mapper", "_stored", "position", "type")

    def __init__(self, position: int, event: DomainEventProtocol[UUID]):
        self.position = position
        self.type = event_type(event)
        """The event's wire type (`agent_started`), known without decoding it."""
        self._event: DomainEventProtocol[UUID] | None = event
        self._stored: StoredEvent | None = None
        self._mapper: Mapper[UUID] | None = None

    @classmethod
    def stored(cls, position: int, stored: StoredEvent, mapper: Mapper[UUID]) -> LoggedEvent:
        """A stored event, to be decoded by `mapper` when first needed."""
        logged = cls.__new__(cls)
        logged.position, logged.type = position, type_of_topic(stored.topic)
        logged._event, logged._stored, logged._mapper = None, stored, mapper
        return logged

    @property
    def event(self) -> DomainEventProtocol[UUID]:
        event = self._event
        if event is None:
            stored, mapper = self._stored, self._mapper
            if stored is None or mapper is None:
                raise RuntimeError("a logged event has neither its event nor its record")
            event = self._event = mapper.to_domain_event(stored)
        return event

    @property
    def originator_id(self) -> UUID | None:
        """The execution the event belongs to, known without decoding it."""
        if self._event is not None:
            return self._event.originator_id
        if self._stored is None:
            return None
        stored_id = self._stored.originator_id
        return stored_id if isinstance(stored_id, UUID) else UUID(str(stored_id))

    def __repr__(self) -> str:
        return f"LoggedEvent({self.position}, {self.type})"


_ENVELOPE = {"originator_id", "originator_version", "timestamp", "originator_topic", "user_id"}


def to_message(logged: LoggedEvent) -> dict[str, Any]:
    """`{"position", "execution_id", "version", "type", "timestamp", "user_id", "data"}`."""
    event = logged.event
    data = {
        f.name: _plain(getattr(event, f.name))
        for f in fields(event)  # type: ignore[arg-type]
        if f.name not in _ENVELOPE
    }
    return {
        "position": logged.position,
        "execution_id": str(event.originator_id),
        "version": event.originator_version,
        "type": logged.type,
        "timestamp": event.timestamp.isoformat(),  # type: ignore[attr-defined]
        "user_id": getattr(event, "user_id", None),
        "data": data,
    }


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
