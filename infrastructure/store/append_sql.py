"""One write to the PostgreSQL store as one statement: work-queue changes, then events.

`agent_ledger_append(...)` (`agent_ledger_append.sql`, filled in by `append_ddl`) does in
the database what the library's recorder does with a transaction of many statements: it
checks the writer's leases, changes the work queue, locks the events table (so positions
stay gap-free in commit order), inserts the events, notifies with the last position and
the topics committed, and returns the positions.
Called on an autocommit connection it is its own transaction: one round trip per write
instead of eight, and no pipeline whose failure can leave the driver's prepared
statements out of step with the server's.

Unlike the library's `POSTGRES_ENABLE_DB_FUNCTIONS` function, it takes the table lock
(without it, readers skip events committed out of order).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent

from agent_ledger.application.work import (
    Enqueue,
    Fence,
    Finish,
    Park,
    Reschedule,
    Wake,
    WorkChange,
)
from agent_ledger.application.work_memory import PARKED_FOREVER
from agent_ledger.infrastructure.store.sql_files import sql_file

APPEND_FUNCTION = "agent_ledger_append"

CALL = (
    f"SELECT * FROM {APPEND_FUNCTION}(%b::uuid[], %b::text[], %b::uuid[], %b::text[], "
    "%b::text[], %b::uuid[], %b::float8[], %b::uuid[], "
    "%b::uuid[], %b::int8[], %b::text[], %b::bytea[], %b::float8)"
)


NOTICE_LIMIT = 7900
"""Bytes of a notice's payload (PostgreSQL takes 8,000): longer lists of topics are left out."""


def parse_notice(payload: str) -> tuple[int, frozenset[str] | None] | None:
    """An events notice's last position and the topics committed up to it (None: not said);
    None for a notice that says neither (an older writer's)."""
    head, _, topics = payload.partition(" ")
    if not head.isdigit():
        return None
    return int(head), frozenset(topics.split(",")) if topics else None


def append_ddl(
    *,
    work_table: str,
    work_channel: str,
    lease_lost: str,
    events_table: str,
    events_channel: str,
    lock_timeout: int,
) -> str:
    """The function's definition (`agent_ledger_append.sql`); identifiers are quoted by the
    caller, except the events channel's name (a string here)."""
    return sql_file(
        __package__,
        "agent_ledger_append.sql",
        work_table=work_table,
        work_channel=work_channel,
        lease_lost=lease_lost,
        events_table=events_table,
        events_channel=events_channel,
        lock_timeout=lock_timeout,
        notice_limit=NOTICE_LIMIT,
    )


def append_arguments(
    changes: Sequence[WorkChange], events: Sequence[StoredEvent], now: float
) -> tuple[Any, ...]:
    """The call's arguments: each kind of change as arrays, events as one array per column."""
    fences: list[Fence] = []
    enqueued: list[Enqueue] = []
    kinds: list[str] = []
    changed: list[UUID] = []
    times: list[float] = []
    finished: list[UUID] = []
    for change in changes:
        match change:
            case Fence():
                fences.append(change)
            case Enqueue():
                enqueued.append(change)
            case Finish(execution_id):
                finished.append(execution_id)
            case Reschedule(execution_id, ready_at, release):
                kinds.append("release" if release else "reschedule")
                changed.append(execution_id)
                times.append(ready_at.timestamp())
            case Park(execution_id, ready_at):
                kinds.append("park")
                changed.append(execution_id)
                times.append(PARKED_FOREVER if ready_at is None else ready_at.timestamp())
            case Wake(execution_id, cancel):
                kinds.append("cancel" if cancel else "wake")
                changed.append(execution_id)
                times.append(now)
            case _:
                raise TypeError(f"unknown work change {change!r}")
    return (
        [f.execution_id for f in fences],
        [f.owner for f in fences],
        [e.execution_id for e in enqueued],
        [e.user_id for e in enqueued],
        kinds,
        changed,
        times,
        finished,
        [e.originator_id for e in events],
        [e.originator_version for e in events],
        [e.topic for e in events],
        [e.state for e in events],
        now,
    )
