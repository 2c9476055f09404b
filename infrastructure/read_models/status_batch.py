"""The execution status projection (executions, steps, step latency) bound to one transaction."""

from __future__ import annotations

from collections import defaultdict
from uuid import UUID

import sqlalchemy as sa

from agent_ledger.application.event_log import LoggedEvent
from agent_ledger.domain.executions import Execution
from agent_ledger.infrastructure.read_models.row_batch import RowBatch
from agent_ledger.infrastructure.read_models.table_sets import TableSet
from agent_ledger.infrastructure.store.bulk_sql import add_to_rows
from agent_ledger.projections.execution_status import ExecutionStatusRow, StatusProjections
from agent_ledger.projections.step_status import StepStatusRow, latency_bucket


class SqlExecutionStatusView:
    """Execution and step rows of one batch, plus the latency observations it made."""

    def __init__(
        self, connection: sa.Connection, tables: TableSet, writes: sa.Connection | None = None
    ):
        self.connection = connection
        self.writes = writes if writes is not None else connection
        self.tables = tables
        self.executions = RowBatch(
            connection, tables["execution_status"], ExecutionStatusRow, writes=writes
        )
        self.steps = RowBatch(connection, tables["step_status"], StepStatusRow, writes=writes)
        self.latency: dict[tuple[str, str, int], list[int]] = defaultdict(list)
        self.step_ids: dict[UUID, set[str]] = {}  # of the executions read or started in the batch

    def prefetch(self, events: list[LoggedEvent]) -> None:
        """Read the rows of every execution the batch touches, in a few queries."""
        started: set[UUID] = set()
        others: set[UUID] = set()
        for logged in events:
            event_id = logged.event.originator_id
            if isinstance(logged.event, Execution.ExecutionStarted):
                started.add(event_id)
            elif event_id not in started:
                others.add(event_id)
        for execution_id in started:
            self.executions.known(execution_id)
            self.steps.known(execution_id)
            self.step_ids[execution_id] = set()
        self.executions.load(others)
        self.steps.load(others)
        for execution_id, step_id in self.steps.rows:
            self.step_ids.setdefault(execution_id, set()).add(step_id)

    def get(self, execution_id: UUID) -> ExecutionStatusRow | None:
        return self.executions.get(execution_id)

    def put(self, row: ExecutionStatusRow) -> None:
        self.executions.put(row)

    def get_step(self, execution_id: UUID, step_id: str) -> StepStatusRow | None:
        return self.steps.get(execution_id, step_id)

    def put_step(self, row: StepStatusRow) -> None:
        self.steps.put(row)
        if row.execution_id in self.step_ids:
            self.step_ids[row.execution_id].add(row.step_id)

    def step_statuses(self, execution_id: UUID) -> list[str]:
        step_ids = self.step_ids.get(execution_id)
        if step_ids is None:  # not prefetched: read its rows now
            self.steps.load([execution_id])
            step_ids = self.step_ids[execution_id] = {
                s for e, s in self.steps.rows if e == execution_id
            }
        return [self.steps.rows[(execution_id, step_id)].status for step_id in step_ids]

    def observe_latency(self, process_name: str, step_id: str, duration_ms: float) -> None:
        key = (process_name, step_id, latency_bucket(duration_ms))
        self.latency[key].append(round(duration_ms * 1000))

    def flush(self) -> None:
        self.executions.flush()
        self.steps.flush()
        if self.latency:
            self._add_latencies()
        self.latency.clear()

    def _add_latencies(self) -> None:
        add_to_rows(
            self.writes,
            self.tables["step_latency"],
            [
                {"process_name": p, "step_id": s, "bucket": b, "count": len(v), "sum_us": sum(v)}
                for (p, s, b), v in self.latency.items()
            ],
        )


class ExecutionStatusBatch:
    """Buffers a batch's events, then applies them to executions and steps in one go."""

    def __init__(
        self, connection: sa.Connection, tables: TableSet, writes: sa.Connection | None = None
    ):
        self.view = SqlExecutionStatusView(connection, tables, writes)
        self.projections = StatusProjections(self.view)
        self.events: list[LoggedEvent] = []

    def process(self, event: object, position: int) -> None:
        self.events.append(LoggedEvent(position, event))  # type: ignore[arg-type]

    def flush(self) -> None:
        self.view.prefetch(self.events)
        for logged in self.events:
            self.projections.process(logged.event, logged.position)
        self.view.flush()
        self.events.clear()
