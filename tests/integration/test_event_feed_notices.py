"""The event feed on PostgreSQL follows the store by its notices: how far each write went
and which types it committed, so it reads only when a subscriber wants one of them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from agent_ledger.application.event_log import LoggedEvent
from agent_ledger.application.executions import Executions
from agent_ledger.application.processes import InMemoryProcessCatalog
from agent_ledger.application.starter import StartRequest, start_execution
from agent_ledger.infrastructure.feed.event_feed import EventFeed
from agent_ledger.infrastructure.feed.notices import StoreNotices
from agent_ledger.infrastructure.schema import initialize_schema
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.persistence import libpq_dsn, open_executions

pytestmark = pytest.mark.postgres

PROCESS = {
    "name": "noticed",
    "steps": [{"id": "only", "type": "agent_task", "agent": "echo", "input": {}}],
}


@pytest.fixture
def settings(postgres_url: str, tmp_path: Path) -> Settings:
    settings = Settings(database_url=postgres_url, jwt_secret="n" * 40, data_dir=tmp_path)
    initialize_schema(settings)
    return settings


@pytest.fixture
def stores(settings: Settings) -> Iterator[tuple[Executions, Executions]]:
    """The feed's process's store, and another process's (a worker's) writing beside it."""
    mine, theirs = open_executions(settings), open_executions(settings)
    try:
        yield mine, theirs
    finally:
        mine.close()
        theirs.close()


class Counted:
    """Counts the feed's reads of the store (the calls pass through)."""

    def __init__(self, executions: Executions):
        self.heads = self.pages = 0
        self._last_position = executions.last_position
        self._read_log = executions.read_log
        executions.last_position = self.last_position  # type: ignore[method-assign]
        executions.read_log = self.read_log  # type: ignore[method-assign]

    def last_position(self) -> int:
        self.heads += 1
        return self._last_position()

    def read_log(self, **options: Any) -> list[LoggedEvent]:
        self.pages += 1
        return self._read_log(**options)


class Received:
    def __init__(self) -> None:
        self.events: list[LoggedEvent] = []
        self.upto = 0
        self.changed = threading.Condition()

    def __call__(self, events: list[LoggedEvent], upto: int) -> None:
        with self.changed:
            self.events.extend(events)
            self.upto = upto
            self.changed.notify_all()

    def wait(self, done: Callable[[], bool]) -> None:
        with self.changed:
            assert self.changed.wait_for(done, timeout=10), (self.upto, self.events)


@contextmanager
def following(
    settings: Settings, executions: Executions, wanted: str
) -> Iterator[tuple[EventFeed, Received]]:
    """An event feed on `executions` that hands `Received` the events of type `wanted`,
    woken by notices alone (its poll comes too late for any test)."""
    notices = StoreNotices(libpq_dsn(settings))
    feed = EventFeed(executions, poll_interval=60, notices=notices)
    received = Received()
    feed.subscribe(received, lambda: frozenset({wanted}))
    feed.start()
    notices.start()
    try:
        yield feed, received
    finally:
        notices.stop()
        feed.stop()


def listening(feed: EventFeed, writer: Executions, received: Received) -> None:
    """Once the feed has seen a write made after it started, it listens (as it connects,
    it reads the head: a write before that may have gone unnoticed)."""
    started(writer, user="before")
    head = writer.last_position()
    received.wait(lambda: received.upto >= head)


def started(executions: Executions, user: str = "noticed") -> UUID:
    process, _ = InMemoryProcessCatalog().register(PROCESS)
    return start_execution(
        executions, StartRequest(user_id=user, process=process, input={})
    ).execution_id


def test_writes_of_unwanted_types_cost_no_read_and_wanted_ones_arrive_once_in_order(
    settings: Settings, stores: tuple[Executions, Executions]
) -> None:
    mine, theirs = stores
    with following(settings, mine, "execution_failed") as (feed, received):
        listening(feed, theirs, received)
        counted = Counted(mine)
        ids = [started(writer) for writer in (mine, theirs, mine, theirs)]
        head = theirs.last_position()
        received.wait(lambda: received.upto >= head)
        assert (counted.heads, counted.pages) == (0, 0)  # the notices said it all
        assert received.events == []

        failed = []
        for execution_id, writer in zip(ids, (theirs, mine, theirs, mine), strict=True):
            execution = writer.get_execution(execution_id)
            execution.fail(error={"message": "stop"})
            failed.append(writer.save_and_position(execution))
        received.wait(lambda: received.upto >= failed[-1])
        assert [e.position for e in received.events] == failed
        assert {e.type for e in received.events} == {"execution_failed"}
        assert counted.heads == 0
        assert counted.pages >= 1


def test_a_notice_without_topics_or_a_missed_one_falls_back_to_reading_the_store(
    settings: Settings, stores: tuple[Executions, Executions]
) -> None:
    mine, theirs = stores
    with following(settings, mine, "execution_started") as (feed, received):
        listening(feed, theirs, received)
        received.events.clear()
        first = started(theirs)
        feed.notice("")  # as an older writer notifies: says nothing
        received.wait(lambda: [e.event.originator_id for e in received.events] == [first])
        second = started(theirs)
        feed.notice(f"{theirs.last_position()}")  # a position, its topics left out
        received.wait(lambda: len(received.events) == 2)
        assert received.events[1].event.originator_id == second
