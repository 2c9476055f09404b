"""What an event is called outside its aggregate: its class name in snake_case.

Projections record it (`last_event`, counts per type); the event log puts it on the wire.
"""

from __future__ import annotations

import functools


def event_type(event: object) -> str:
    """An event's type name (`AgentStarted`: `agent_started`)."""
    return event_type_of_class_name(type(event).__name__)


@functools.cache
def event_type_of_class_name(name: str) -> str:
    """The type name of the event class called `name`."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")
