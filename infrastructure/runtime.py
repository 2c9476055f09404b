"""Wiring: the store, read model, engine, projector and event feed of one process."""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from agent_ledger.application.agents import AgentRegistry
from agent_ledger.application.builtin_agents import register_builtin_agents
from agent_ledger.application.clock import SystemClock
from agent_ledger.application.executions import Executions
from agent_ledger.application.model_agent import ModelAgent
from agent_ledger.application.processes import (
    DefinitionCheck,
    known_agents_check,
    model_agents_check,
)
from agent_ledger.application.sample_processes import (
    COST_OPTIMIZATION,
    COST_OPTIMIZATION_APPROVED,
    ECHO,
    cost_optimization_llm,
)
from agent_ledger.application.step_runner import StepRunner
from agent_ledger.application.tool_box import ToolBox
from agent_ledger.application.worker import Worker
from agent_ledger.infrastructure.agents.egress import AgentUrlPolicy
from agent_ledger.infrastructure.agents.http import HttpAgentClient
from agent_ledger.infrastructure.agents.http_tools import SqlHttpTools
from agent_ledger.infrastructure.agents.openai_chat import (
    OpenAiChatModels,
    prices_from,
    providers_from,
)
from agent_ledger.infrastructure.agents.thread_history import ThreadHistoryFromViews
from agent_ledger.infrastructure.catalog.sql import SqlProcessCatalog
from agent_ledger.infrastructure.feed.commit_wake_ups import CommitWakeUps
from agent_ledger.infrastructure.feed.event_feed import EventFeed, nothing
from agent_ledger.infrastructure.feed.notices import StoreNotices
from agent_ledger.infrastructure.read_models.locks import projection_locks
from agent_ledger.infrastructure.read_models.projector import Projector
from agent_ledger.infrastructure.read_models.status_queries import ExecutionStatusQueries
from agent_ledger.infrastructure.read_models.tracking import active_position
from agent_ledger.infrastructure.schema import initialize_schema
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.async_store import AsyncStore
from agent_ledger.infrastructure.store.histories import HistoriesBySql
from agent_ledger.infrastructure.store.persistence import (
    libpq_dsn,
    open_executions,
    read_model_engine,
)
from agent_ledger.infrastructure.store.work_queue import SqlWorkQueue
from agent_ledger.infrastructure.telemetry.caller_traces import CallerTraces
from agent_ledger.infrastructure.telemetry.trace_export import TraceExport, start_trace_export
from agent_ledger.infrastructure.webhooks.book import SqlWebhooks
from agent_ledger.infrastructure.webhooks.deliverer import WebhookDeliverer
from agent_ledger.infrastructure.work.embedded_feed import EmbeddedWorkFeed
from agent_ledger.infrastructure.work.notices import WorkNotices
from agent_ledger.infrastructure.work.schedules import ScheduleService
from agent_ledger.infrastructure.work.worker_thread import WorkerThread
from agent_ledger.projections.event_index import EventIndexProjection
from agent_ledger.projections.execution_status import ExecutionStatusProjection

log = logging.getLogger(__name__)

SAMPLE_PROCESSES = (COST_OPTIMIZATION, COST_OPTIMIZATION_APPROVED, ECHO)


def registration_checks(
    settings: Settings, agents: AgentRegistry, read_engine: sa.Engine | None = None
) -> list[DefinitionCheck]:
    """What a definition must pass to be registered here: its built-in agents exist, its
    model agents' providers are configured and their tools known (built-in, or HTTP tools
    registered in `read_engine`), and its agent URLs pass the egress rule
    (`AGENT_LEDGER_AGENT_URL_ALLOW`)."""
    egress = AgentUrlPolicy.from_setting(settings.agent_url_allow)
    models = OpenAiChatModels(providers_from(settings))
    http_tools = None if read_engine is None else SqlHttpTools(read_engine, egress=egress)

    def has_tool(name: str) -> bool:
        return agents.has_tool(name) or (http_tools is not None and http_tools.exists(name))

    return [
        known_agents_check(agents),
        model_agents_check(models.has_provider, has_tool),
        egress.check_definition,
    ]


def sample_processes(settings: Settings) -> list[dict[str, Any]]:
    """The sample definitions registered at start-up; the model one needs a provider."""
    samples = list(SAMPLE_PROCESSES)
    if settings.has_llm_provider:
        samples.append(cost_optimization_llm(settings.llm_model))
    return samples


@dataclass
class Runtime:
    """Everything one process runs; `serve` runs every role, later commands fewer."""

    settings: Settings
    executions: Executions
    read_engine: sa.Engine
    catalog: SqlProcessCatalog
    statuses: ExecutionStatusQueries
    agents: AgentRegistry
    feed: EventFeed
    projector: Projector | None = None
    worker_thread: WorkerThread | None = None
    work_wake_ups: EmbeddedWorkFeed | WorkNotices | None = None
    commit_wake_ups: CommitWakeUps | None = None
    notices: StoreNotices | None = None
    schedules: ScheduleService | None = None
    traces: TraceExport | None = None
    webhooks: WebhookDeliverer | None = None
    _stopped: bool = field(default=False, repr=False)

    @classmethod
    def start(
        cls,
        settings: Settings,
        *,
        engine: bool = True,
        projector: bool = True,
        feed: bool = True,
    ) -> Runtime:
        """Create the schema if needed, then start the roles asked for.

        Without `feed` (a worker or projector alone), no event feed decodes every event:
        a worker is woken by `WorkNotices` on PostgreSQL (by `EmbeddedWorkFeed`, which
        reads only the events workers react to, on SQLite), and a projector by
        `CommitWakeUps`. On PostgreSQL they all listen through one connection,
        `StoreNotices`, started once every role has subscribed.
        """
        initialize_schema(settings)
        executions = open_executions(settings)
        read_engine = read_model_engine(settings)
        agents = AgentRegistry()
        register_builtin_agents(agents)
        checks = registration_checks(settings, agents, read_engine)
        catalog = SqlProcessCatalog(read_engine, checks=checks)
        for document in sample_processes(settings):
            catalog.register(document)
        notices = StoreNotices(libpq_dsn(settings)) if settings.uses_postgres else None
        event_feed = EventFeed(executions, poll_interval=settings.poll_interval, notices=notices)
        runtime = cls(
            settings,
            executions,
            read_engine,
            catalog,
            ExecutionStatusQueries(read_engine),
            agents,
            event_feed,
            notices=notices,
        )
        if engine or feed:  # a worker fires ticks; the API defines schedules
            runtime.schedules = ScheduleService.open(settings, read_engine, catalog, executions)
        schedules = runtime.schedules
        head = executions.last_position()
        if projector:
            runtime.projector = Projector(
                executions,
                read_engine,
                poll_interval=settings.poll_interval,
                locks=projection_locks(settings),
            )
            runtime.projector.catch_up()
            if feed:
                event_feed.subscribe(runtime.projector.wake, nothing)  # a wake-up is enough
            else:  # a projector alone reads the store itself; it only needs wake-ups
                runtime.commit_wake_ups = CommitWakeUps(executions, runtime.projector.wake, notices)
                runtime.commit_wake_ups.start()
            runtime.projector.start()
            runtime.traces = start_trace_export(settings, executions, read_engine)
            runtime.webhooks = runtime.build_deliverer()
            runtime.webhooks.start()
        if engine:
            notified = not feed and notices is not None
            worker = runtime.build_worker(notified=notified)
            runtime.worker_thread = WorkerThread(worker, settings.shutdown_grace)
            if feed:
                event_feed.subscribe(worker.on_events, lambda: Worker.SIGNALS)
            elif notices is not None:  # woken by the writes that queue, cancel or free room
                runtime.work_wake_ups = WorkNotices(
                    notices, worker.on_notice, worker.on_missed_notices
                )
                runtime.work_wake_ups.start()
            else:  # no notifications: follow the store for the events workers react to
                runtime.work_wake_ups = EmbeddedWorkFeed(
                    executions, worker.on_events, settings.poll_interval
                )
                runtime.work_wake_ups.start()
            runtime.worker_thread.start()
            if schedules is not None:
                schedules.run_scheduler(worker.name, notices, max(settings.poll_interval, 1.0))
        if feed:
            event_feed.start(after=head)
        if notices is not None:
            notices.start()  # every role has subscribed; each is told on connecting
        return runtime

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.schedules is not None:
            self.schedules.stop()
        if self.worker_thread is not None:
            self.worker_thread.stop()
        if self.notices is not None:
            self.notices.stop()
        if self.work_wake_ups is not None:
            self.work_wake_ups.stop()
        if self.commit_wake_ups is not None:
            self.commit_wake_ups.stop()
        self.feed.stop()
        if self.webhooks is not None:
            self.webhooks.stop()
        if self.projector is not None:
            self.projector.stop()
        if self.traces is not None:
            self.traces.stop()
        self.executions.close()
        self.read_engine.dispose()

    def build_deliverer(self) -> WebhookDeliverer:
        """The webhook deliverer of the projector role (one active among projectors)."""
        settings = self.settings
        return WebhookDeliverer(
            self.executions,
            SqlWebhooks(self.read_engine, settings.cipher_key),
            egress=AgentUrlPolicy.from_setting(settings.agent_url_allow),
            retry_first=settings.webhook_retry_first,
            retry_cap=settings.webhook_retry_cap,
            retry_window=settings.webhook_retry_window,
            timeout=settings.webhook_timeout,
            poll_interval=settings.poll_interval,
            locks=projection_locks(settings),
            index_waiter=None
            if self.projector is None
            else functools.partial(
                self.projector.wait_for, name=EventIndexProjection.name, wake=False
            ),
        )

    def build_worker(self, *, notified: bool = False) -> Worker:
        """A worker over this process's store, agents and read model; `notified` when work
        notices wake it (they also say when an ended execution lets a waiting one in)."""
        clock = SystemClock()
        traceparent = CallerTraces(self.executions).traceparent
        runner = StepRunner(
            self.agents,
            clock,
            http_agents=HttpAgentClient(
                egress=AgentUrlPolicy.from_setting(self.settings.agent_url_allow),
                traceparent=traceparent,
            ),
            thread_history=ThreadHistoryFromViews(self.statuses, self.executions),
            model_agent=ModelAgent(
                OpenAiChatModels(providers_from(self.settings), traceparent=traceparent),
                ToolBox(
                    self.agents,
                    SqlHttpTools(
                        self.read_engine,
                        egress=AgentUrlPolicy.from_setting(self.settings.agent_url_allow),
                        traceparent=traceparent,
                    ),
                ),
                prices_from(self.settings),
            ),
        )
        histories = self.executions.histories_reader
        queue = SqlWorkQueue(
            self.executions.recorder,  # type: ignore[arg-type]
            self.settings.per_user_limit,
            histories if isinstance(histories, HistoriesBySql) else None,
        )
        return Worker(
            self.executions,
            queue,
            runner,
            clock=clock,
            capacity=self.settings.engine_concurrency,
            lease_seconds=self.settings.lease_seconds,
            poll_interval=max(self.settings.poll_interval, 0.2),
            wake_on_finish=not notified,
            store=self.loop_store(),
        )

    def loop_store(self) -> AsyncStore | None:
        """Writes and claims awaited on an event loop (PostgreSQL); one per loop."""
        if not self.settings.uses_postgres:
            return None
        histories = self.executions.histories_reader
        return AsyncStore(
            self.executions,
            libpq_dsn(self.settings),
            histories if isinstance(histories, HistoriesBySql) else None,
            per_user_limit=self.settings.per_user_limit,
        )

    def projection_position(self, name: str = ExecutionStatusProjection.name) -> int:
        if self.projector is not None:
            return self.projector.position(name)
        with self.read_engine.connect() as connection:
            return active_position(connection, name)

    def wait_for_projection(
        self, position: int, timeout: float, name: str = ExecutionStatusProjection.name
    ) -> bool:
        """Read-your-writes: block until the projection `name` has applied `position`."""
        if self.projector is not None:
            return self.projector.wait_for(position, timeout, name)
        deadline = threading.Event()
        waited = 0.0
        while self.projection_position(name) < position:
            if waited >= timeout:
                return False
            deadline.wait(0.05)
            waited += 0.05
        return True
