"""Wiring: the store, read model, engine, projector and change feed of one process."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from uuid import UUID

import sqlalchemy as sa

from application.agents import AgentRegistry
from application.builtin_agents import register_builtin_agents
from application.engine import Engine
from application.executions import Executions
from application.sample_processes import COST_OPTIMIZATION, ECHO
from infrastructure.change_feed import ChangeFeed
from infrastructure.execution_status_sql import ExecutionStatusQueries
from infrastructure.persistence import (
    initialize_schema,
    libpq_dsn,
    open_executions,
    read_model_engine,
)
from infrastructure.process_catalog_sql import SqlProcessCatalog
from infrastructure.projector import Projector, tracked_position
from infrastructure.settings import Settings
from projections.execution_status import ExecutionStatusProjection

log = logging.getLogger(__name__)

SAMPLE_PROCESSES = (COST_OPTIMIZATION, ECHO)


class EngineThread:
    """Runs the engine on its own event loop, away from the API's."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)

    def start(self, resume: list[UUID]) -> None:
        self.engine.bind(self.loop)
        for execution_id in resume:
            self.loop.call_soon_threadsafe(self.engine.submit, execution_id)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        if not self._thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self.engine.shutdown(), self.loop)
        try:
            future.result(timeout)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()
        self.loop.close()


@dataclass
class Runtime:
    """Everything one process runs; `serve` runs every role, later commands fewer."""

    settings: Settings
    executions: Executions
    read_engine: sa.Engine
    catalog: SqlProcessCatalog
    statuses: ExecutionStatusQueries
    agents: AgentRegistry
    feed: ChangeFeed
    projector: Projector | None = None
    engine_thread: EngineThread | None = None
    _stopped: bool = field(default=False, repr=False)

    @classmethod
    def start(cls, settings: Settings, *, engine: bool = True, projector: bool = True) -> Runtime:
        """Create the schema if needed, then start the roles asked for."""
        initialize_schema(settings)
        executions = open_executions(settings)
        read_engine = read_model_engine(settings)
        catalog = SqlProcessCatalog(read_engine)
        for document in SAMPLE_PROCESSES:
            catalog.register(document)
        agents = AgentRegistry()
        register_builtin_agents(agents)
        feed = ChangeFeed(
            executions,
            poll_interval=settings.poll_interval,
            listen_dsn=libpq_dsn(settings) if settings.uses_postgres else None,
        )
        runtime = cls(
            settings,
            executions,
            read_engine,
            catalog,
            ExecutionStatusQueries(read_engine),
            agents,
            feed,
        )
        head = executions.last_position()
        if projector:
            runtime.projector = Projector(
                executions, read_engine, poll_interval=settings.poll_interval
            )
            runtime.projector.catch_up()  # so the unfinished executions below are all known
            feed.subscribe(runtime.projector.wake)
            runtime.projector.start()
        if engine:
            runtime.engine_thread = EngineThread(
                Engine(executions, agents, max_concurrent=settings.engine_concurrency)
            )
            feed.subscribe(runtime.engine_thread.engine.on_events)
            runtime.engine_thread.start(resume=runtime.statuses.unfinished_ids())
        feed.start(after=head)
        return runtime

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.engine_thread is not None:
            self.engine_thread.stop()
        self.feed.stop()
        if self.projector is not None:
            self.projector.stop()
        self.executions.close()
        self.read_engine.dispose()

    def projection_position(self) -> int:
        if self.projector is not None:
            return self.projector.position()
        with self.read_engine.connect() as connection:
            return tracked_position(connection, ExecutionStatusProjection.name)

    def wait_for_projection(self, position: int, timeout: float) -> bool:
        """Read-your-writes: block until the status view has applied `position`."""
        if self.projector is not None:
            return self.projector.wait_for(position, timeout)
        deadline = threading.Event()
        waited = 0.0
        while self.projection_position() < position:
            if waited >= timeout:
                return False
            deadline.wait(0.05)
            waited += 0.05
        return True
