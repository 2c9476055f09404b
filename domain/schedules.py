"""The Schedule aggregate: a user's standing order to start a process on a cron, as events.

Who defined or changed what (`ScheduleDefined`, `ScheduleChanged`, `ScheduleDeleted`) and
what each tick did (`TickFired`, `TickSkipped`, `ScheduleTriggered`) are events of one
aggregate per user and name, attributed and hash-chained by the `AuditedAggregate` base.
Recording a tick is how workers agree on it: of two that record the same tick, the second
finds the aggregate changed (a version conflict) and the tick taken.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from agent_ledger.domain.audited import SYSTEM, AuditedAggregate, AuditedCreated, AuditedEvent
from agent_ledger.domain.errors import DomainError
from agent_ledger.domain.hash_chain import GENESIS

SCHEDULE_NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
"""Letters, digits, `_`, `.` and `-`, starting with a letter; 64 characters at most."""


def schedule_topic(name: str) -> str:
    """The stored topic of a schedule's class or event: fixed, whatever the module."""
    return f"agent_ledger.schedule.{name}"


def schedule_id_for(user_id: str, name: str) -> UUID:
    """A schedule's id: a function of its owner and name."""
    pair = json.dumps([user_id, name])  # unambiguous whatever characters either holds
    return uuid5(NAMESPACE_URL, f"agent-ledger:schedule:{pair}")


def tick_key(user_id: str, name: str, tick: datetime) -> str:
    """The idempotency key of the execution a tick starts: one execution per tick."""
    return f"schedule:{user_id}:{name}:{tick.astimezone(UTC).isoformat()}"


class Overlap(StrEnum):
    """What a tick does while the schedule's latest execution has not finished."""

    SKIP = "skip"
    ALLOW = "allow"
    CANCEL_PREVIOUS = "cancel_previous"


@dataclass(frozen=True)
class ScheduleDefinition:
    """What a schedule starts, and when: checked by the application before it is recorded."""

    process: str
    input: dict[str, Any]
    cron: str
    version: int | None = None
    timezone: str = "UTC"
    paused: bool = False
    overlap: Overlap = Overlap.SKIP

    def plain(self) -> dict[str, Any]:
        return {**asdict(self), "overlap": self.overlap.value}

    @classmethod
    def from_plain(cls, plain: dict[str, Any]) -> ScheduleDefinition:
        return cls(**{**plain, "overlap": Overlap(plain["overlap"])})

    def changes_from(self, other: ScheduleDefinition) -> list[str]:
        """The fields whose values differ from `other`'s."""
        mine, theirs = self.plain(), other.plain()
        return [name for name in mine if mine[name] != theirs[name]]


TIMING_FIELDS = frozenset({"cron", "timezone", "paused"})
"""A change of these restarts the count of ticks: none from before it is fired late."""


class ScheduleError(DomainError):
    """A schedule's rule was broken; nothing was recorded."""


class ScheduleDeletedError(ScheduleError):
    """The schedule was deleted: only a new definition brings it back."""

    def __init__(self, name: str):
        super().__init__(f"schedule {name!r} was deleted")


class TickTakenError(ScheduleError):
    """A tick at or before the last one handled cannot be recorded again."""

    def __init__(self, name: str, tick: datetime):
        super().__init__(f"schedule {name!r} has already handled its tick at {tick.isoformat()}")


class ScheduleEvent(AuditedEvent):
    """Every event of a schedule after its definition."""


class Schedule(AuditedAggregate):
    """One user's named schedule, its changes, and the ticks it handled."""

    TOPIC = schedule_topic("Schedule")

    class Created(Aggregate.Created):
        TOPIC = schedule_topic("Created")  # required by the library; never recorded

    class ScheduleDefined(AuditedCreated):
        TOPIC = schedule_topic("ScheduleDefined")
        user_id: str
        name: str
        definition: dict[str, Any]
        caused_by: str
        correlation_id: str | None
        previous_hash: str
        hash: str

    class Snapshot(AuditedAggregate.Snapshot):
        TOPIC = schedule_topic("Snapshot")

    def __init__(self, user_id: str, name: str, definition: dict[str, Any], caused_by: str) -> None:
        self.user_id = user_id
        self.name = name
        self.definition = definition
        self.deleted = False
        self.changed_at: datetime = self.created_on
        """When the definition was last recorded, and by whom."""
        self.changed_by = caused_by
        self.ticks_from: datetime = self.created_on
        """Ticks after this instant are the schedule's to fire (when its timing last changed)."""
        self.last_tick: datetime | None = None
        """The latest tick handled (fired or skipped)."""
        self.last_execution_id: UUID | None = None
        """The execution of the latest tick or trigger that started one, when that tick (or
        trigger) fell, and the execution it asked to cancel first."""
        self.last_started_at: datetime | None = None
        self.last_cancelled: UUID | None = None
        self.chain_head = GENESIS

    @classmethod
    def define(
        cls,
        *,
        user_id: str,
        name: str,
        definition: ScheduleDefinition,
        caused_by: str = SYSTEM,
        correlation_id: str | None = None,
    ) -> Schedule:
        """A new schedule; its id is a function of owner and name."""
        return cls._create_audited(
            cls.ScheduleDefined,
            id=schedule_id_for(user_id, name),
            user_id=user_id,
            name=name,
            definition=definition.plain(),
            caused_by=caused_by,
            correlation_id=correlation_id,
        )

    @property
    def current(self) -> ScheduleDefinition:
        return ScheduleDefinition.from_plain(self.definition)

    @property
    def running(self) -> bool:
        """Whether its ticks fire now: defined, not deleted, not paused."""
        return not self.deleted and not self.current.paused

    # -- commands ----------------------------------------------------------------------------

    def change(self, definition: ScheduleDefinition) -> bool:
        """Record a new definition; False (nothing recorded) when it is the same. After a
        deletion every field counts as changed: the schedule is defined anew."""
        changed = definition.changes_from(self.current)
        if self.deleted:
            changed = list(definition.plain())
        if not changed:
            return False
        self.trigger_event(self.ScheduleChanged, definition=definition.plain(), changed=changed)
        return True

    def delete(self) -> None:
        if self.deleted:
            raise ScheduleDeletedError(self.name)
        self.trigger_event(self.ScheduleDeleted)

    def fire_tick(
        self, tick: datetime, execution_id: UUID, *, late: bool, missed: int, cancel: UUID | None
    ) -> None:
        """Record that `tick` starts `execution_id` (after cancelling `cancel`)."""
        self._require_new_tick(tick)
        self.trigger_event(
            self.TickFired,
            tick=tick,
            execution_id=execution_id,
            late=late,
            missed=missed,
            cancelled=cancel,
        )

    def skip_tick(
        self, tick: datetime, *, late: bool, missed: int, reason: str, running: UUID | None
    ) -> None:
        """Record that `tick` starts nothing, and why."""
        self._require_new_tick(tick)
        self.trigger_event(
            self.TickSkipped, tick=tick, late=late, missed=missed, reason=reason, running=running
        )

    def trigger(self, at: datetime, execution_id: UUID, cancel: UUID | None) -> None:
        """Record a start asked for by hand, outside the cron (paused or not)."""
        if self.deleted:
            raise ScheduleDeletedError(self.name)
        self.trigger_event(
            self.ScheduleTriggered, at=at, execution_id=execution_id, cancelled=cancel
        )

    def _require_new_tick(self, tick: datetime) -> None:
        if self.deleted:
            raise ScheduleDeletedError(self.name)
        if self.last_tick is not None and tick <= self.last_tick:
            raise TickTakenError(self.name, tick)

    # -- events ------------------------------------------------------------------------------

    class ScheduleChanged(ScheduleEvent):
        TOPIC = schedule_topic("ScheduleChanged")
        definition: dict[str, Any]
        changed: list[str]

        def apply(self, schedule: Schedule) -> None:
            if schedule.deleted or TIMING_FIELDS.intersection(self.changed):
                schedule.ticks_from = self.timestamp  # no tick from before is fired late
            schedule.definition = self.definition
            schedule.deleted = False
            schedule.changed_at, schedule.changed_by = self.timestamp, self.caused_by

    class ScheduleDeleted(ScheduleEvent):
        TOPIC = schedule_topic("ScheduleDeleted")

        def apply(self, schedule: Schedule) -> None:
            schedule.deleted = True
            schedule.changed_at, schedule.changed_by = self.timestamp, self.caused_by

    class TickFired(ScheduleEvent):
        TOPIC = schedule_topic("TickFired")
        tick: datetime
        execution_id: UUID
        late: bool
        missed: int
        cancelled: UUID | None

        def apply(self, schedule: Schedule) -> None:
            schedule.last_tick = self.tick
            schedule.last_execution_id, schedule.last_started_at = self.execution_id, self.tick
            schedule.last_cancelled = self.cancelled

    class TickSkipped(ScheduleEvent):
        TOPIC = schedule_topic("TickSkipped")
        tick: datetime
        late: bool
        missed: int
        reason: str
        running: UUID | None

        def apply(self, schedule: Schedule) -> None:
            schedule.last_tick = self.tick

    class ScheduleTriggered(ScheduleEvent):
        TOPIC = schedule_topic("ScheduleTriggered")
        at: datetime
        execution_id: UUID
        cancelled: UUID | None

        def apply(self, schedule: Schedule) -> None:
            schedule.last_execution_id, schedule.last_started_at = self.execution_id, self.at
            schedule.last_cancelled = self.cancelled

    # -- snapshots ---------------------------------------------------------------------------

    def _restore_state(self) -> None:
        for name in ("changed_at", "ticks_from", "last_tick", "last_started_at"):
            value = self.__dict__.get(name)
            if isinstance(value, str):
                setattr(self, name, datetime.fromisoformat(value))
        for name in ("last_execution_id", "last_cancelled"):
            value = self.__dict__.get(name)
            if isinstance(value, str):
                setattr(self, name, UUID(value))
