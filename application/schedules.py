"""Schedules: each user's `Schedule` aggregates in an event store of their own, and the rows
that list them (the read-model table the API lists and the scheduler scans).

Every command saves the aggregate, then writes its row from the saved state; rows carry the
aggregate's version and a row is only ever replaced by a newer one, so writers racing each
other leave the newest. A row a crash left behind is rewritten by the next command, or by a
scheduler that finds the aggregate ahead of it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import RecordConflictError

from agent_ledger.application.cron import Cron, CronError, time_zone
from agent_ledger.application.processes import ProcessCatalog, UnknownProcessError
from agent_ledger.domain.errors import DomainError
from agent_ledger.domain.schedules import Schedule, ScheduleDefinition, schedule_id_for

ATTEMPTS = 5
"""Tries of a command that finds its schedule changed meanwhile (a tick recorded)."""
SNAPSHOT_INTERVAL = 100
"""Every this many events a snapshot: a schedule ticking every second loads quickly."""
T = TypeVar("T")


class ScheduleNotFoundError(DomainError):
    """The caller has no schedule of this name."""

    def __init__(self, name: str):
        super().__init__(f"no schedule is named {name!r}")
        self.name = name


class InvalidScheduleError(DomainError):
    """A definition that cannot be scheduled: `field` names the part at fault."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class Schedules(Application[UUID]):
    """The `Schedule` aggregates' store."""

    name = "Schedules"
    snapshotting_intervals = {Schedule: SNAPSHOT_INTERVAL}

    def get_schedule(self, schedule_id: UUID) -> Schedule | None:
        try:
            schedule: Schedule = self.repository.get(schedule_id)
        except AggregateNotFoundError:
            return None
        return schedule


@dataclass(frozen=True)
class ScheduleRow:
    """A schedule as listed: its definition, its timing state and who changed it last."""

    schedule_id: UUID
    user_id: str
    name: str
    definition: ScheduleDefinition
    version: int
    deleted: bool
    ticks_from: datetime
    last_tick: datetime | None
    last_execution_id: UUID | None
    created_at: datetime
    updated_at: datetime
    updated_by: str

    @classmethod
    def of(cls, schedule: Schedule) -> ScheduleRow:
        return cls(
            schedule_id=schedule.id,
            user_id=schedule.user_id,
            name=schedule.name,
            definition=schedule.current,
            version=schedule.version,
            deleted=schedule.deleted,
            ticks_from=schedule.ticks_from,
            last_tick=schedule.last_tick,
            last_execution_id=schedule.last_execution_id,
            created_at=schedule.created_on,
            updated_at=schedule.changed_at,
            updated_by=schedule.changed_by,
        )

    @property
    def reference(self) -> datetime:
        """The instant after which its ticks are still to be handled."""
        return max(self.ticks_from, self.last_tick or self.ticks_from)

    def cron(self) -> Cron:
        return Cron(self.definition.cron, time_zone(self.definition.timezone))


class ScheduleIndex(Protocol):
    """The rows of every schedule: one per user and name, deleted ones kept as tombstones."""

    def put(self, row: ScheduleRow) -> None:
        """Write `row` unless a row of a newer version of its schedule is there."""

    def get(self, user_id: str, name: str) -> ScheduleRow | None:
        """The row, deleted or not."""

    def owned_by(self, user_id: str | None) -> list[ScheduleRow]:
        """The user's schedules that are not deleted, by name (None: every user's, by user)."""

    def running(self) -> list[ScheduleRow]:
        """Every schedule whose ticks fire: not deleted, not paused."""


class InMemoryScheduleIndex:
    """Schedule rows in memory (unit tests)."""

    def __init__(self) -> None:
        self._rows: dict[UUID, ScheduleRow] = {}
        self._lock = threading.Lock()

    def put(self, row: ScheduleRow) -> None:
        with self._lock:
            known = self._rows.get(row.schedule_id)
            if known is None or known.version < row.version:
                self._rows[row.schedule_id] = row

    def get(self, user_id: str, name: str) -> ScheduleRow | None:
        with self._lock:
            return self._rows.get(schedule_id_for(user_id, name))

    def owned_by(self, user_id: str | None) -> list[ScheduleRow]:
        with self._lock:
            rows = [r for r in self._rows.values() if user_id in (None, r.user_id)]
        return sorted((r for r in rows if not r.deleted), key=lambda r: (r.user_id, r.name))

    def running(self) -> list[ScheduleRow]:
        with self._lock:
            return [r for r in self._rows.values() if not r.deleted and not r.definition.paused]


@dataclass(frozen=True)
class PutOutcome:
    """What a PUT did: the row now, and whether the schedule was new or changed."""

    row: ScheduleRow
    created: bool
    changed: bool


class ScheduleBook:
    """Define, change, delete and read schedules: the API's and the CLI's commands."""

    def __init__(
        self,
        schedules: Schedules,
        index: ScheduleIndex,
        catalog: ProcessCatalog,
        max_input_bytes: int | None = None,
    ):
        self.schedules = schedules
        self.index = index
        self.catalog = catalog
        self.max_input_bytes = max_input_bytes

    def check(self, definition: ScheduleDefinition) -> Cron:
        """Refuse what could not be scheduled, naming the field: the cron, the time zone,
        the process (and version), the input's size."""
        try:
            cron = Cron.parse(definition.cron, definition.timezone)
        except CronError as error:
            raise InvalidScheduleError(error.field, error.problem) from None
        try:
            self.catalog.get(definition.process, definition.version)
        except UnknownProcessError as error:
            field = "version" if definition.version is not None else "process"
            raise InvalidScheduleError(field, str(error)) from None
        if self.max_input_bytes is not None:
            size = len(json.dumps(definition.input, separators=(",", ":")).encode())
            if size > self.max_input_bytes:
                raise InvalidScheduleError(
                    "input", f"the input is {size} bytes; the limit is {self.max_input_bytes}"
                )
        return cron

    def put_schedule(
        self,
        user_id: str,
        name: str,
        definition: ScheduleDefinition,
        *,
        by: str,
        correlation_id: str | None = None,
    ) -> PutOutcome:
        """Define the schedule, or change it (a definition equal to the current one changes
        nothing and records nothing)."""
        self.check(definition)
        return _retried(name, lambda: self._put(user_id, name, definition, by, correlation_id))

    def delete_schedule(
        self, user_id: str, name: str, *, by: str, correlation_id: str | None = None
    ) -> None:
        def delete() -> None:
            schedule = self.load(user_id, name)
            schedule.act_as(by, correlation_id)
            schedule.delete()
            self.record(schedule)

        _retried(name, delete)

    def get_schedule(self, user_id: str, name: str) -> ScheduleRow:
        """The caller's schedule of this name (another user's does not exist for them)."""
        row = self.index.get(user_id, name)
        if row is None or row.deleted:
            raise ScheduleNotFoundError(name)
        return row

    def list_schedules(self, user_id: str | None) -> list[ScheduleRow]:
        """The user's schedules by name (None: every user's)."""
        return self.index.owned_by(user_id)

    def load(self, user_id: str, name: str) -> Schedule:
        """The caller's schedule itself, from its events."""
        schedule = self.schedules.get_schedule(schedule_id_for(user_id, name))
        if schedule is None or schedule.deleted:
            raise ScheduleNotFoundError(name)
        return schedule

    def record(self, schedule: Schedule) -> ScheduleRow:
        """Save the schedule's new events, then its row."""
        self.schedules.save(schedule)
        row = ScheduleRow.of(schedule)
        self.index.put(row)
        return row

    def repaired(self, schedule: Schedule) -> ScheduleRow:
        """The schedule's row, rewritten if it is behind the aggregate (a crash between a
        save and its row)."""
        row = ScheduleRow.of(schedule)
        known = self.index.get(schedule.user_id, schedule.name)
        if known is None or known.version < row.version:
            self.index.put(row)
        return row

    def _put(
        self,
        user_id: str,
        name: str,
        definition: ScheduleDefinition,
        by: str,
        correlation_id: str | None,
    ) -> PutOutcome:
        schedule = self.schedules.get_schedule(schedule_id_for(user_id, name))
        if schedule is None:
            schedule = Schedule.define(
                user_id=user_id,
                name=name,
                definition=definition,
                caused_by=by,
                correlation_id=correlation_id,
            )
            return PutOutcome(self.record(schedule), created=True, changed=True)
        was_deleted = schedule.deleted
        schedule.act_as(by, correlation_id)
        if not schedule.change(definition):
            return PutOutcome(self.repaired(schedule), created=False, changed=False)
        return PutOutcome(self.record(schedule), created=was_deleted, changed=True)


def _retried(name: str, command: Callable[[], T]) -> T:
    """Run a command again on the newer state when a tick was recorded meanwhile."""
    for _ in range(ATTEMPTS):
        try:
            return command()
        except RecordConflictError:
            continue
    raise RecordConflictError(f"schedule {name!r} kept changing; try again")
