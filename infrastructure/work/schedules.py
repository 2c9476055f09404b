"""A process's schedules: their event store, their rows and the book of commands; in a
worker, the scheduler's thread too."""

from __future__ import annotations

import sqlalchemy as sa

from agent_ledger.application.executions import Executions
from agent_ledger.application.processes import ProcessCatalog
from agent_ledger.application.scheduler import Scheduler
from agent_ledger.application.schedules import ScheduleBook, Schedules
from agent_ledger.infrastructure.feed.notices import StoreNotices
from agent_ledger.infrastructure.read_models.schedules import SqlScheduleIndex
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.schedule_store import open_schedules
from agent_ledger.infrastructure.work.scheduler_thread import SchedulerThread


class ScheduleService:
    """Schedules as one process uses them: the API's and CLI's commands, triggers, ticks."""

    def __init__(
        self,
        schedules: Schedules,
        index: SqlScheduleIndex,
        book: ScheduleBook,
        executions: Executions,
    ):
        self.schedules = schedules
        self.index = index
        self.book = book
        self.executions = executions
        self.thread: SchedulerThread | None = None

    @classmethod
    def open(
        cls,
        settings: Settings,
        read_engine: sa.Engine,
        catalog: ProcessCatalog,
        executions: Executions,
    ) -> ScheduleService:
        schedules = open_schedules(settings)
        index = SqlScheduleIndex(read_engine)
        book = ScheduleBook(schedules, index, catalog, max_input_bytes=settings.max_input_bytes)
        return cls(schedules, index, book, executions)

    def scheduler(self, name: str) -> Scheduler:
        """A scheduler over this process's store and executions (named in the events it
        records as `scheduler:<name>`)."""
        return Scheduler(self.book, self.executions, name=name)

    def run_scheduler(self, name: str, notices: StoreNotices | None, fallback: float) -> None:
        """Fire ticks in this process (a worker), woken by `notices` on PostgreSQL."""
        self.thread = SchedulerThread(self.scheduler(name), self.index, notices, fallback)
        self.thread.start()

    def stop(self) -> None:
        if self.thread is not None:
            self.thread.stop()
        self.schedules.close()
