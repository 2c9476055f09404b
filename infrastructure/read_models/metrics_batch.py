"""The metrics projection (runs, event counts, model usage) bound to one projector transaction."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from uuid import UUID

import sqlalchemy as sa

from agent_ledger.application.event_log import LoggedEvent
from agent_ledger.domain.executions import Execution
from agent_ledger.infrastructure.read_models.row_batch import RowBatch
from agent_ledger.infrastructure.read_models.table_sets import TableSet
from agent_ledger.infrastructure.store.bulk_sql import add_to_rows
from agent_ledger.projections.metrics import MetricRun, MetricsProjection, ModelUsage


class SqlMetricsView:
    """The runs of the executions a batch touches, grouped by execution, event counts and the
    model usage the batch adds to each agent and process."""

    def __init__(
        self, connection: sa.Connection, tables: TableSet, writes: sa.Connection | None = None
    ):
        self.connection = connection
        self.writes = writes if writes is not None else connection
        self.counts_table = tables["event_counts"]
        self.usage_table = tables["model_usage"]
        self.rows = RowBatch(connection, tables["metric_runs"], MetricRun, writes=writes)
        self.by_execution: dict[UUID, dict[tuple[str, str], MetricRun]] = {}
        self.counts: Counter[str] = Counter()
        self.usage: dict[tuple[str, str], ModelUsage] = {}

    def prefetch(self, events: list[LoggedEvent]) -> None:
        started = {
            e.event.originator_id for e in events if isinstance(e.event, Execution.ExecutionStarted)
        }
        for execution_id in started:
            self.rows.known(execution_id)
            self.by_execution[execution_id] = {}
        self.rows.load({e.event.originator_id for e in events} - started)
        for run in self.rows.rows.values():
            self.by_execution.setdefault(run.execution_id, {})[(run.kind, run.key)] = run

    def runs(self, execution_id: UUID) -> dict[tuple[str, str], MetricRun]:
        if execution_id not in self.by_execution:
            self.rows.load([execution_id])
            found = [r for r in self.rows.rows.values() if r.execution_id == execution_id]
            self.by_execution[execution_id] = {(r.kind, r.key): r for r in found}
        return self.by_execution[execution_id]

    def put_run(self, run: MetricRun) -> None:
        self.rows.put(run)

    def count_event(self, type_name: str) -> None:
        self.counts[type_name] += 1

    def add_usage(self, kind: str, name: str, usage: ModelUsage) -> None:
        self.usage[(kind, name)] = self.usage.get((kind, name), ModelUsage()) + usage

    def flush(self) -> None:
        self.rows.flush()
        if self.counts:
            self._add_counts()
        self.counts.clear()
        if self.usage:
            rows = [{"kind": k, "name": n, **asdict(u)} for (k, n), u in self.usage.items()]
            add_to_rows(self.writes, self.usage_table, rows)
        self.usage.clear()

    def _add_counts(self) -> None:
        rows = [{"type": t, "count": n} for t, n in self.counts.items()]
        add_to_rows(self.writes, self.counts_table, rows)


class MetricsBatch:
    """Buffers a batch's events, then applies them to the metric runs in one go."""

    def __init__(
        self, connection: sa.Connection, tables: TableSet, writes: sa.Connection | None = None
    ):
        self.view = SqlMetricsView(connection, tables, writes)
        self.projection = MetricsProjection(self.view)
        self.events: list[LoggedEvent] = []

    def process(self, event: object, position: int) -> None:
        self.events.append(LoggedEvent(position, event))  # type: ignore[arg-type]

    def flush(self) -> None:
        self.view.prefetch(self.events)
        for logged in self.events:
            self.projection.process(logged.event, logged.position)
        self.view.flush()
        self.events.clear()
