"""The execution status projection (executions, steps, step latency) bound to one transaction."""

from __future__ import annotations

from collections import defaultdict
from uuid import UUID

import sqlalchemy as sa

from application.executions import LoggedEvent
from domain.executions import Execution
from infrastructure.projection_tables import TableSet
from infrastructure.row_batch import RowBatch
from projections.execution_status import ExecutionStatusProjection, ExecutionStatusRow
from projections.step_status import StepStatusProjection, StepStatusRow, latency_bucket


class SqlExecutionStatusView:
    """Execution and step rows of one batch, plus the latency observations it made."""

    def __init__(self, connection: sa.Connection, tables: TableSet):
        self.connection = connection
        self.tables = tables
        self.executions = RowBatch(connection, tables["execution_status"], ExecutionStatusRow)
        self.steps = RowBatch(connection, tables["step_status"], StepStatusRow)
        self.latency: dict[tuple[str, str, int], list[int]] = defaultdict(list)

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
        self.executions.load(others)
        self.steps.load(others)

    def get(self, execution_id: UUID) -> ExecutionStatusRow | None:
        return self.executions.get(execution_id)

    def put(self, row: ExecutionStatusRow) -> None:
        self.executions.put(row)

    def get_step(self, execution_id: UUID, step_id: str) -> StepStatusRow | None:
        return self.steps.get(execution_id, step_id)

    def put_step(self, row: StepStatusRow) -> None:
        self.steps.put(row)

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
        table = self.tables["step_latency"]
        keys = list(self.latency)
        existing = {
            (r.process_name, r.step_id, r.bucket)
            for r in self.connection.execute(
                sa.select(table.c.process_name, table.c.step_id, table.c.bucket).where(
                    sa.tuple_(table.c.process_name, table.c.step_id, table.c.bucket).in_(keys)
                )
            )
        }
        rows = [
            {"p": k[0], "s": k[1], "b": k[2], "n": len(v), "us": sum(v)}
            for k, v in self.latency.items()
        ]
        inserts = [r for r in rows if (r["p"], r["s"], r["b"]) not in existing]
        updates = [r for r in rows if (r["p"], r["s"], r["b"]) in existing]
        if inserts:
            self.connection.execute(
                sa.insert(table),
                [
                    {"process_name": r["p"], "step_id": r["s"], "bucket": r["b"]}
                    | {"count": r["n"], "sum_us": r["us"]}
                    for r in inserts
                ],
            )
        if updates:
            self.connection.execute(
                sa.update(table)
                .where(
                    table.c.process_name == sa.bindparam("p"),
                    table.c.step_id == sa.bindparam("s"),
                    table.c.bucket == sa.bindparam("b"),
                )
                .values(
                    count=table.c.count + sa.bindparam("n"),
                    sum_us=table.c.sum_us + sa.bindparam("us"),
                ),
                updates,
            )


class ExecutionStatusBatch:
    """Buffers a batch's events, then applies them to executions and steps in one go."""

    def __init__(self, connection: sa.Connection, tables: TableSet):
        self.view = SqlExecutionStatusView(connection, tables)
        self.statuses = ExecutionStatusProjection(self.view)
        self.steps = StepStatusProjection(self.view)
        self.events: list[LoggedEvent] = []

    def process(self, event: object, position: int) -> None:
        self.events.append(LoggedEvent(position, event))  # type: ignore[arg-type]

    def flush(self) -> None:
        self.view.prefetch(self.events)
        for logged in self.events:
            self.statuses.process(logged.event, logged.position)
            self.steps.process(logged.event, logged.position)
        self.view.flush()
        self.events.clear()
