"""Which projections the projector runs, and how a batch of events is applied to one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import sqlalchemy as sa

from agent_ledger.application.event_log import LoggedEvent
from agent_ledger.infrastructure.read_models.event_index import EventIndexBatch
from agent_ledger.infrastructure.read_models.metrics_batch import MetricsBatch
from agent_ledger.infrastructure.read_models.status_batch import ExecutionStatusBatch
from agent_ledger.infrastructure.read_models.table_sets import TableSet
from agent_ledger.projections.event_index import EventIndexProjection
from agent_ledger.projections.execution_status import ExecutionStatusProjection
from agent_ledger.projections.metrics import MetricsProjection


class BatchProjection(Protocol):
    """A projection bound to one transaction: apply events, then flush."""

    def process(self, event: object, position: int) -> None: ...

    def flush(self) -> None: ...


# projections with one table set, rebuilt in place; made with (connection, writes=None),
# `writes` being where their writes go when it is not the connection (`deferred_writes`)
PROJECTIONS: dict[str, Callable[..., BatchProjection]] = {
    EventIndexProjection.name: EventIndexBatch,
}

# projections with versioned table sets, rebuilt side by side (`projections rebuild NAME`);
# made with (connection, tables, writes=None)
VERSIONED_PROJECTIONS: dict[str, Callable[..., BatchProjection]] = {
    ExecutionStatusProjection.name: ExecutionStatusBatch,
    MetricsProjection.name: MetricsBatch,
}


def all_projection_names() -> tuple[str, ...]:
    return (*VERSIONED_PROJECTIONS, *PROJECTIONS)


def apply_events(
    connection: sa.Connection,
    name: str,
    tables: TableSet | None,
    events: list[LoggedEvent],
    writes: sa.Connection | None = None,
) -> None:
    """Apply `events` to a projection's tables (the caller moves the tracking row); with
    `writes`, the projection reads through `connection` and writes through `writes`."""
    batch = (
        VERSIONED_PROJECTIONS[name](connection, tables, writes=writes)
        if tables is not None
        else PROJECTIONS[name](connection, writes=writes)
    )
    for logged in events:
        batch.process(logged.event, logged.position)
    batch.flush()
