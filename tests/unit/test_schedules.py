"""Schedules in memory: the aggregate's events, cron rules, which ticks are due, and the
scheduler's decisions (one execution per tick, overlap, catch-up) on a clock the test moves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agent_ledger.application.cron import Cron, CronError
from agent_ledger.application.executions import Executions
from agent_ledger.application.processes import InMemoryProcessCatalog
from agent_ledger.application.scheduler import DueTick, ScheduleBusyError, Scheduler, due_ticks
from agent_ledger.application.schedules import (
    InMemoryScheduleIndex,
    InvalidScheduleError,
    ScheduleBook,
    ScheduleNotFoundError,
    Schedules,
)
from agent_ledger.application.work_memory import IN_MEMORY_ENV
from agent_ledger.domain.execution_state import ExecutionStatus, execution_id_for
from agent_ledger.domain.hash_chain import GENESIS
from agent_ledger.domain.schedules import (
    Overlap,
    Schedule,
    ScheduleDefinition,
    TickTakenError,
    schedule_id_for,
    tick_key,
)

T0 = datetime(2025, 6, 2, 12, 0, 0, tzinfo=UTC)
EVERY_10S = ScheduleDefinition(process="echo", input={"n": 1}, cron="*/10 * * * * *")
ECHO = {"name": "echo", "steps": [{"id": "a", "type": "agent_task", "agent": "echo"}]}


class Clock:
    def __init__(self, now: datetime):
        self.at = now

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def book() -> ScheduleBook:
    catalog = InMemoryProcessCatalog()
    catalog.register(ECHO)
    return ScheduleBook(Schedules(), InMemoryScheduleIndex(), catalog, max_input_bytes=100)


def scheduler(
    book: ScheduleBook, executions: Executions, clock: Clock, name: str = "w"
) -> Scheduler:
    return Scheduler(book, executions, name=name, now=clock)


def defined(book: ScheduleBook, definition: ScheduleDefinition) -> datetime:
    """Define ann's schedule `s`; its first tick."""
    row = book.put_schedule("ann", "s", definition, by="user:ann").row
    first = row.cron().next_after(row.ticks_from)
    assert first is not None
    return first


def test_changes_are_attributed_events_linked_in_a_chain() -> None:
    schedule = Schedule.define(user_id="ann", name="s", definition=EVERY_10S, caused_by="user:ann")
    schedule.act_as("admin:root")
    assert schedule.change(EVERY_10S) is False  # the same definition records nothing
    assert schedule.change(ScheduleDefinition(**{**EVERY_10S.plain(), "overlap": Overlap.ALLOW}))
    schedule.delete()

    events = schedule.collect_events()
    assert [type(e).__name__ for e in events] == [
        "ScheduleDefined",
        "ScheduleChanged",
        "ScheduleDeleted",
    ]
    assert [e.caused_by for e in events] == ["user:ann", "admin:root", "admin:root"]  # type: ignore[attr-defined]
    assert events[1].changed == ["overlap"]  # type: ignore[attr-defined]
    assert events[0].previous_hash == GENESIS  # type: ignore[attr-defined]
    assert events[2].previous_hash == events[1].hash  # type: ignore[attr-defined]
    assert schedule.id == schedule_id_for("ann", "s") != schedule_id_for("bob", "s")


def test_a_tick_is_recorded_once() -> None:
    schedule = Schedule.define(user_id="ann", name="s", definition=EVERY_10S, caused_by="u")
    schedule.fire_tick(T0, execution_id_for("ann", "k"), late=False, missed=0, cancel=None)

    with pytest.raises(TickTakenError):
        schedule.skip_tick(T0, late=False, missed=0, reason="x", running=None)


@pytest.mark.parametrize(
    ("expression", "field"),
    [
        ("* * *", "cron"),
        ("* * * * * * *", "cron"),  # no year field
        ("61 * * * * *", "cron"),
        ("0 0 30 2 *", "cron"),  # never fires
    ],
)
def test_a_cron_that_cannot_fire_is_refused_naming_the_field(expression: str, field: str) -> None:
    with pytest.raises(CronError) as refused:
        Cron.parse(expression, now=T0)
    assert refused.value.field == field


def test_six_fields_put_seconds_first_in_the_schedule_time_zone() -> None:
    assert Cron.parse("*/15 * * * * *", now=T0).upcoming(T0, 2)[1] == T0 + timedelta(seconds=30)
    paris = Cron.parse("0 30 8 * * *", "Europe/Paris", now=T0)
    assert paris.next_after(T0) == datetime(2025, 6, 3, 6, 30, tzinfo=UTC)  # 08:30 CEST
    with pytest.raises(CronError) as refused:
        Cron.parse("* * * * *", "Mars/Olympus")
    assert refused.value.field == "timezone"


def test_ticks_on_time_are_due_in_turn_and_of_missed_ones_only_the_latest_late() -> None:
    cron = Cron.parse("*/10 * * * * *", now=T0)
    grace = timedelta(seconds=5)

    assert due_ticks(cron, T0, T0 + timedelta(seconds=9), grace) == []
    assert due_ticks(cron, T0, T0 + timedelta(seconds=10.2), grace) == [
        DueTick(T0 + timedelta(seconds=10))
    ]
    hour_later = T0 + timedelta(hours=1, seconds=7)
    assert due_ticks(cron, T0, hour_later, grace) == [
        DueTick(T0 + timedelta(hours=1), late=True, missed=359)
    ]


def test_book_refuses_what_it_cannot_schedule_and_hides_other_users(book: ScheduleBook) -> None:
    cases = {
        "process": ScheduleDefinition(process="nope", input={}, cron="* * * * *"),
        "version": ScheduleDefinition(process="echo", input={}, cron="* * * * *", version=9),
        "timezone": ScheduleDefinition(process="echo", input={}, cron="* * * * *", timezone="X/Y"),
        "input": ScheduleDefinition(process="echo", input={"x": "y" * 200}, cron="* * * * *"),
    }
    for field, definition in cases.items():
        with pytest.raises(InvalidScheduleError) as refused:
            book.put_schedule("ann", "s", definition, by="user:ann")
        assert refused.value.field == field
    assert book.list_schedules("ann") == []

    assert book.put_schedule("ann", "s", EVERY_10S, by="user:ann").created
    with pytest.raises(ScheduleNotFoundError):
        book.get_schedule("bob", "s")


def test_each_tick_starts_one_execution_whatever_the_number_of_schedulers(
    book: ScheduleBook,
) -> None:
    executions = Executions(env=IN_MEMORY_ENV)
    first = defined(book, ScheduleDefinition(**{**EVERY_10S.plain(), "overlap": Overlap.ALLOW}))
    clock = Clock(first + timedelta(seconds=0.01))
    workers = [scheduler(book, executions, clock, name) for name in ("a", "b", "c")]

    for worker in workers:
        assert worker.run_pass() == first + timedelta(seconds=10)
    clock.at += timedelta(seconds=10)
    for worker in reversed(workers):
        worker.run_pass()

    schedule = book.load("ann", "s")
    ticks = [first, first + timedelta(seconds=10)]
    ids = [execution_id_for("ann", tick_key("ann", "s", tick)) for tick in ticks]
    assert executions.get_executions(ids).keys() == set(ids)
    assert executions.last_position() == 2  # two starts, nothing else
    started = executions.get_execution(ids[0])
    assert started.idempotency_key == f"schedule:ann:s:{ticks[0].isoformat()}"
    assert schedule.last_tick == ticks[1]
    assert schedule.version == 3


def test_overlap_skips_or_cancels_while_the_latest_execution_runs(book: ScheduleBook) -> None:
    executions = Executions(env=IN_MEMORY_ENV)
    clock = Clock(defined(book, EVERY_10S))  # overlap: skip
    worker = scheduler(book, executions, clock)
    worker.run_pass()
    first = book.load("ann", "s").last_execution_id
    assert first is not None

    clock.at += timedelta(seconds=10)
    worker.run_pass()  # the first is still pending: skipped
    assert book.load("ann", "s").last_execution_id == first
    with pytest.raises(ScheduleBusyError):
        worker.trigger("ann", "s", by="user:ann", correlation_id=None)

    cancelling = ScheduleDefinition(**{**EVERY_10S.plain(), "overlap": Overlap.CANCEL_PREVIOUS})
    book.put_schedule("ann", "s", cancelling, by="user:ann")
    triggered = worker.trigger("ann", "s", by="user:ann", correlation_id="c-1")

    assert triggered.cancelled == first
    cancelled = executions.get_execution(first)
    assert cancelled.cancellation is not None
    assert cancelled.cancellation["by"] == "schedule:s"
    assert executions.get_execution(triggered.execution_id).status is ExecutionStatus.PENDING
