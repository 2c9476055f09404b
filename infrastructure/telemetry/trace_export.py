"""Follows the store from a tracked position and exports the spans each batch ends."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from uuid import UUID

import sqlalchemy as sa
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from agent_ledger.application.backoff import Backoff
from agent_ledger.application.event_log import LoggedEvent
from agent_ledger.application.executions import Executions
from agent_ledger.infrastructure.read_models.locks import ProjectionLocks, projection_locks
from agent_ledger.infrastructure.read_models.tracking import advance_tracking, tracked_position
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.telemetry.spans import (
    otlp_exporter,
    readable_span,
    service_resource,
    traces_enabled,
)
from agent_ledger.projections.traces import SPAN_ENDS, SpanRecord, spans_ended_between

log = logging.getLogger(__name__)

TRACKING_NAME = "otel_traces"
"""The tracking row (and lock) of the trace export: at least once, in position order."""


class TraceExport:
    """Exports every execution's spans as the events that end them are stored.

    A batch's spans are exported, then its position is tracked: a crash between the two
    exports that batch again (the same span ids), a restart never loses one. With `locks`,
    one process exports and the others stand by.
    """

    def __init__(
        self,
        executions: Executions,
        engine: sa.Engine,
        exporter: SpanExporter,
        *,
        resource: Resource | None = None,
        batch_size: int = 500,
        poll_interval: float = 0.5,
        locks: ProjectionLocks | None = None,
        name: str = TRACKING_NAME,
    ):
        self.name = name
        self.executions = executions
        self.engine = engine
        self.exporter = exporter
        self.resource = resource if resource is not None else service_resource()
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.locks = locks
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def wake(self, *_: object) -> None:
        self._wake.set()

    def run_once(self) -> int:
        """Export the spans of the next batch of events; returns how many events it read."""
        if self.locks is not None and not self.locks.try_acquire(self.name):
            return 0
        with self.engine.connect() as connection:
            old = tracked_position(connection, self.name)
        batch = self.executions.read_log(after=old, limit=self.batch_size)
        if not batch:
            return 0
        upto = batch[-1].position
        spans = self.spans_of(batch, old, upto)
        if spans:
            result = self.exporter.export([readable_span(s, self.resource) for s in spans])
            if result is not SpanExportResult.SUCCESS:
                raise RuntimeError(f"the trace exporter refused {len(spans)} spans")
        with self.engine.begin() as connection:
            advance_tracking(connection, self.name, old, upto)
        return len(batch)

    def spans_of(self, batch: Sequence[LoggedEvent], after: int, upto: int) -> list[SpanRecord]:
        """The spans events in (after, upto] end, read from each execution's history."""
        ending: list[UUID] = []
        for logged in batch:
            execution_id = logged.originator_id
            if logged.type in SPAN_ENDS and execution_id is not None and execution_id not in ending:
                ending.append(execution_id)
        spans: list[SpanRecord] = []
        for execution_id in ending:
            history = self.history(execution_id, upto)
            try:
                spans.extend(spans_ended_between(execution_id, history, after, upto))
            except Exception:  # one history the builder cannot read must not stop the rest
                log.warning("no spans for execution %s", execution_id, exc_info=True)
        return sorted(spans, key=lambda span: span.ended_at)

    def history(self, execution_id: UUID, upto: int) -> list[LoggedEvent]:
        """The execution's events up to `upto`, page by page."""
        events: list[LoggedEvent] = []
        after = 0
        while True:
            page = self.executions.get_history(execution_id, after=after)
            events.extend(e for e in page if e.position <= upto)
            if not page or page[-1].position >= upto:
                return events
            after = page[-1].position

    def catch_up(self) -> None:
        while self.run_once():
            pass

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="trace-export", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.locks is not None:
            self.locks.release_all()
        self.exporter.shutdown()

    def _run(self) -> None:
        backoff = Backoff("exporting traces", log)
        while not self._stopped.is_set():
            self._wake.clear()
            try:
                read = self.run_once()
            except Exception as error:
                self._wake.wait(backoff.failed(error))
                continue
            backoff.succeeded()
            if read < self.batch_size:
                self._wake.wait(self.poll_interval)


def start_trace_export(
    settings: Settings, executions: Executions, engine: sa.Engine
) -> TraceExport | None:
    """The projector role's trace export over OTLP/HTTP, when traces are on."""
    if not traces_enabled(settings.otel):
        return None
    export = TraceExport(
        executions,
        engine,
        otlp_exporter(),
        poll_interval=settings.poll_interval,
        locks=projection_locks(settings),
    )
    executions.add_listener(export.wake)
    export.start()
    return export
