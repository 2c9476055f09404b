"""The scheduler: fires schedules' ticks, each once whatever the number of workers.

Every worker runs one. At a tick each of them loads the schedule, decides (start, cancel the
previous execution then start, or skip while it runs) and records the decision on the
`Schedule` aggregate; one save wins, the others find the tick taken. Then each makes sure
the recorded decision was carried out, through the start command with the idempotency key
`schedule:<user>:<name>:<tick>`: a worker killed between recording and starting leaves the
start to the others (or to itself, restarted), and two starting together make one
execution.

Ticks missed while no worker ran are not replayed, except the most recent (recorded
`late`, with how many were passed over): a tick is on time within `GRACE` of its instant,
and only ticks on time are fired in turn.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from eventsourcing.persistence import RecordConflictError

from agent_ledger.application.cron import Cron
from agent_ledger.application.executions import ExecutionNotFoundError, Executions
from agent_ledger.application.processes import RegisteredProcess, UnknownProcessError
from agent_ledger.application.schedules import ScheduleBook, ScheduleRow
from agent_ledger.application.starter import (
    IdempotencyKeyReusedError,
    StartRequest,
    start_execution,
)
from agent_ledger.domain.errors import DomainError
from agent_ledger.domain.execution_state import ExecutionRuleError, execution_id_for
from agent_ledger.domain.schedules import Overlap, Schedule, tick_key

log = logging.getLogger(__name__)

GRACE = timedelta(seconds=5)
"""How late a tick may be fired and still count as on time."""
MISSED_COUNTED = 1000
"""Ticks passed over are counted up to this many."""
ON_TIME_AT_ONCE = 100
ATTEMPTS = 5
_RESOLUTION = timedelta(microseconds=1)


class ScheduleBusyError(DomainError):
    """A trigger of a schedule whose overlap is `skip` while its latest execution runs."""

    def __init__(self, name: str, running: UUID):
        super().__init__(
            f"schedule {name!r} skips while its execution {running} has not finished "
            "(overlap: skip)"
        )
        self.running = running


@dataclass(frozen=True)
class DueTick:
    """A tick to handle now: whether it is late, and how many before it were passed over."""

    tick: datetime
    late: bool = False
    missed: int = 0


def due_ticks(cron: Cron, reference: datetime, now: datetime, grace: timedelta) -> list[DueTick]:
    """The ticks to handle at `now` of a schedule that handled everything up to `reference`:
    those on time (within `grace`), in order; or, when none is, the latest one, late."""
    latest = cron.latest_at_or_before(now)
    if latest is None or latest <= reference:
        return []
    window = max(reference, now - grace)
    on_time = cron.ticks(window, now, ON_TIME_AT_ONCE)
    passed_upto = window if on_time else latest - _RESOLUTION
    missed = (
        len(cron.ticks(reference, passed_upto, MISSED_COUNTED)) if passed_upto > reference else 0
    )
    if not on_time:
        return [DueTick(latest, late=True, missed=missed)]
    first, *rest = on_time
    return [DueTick(first, missed=missed), *(DueTick(tick) for tick in rest)]


@dataclass(frozen=True)
class Triggered:
    """A start asked for by hand: when, which execution, and the one it cancelled."""

    at: datetime
    execution_id: UUID
    cancelled: UUID | None
    position: int


class Scheduler:
    """Fires the due ticks of every running schedule, and starts a schedule by hand."""

    def __init__(
        self,
        book: ScheduleBook,
        executions: Executions,
        *,
        name: str,
        grace: timedelta = GRACE,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.book = book
        self.executions = executions
        self.name = name
        self.grace = grace
        self.now = now
        self._seen: dict[UUID, int] = {}
        """Each schedule's version when this scheduler last looked at it."""
        self._carried_out: dict[UUID, UUID] = {}
        """Each schedule's latest start that this scheduler made sure of."""
        self._following: dict[UUID, tuple[int, datetime | None]] = {}
        """Each schedule's next tick, as of a version of its row: a pass computes it again
        only once the row changed or the tick is due."""

    def run_pass(self) -> datetime | None:
        """Handle every due tick; say when the next tick of a running schedule falls."""
        now = self.now()
        upcoming: datetime | None = None
        for row in self.book.index.running():
            known = self._following.get(row.schedule_id)
            if known is not None and known[0] == row.version and (known[1] or now) > now:
                following = known[1]  # unchanged since, and not due yet
            else:
                try:
                    cron = row.cron()
                    self._handle(row, cron, now)
                    following = cron.next_after(max(now, row.reference))
                except Exception:  # one schedule's trouble neither stops nor delays the others
                    log.exception("schedule %r of %r: its ticks failed", row.name, row.user_id)
                    continue
                self._following[row.schedule_id] = (row.version, following)
            if following is not None and (upcoming is None or following < upcoming):
                upcoming = following
        return upcoming

    def trigger(self, user_id: str, name: str, *, by: str, correlation_id: str | None) -> Triggered:
        """Start the schedule's process now, paused or not; its overlap rule applies."""
        for _ in range(ATTEMPTS):
            schedule = self.book.load(user_id, name)
            self._carry_out(schedule)  # the latest start exists before its status is read
            at = self.now()
            running = self._under_way(schedule)
            overlap = schedule.current.overlap
            if overlap is Overlap.SKIP and running is not None:
                raise ScheduleBusyError(name, running)
            process = self._process(schedule)
            execution_id = execution_id_for(user_id, tick_key(user_id, name, at))
            cancel = running if overlap is Overlap.CANCEL_PREVIOUS else None
            schedule.act_as(by, correlation_id)
            schedule.trigger(at, execution_id, cancel)
            try:
                self.book.record(schedule)
            except RecordConflictError:
                continue  # a tick was recorded meanwhile: decide again
            position = self._carry_out(schedule, process)
            return Triggered(at, execution_id, cancel, position)
        raise RecordConflictError(f"schedule {name!r} kept changing; try again")

    # -- ticks ---------------------------------------------------------------------------------

    def _handle(self, row: ScheduleRow, cron: Cron, now: datetime) -> None:
        seen = self._seen.get(row.schedule_id) == row.version
        if seen and not due_ticks(cron, row.reference, now, self.grace):
            return  # nothing due, and nothing new since last time
        conflicts = 0
        while conflicts < ATTEMPTS:
            schedule = self.book.schedules.get_schedule(row.schedule_id)
            if schedule is None:
                return
            self._seen[schedule.id] = schedule.version
            self._carry_out(schedule)  # what another worker recorded and may not have done
            due = due_ticks(cron_of(schedule), _reference(schedule), now, self.grace)
            if not schedule.running or not due:
                self.book.repaired(schedule)
                return
            self._decide(schedule, due[0])
            try:
                self.book.record(schedule)
            except RecordConflictError:
                conflicts += 1  # another worker recorded it (or a change came): look again
                continue
            self._seen[schedule.id] = schedule.version
            self._carry_out(schedule)

    def _decide(self, schedule: Schedule, due: DueTick) -> None:
        schedule.act_as(
            f"scheduler:{self.name}", tick_key(schedule.user_id, schedule.name, due.tick)
        )
        running = self._under_way(schedule)
        overlap = schedule.current.overlap
        if overlap is Overlap.SKIP and running is not None:
            reason = f"overlap skip: execution {running} has not finished"
            schedule.skip_tick(
                due.tick, late=due.late, missed=due.missed, reason=reason, running=running
            )
            return
        try:
            self._process(schedule)
        except UnknownProcessError as error:
            schedule.skip_tick(
                due.tick, late=due.late, missed=due.missed, reason=str(error), running=None
            )
            return
        key = tick_key(schedule.user_id, schedule.name, due.tick)
        schedule.fire_tick(
            due.tick,
            execution_id_for(schedule.user_id, key),
            late=due.late,
            missed=due.missed,
            cancel=running if overlap is Overlap.CANCEL_PREVIOUS else None,
        )

    # -- starts --------------------------------------------------------------------------------

    def _carry_out(self, schedule: Schedule, process: RegisteredProcess | None = None) -> int:
        """Make sure the latest recorded start happened (its cancellation first): once per
        start in this scheduler; the start command makes a repeat start nothing."""
        execution_id, at = schedule.last_execution_id, schedule.last_started_at
        if execution_id is None or at is None or self._carried_out.get(schedule.id) == execution_id:
            return self.executions.last_position()
        name = schedule.name
        if schedule.last_cancelled is not None:
            self._cancel(schedule, schedule.last_cancelled, at)
        key = tick_key(schedule.user_id, name, at)
        request = StartRequest(
            user_id=schedule.user_id,
            process=process or self._process(schedule),
            input=schedule.current.input,
            idempotency_key=key,
            caused_by=f"schedule:{name}",
            correlation_id=key,
        )
        try:
            started = start_execution(self.executions, request)
        except IdempotencyKeyReusedError:  # started, then the schedule's input changed
            started = None
        self._carried_out[schedule.id] = execution_id
        return self.executions.last_position() if started is None else started.position

    def _cancel(self, schedule: Schedule, execution_id: UUID, at: datetime) -> None:
        name = schedule.name
        with contextlib.suppress(ExecutionNotFoundError, ExecutionRuleError):  # it finished
            self.executions.request_cancellation(
                execution_id,
                user_id=schedule.user_id,
                by=f"schedule:{name}",
                reason=f"replaced by schedule {name!r} at {at.astimezone(UTC).isoformat()}",
                caused_by=f"schedule:{name}",
            )

    def _under_way(self, schedule: Schedule) -> UUID | None:
        """The schedule's latest execution, if it has not finished (pending, running,
        waiting) and its overlap rule asks."""
        execution_id = schedule.last_execution_id
        if execution_id is None or schedule.current.overlap is Overlap.ALLOW:
            return None
        try:
            execution = self.executions.get_execution(execution_id)
        except ExecutionNotFoundError:
            return None
        return None if execution.status.is_terminal else execution_id

    def _process(self, schedule: Schedule) -> RegisteredProcess:
        definition = schedule.current
        return self.book.catalog.get(definition.process, definition.version)


def cron_of(schedule: Schedule) -> Cron:
    return ScheduleRow.of(schedule).cron()


def _reference(schedule: Schedule) -> datetime:
    return ScheduleRow.of(schedule).reference
