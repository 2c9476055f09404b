"""The wire form of a stored event, shared by the history API and the live tail."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from application.executions import LoggedEvent
from domain.executions import event_type

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
        "type": event_type(event),
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
