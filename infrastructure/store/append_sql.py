"""One write to the PostgreSQL store as one statement: work-queue changes, then events.

`agent_ledger_append(...)` does in the database what the library's recorder does with a
transaction of many statements: it checks the writer's leases, changes the work queue,
locks the events table (so positions stay gap-free in commit order), inserts the events,
notifies with the last position and the topics committed, and returns the positions.
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

from application.work import Enqueue, Fence, Finish, Reschedule, Wake, WorkChange

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
    """The function's definition; identifiers are quoted by the caller, except the events
    channel's name (a string here)."""
    return f"""
CREATE OR REPLACE FUNCTION {APPEND_FUNCTION}(
  fence_ids uuid[], fence_owners text[], enqueue_ids uuid[], enqueue_users text[],
  change_kinds text[], change_ids uuid[], change_times float8[], finish_ids uuid[],
  ids uuid[], versions int8[], topics text[], states bytea[], now_ float8)
RETURNS SETOF int8 LANGUAGE plpgsql AS $$
DECLARE
  lost uuid;
  waiting boolean;
  positions int8[];
  notice text;
BEGIN
  SELECT f.id INTO lost FROM unnest(fence_ids, fence_owners) AS f(id, owner)
  WHERE NOT EXISTS (SELECT 1 FROM {work_table} w
                    WHERE w.execution_id = f.id AND w.lease_owner = f.owner) LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION '{lease_lost} on %', lost;
  END IF;
  IF cardinality(enqueue_ids) > 0 THEN
    INSERT INTO {work_table} (execution_id, user_id, ready_at)
      SELECT e.id, e.user_id, now_ FROM unnest(enqueue_ids, enqueue_users) AS e(id, user_id)
      ON CONFLICT (execution_id) DO NOTHING;
    PERFORM pg_notify('{work_channel}', '');
  END IF;
  -- in the order they were made: a reschedule and a wake-up of one execution do not commute
  FOR i IN 1 .. coalesce(cardinality(change_kinds), 0) LOOP
    CASE change_kinds[i]
      WHEN 'reschedule' THEN
        UPDATE {work_table} SET ready_at = change_times[i] WHERE execution_id = change_ids[i];
      WHEN 'release' THEN
        UPDATE {work_table} SET ready_at = change_times[i], lease_owner = NULL,
          lease_expires_at = NULL WHERE execution_id = change_ids[i];
      WHEN 'wake' THEN
        UPDATE {work_table} SET ready_at = LEAST(ready_at, change_times[i])
          WHERE execution_id = change_ids[i];
      WHEN 'cancel' THEN
        UPDATE {work_table} SET ready_at = LEAST(ready_at, change_times[i]),
          cancel_requested = TRUE WHERE execution_id = change_ids[i];
        PERFORM pg_notify('{work_channel}', change_ids[i]::text);
    END CASE;
  END LOOP;
  IF cardinality(finish_ids) > 0 THEN
    -- an ended execution frees its user's slot: a worker admits the next one waiting
    WITH ended AS (DELETE FROM {work_table} WHERE execution_id = ANY(finish_ids)
                   RETURNING user_id)
    SELECT EXISTS (SELECT 1 FROM {work_table} w
                   WHERE NOT w.admitted AND w.user_id IN (SELECT user_id FROM ended))
      INTO waiting;
    IF waiting THEN
      PERFORM pg_notify('{work_channel}', '');
    END IF;
  END IF;
  IF cardinality(ids) > 0 THEN
    SET LOCAL lock_timeout = '{lock_timeout}s';
    LOCK TABLE {events_table} IN EXCLUSIVE MODE;
    WITH inserted AS (
      INSERT INTO {events_table} (originator_id, originator_version, topic, state)
      SELECT * FROM unnest(ids, versions, topics, states)
      RETURNING notification_id)
    SELECT array_agg(notification_id ORDER BY notification_id) INTO positions FROM inserted;
    -- the notice says up to where, and which topics: a reader that wants none of them
    -- need not read (commits, hence notices, come in position order under the lock)
    SELECT positions[cardinality(positions)]::text || ' ' || string_agg(DISTINCT t, ',')
      INTO notice FROM unnest(topics) AS t;
    IF octet_length(notice) > {NOTICE_LIMIT} THEN
      notice := positions[cardinality(positions)]::text;
    END IF;
    PERFORM pg_notify('{events_channel}', notice);
    RETURN QUERY SELECT unnest(positions);
  END IF;
END $$"""


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
