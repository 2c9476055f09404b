"""Group commit: the writes of many executions saved in one transaction.

Writers to one events table take turns (the store locks the table per insert so that
positions are gap-free in commit order); saving the pending writes of every execution
a worker drives in one transaction turns many short turns into one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Recording

from agent_ledger.application.executions import Executions
from agent_ledger.application.path_timing import mark
from agent_ledger.application.work import LoopStore, WorkChange
from agent_ledger.domain.executions import Execution

MAX_BATCH = 128


@dataclass
class _Write:
    execution: Execution
    events: list[DomainEventProtocol[UUID]]
    work: Sequence[WorkChange]
    done: asyncio.Future[int]


class GroupCommitter:
    """Queues writes on the event loop; one thread at a time saves all that are queued."""

    def __init__(
        self,
        executions: Executions,
        max_batch: int = MAX_BATCH,
        max_in_flight: int = 2,
        store: LoopStore | None = None,
    ):
        """With `store`, batches are written on the event loop, else in a thread."""
        self.executions = executions
        self.store = store
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self._queue: list[_Write] = []
        self._in_flight = 0
        self._draining: set[asyncio.Task[None]] = set()

    async def save(self, execution: Execution, work: Sequence[WorkChange]) -> int:
        """Save the execution's pending events with the work changes; returns the position."""
        return await asyncio.shield(self.submit(execution, work))

    def submit(self, execution: Execution, work: Sequence[WorkChange]) -> asyncio.Future[int]:
        """Queue the execution's pending events and work changes; the future gives the position.

        The write goes on whatever becomes of its caller.
        """
        loop = asyncio.get_running_loop()
        write = _Write(execution, list(execution.collect_events()), work, loop.create_future())
        self._queue.append(write)
        # a second batch is encoded and sent while the first waits for the table lock
        if self._in_flight < self.max_in_flight:
            self._in_flight += 1
            drain = loop.create_task(self._drain())
            self._draining.add(drain)  # a task nobody references may be collected mid-way
            drain.add_done_callback(self._draining.discard)
        return write.done

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                try:
                    positions = await self._write(batch)
                except Exception:
                    await self._save_one_by_one(batch)  # find whose write broke the batch
                else:
                    for write, position in zip(batch, positions, strict=True):
                        mark("commit.resolved", write.execution.id, position)
                        _resolve(write, position)
        finally:
            self._in_flight -= 1

    async def _save_one_by_one(self, batch: list[_Write]) -> None:
        for write in batch:
            try:
                position = (await self._write([write]))[0]
            except Exception as error:
                if not write.done.done():
                    write.done.set_exception(error)
            else:
                _resolve(write, position)

    async def _write(self, batch: list[_Write]) -> list[int]:
        if self.store is None:
            return await asyncio.to_thread(self._save, batch)
        mark("commit.begin", batch[0].execution.id)
        recordings = await self.store.save(
            [(write.execution, write.events) for write in batch],
            [change for write in batch for change in write.work],
        )
        mark("commit.end", batch[0].execution.id)
        return _positions(batch, recordings)

    def _save(self, batch: list[_Write]) -> list[int]:
        work = [change for write in batch for change in write.work]
        mark("commit.begin", batch[0].execution.id)
        recordings = self.executions.save_collected(
            [(write.execution, write.events) for write in batch], work
        )
        mark("commit.end", batch[0].execution.id)
        return _positions(batch, recordings)


def _positions(batch: list[_Write], recordings: list[Recording[UUID]]) -> list[int]:
    """Each write's position: its execution's last event, or the head for a write with none."""
    last = {r.domain_event.originator_id: r.notification.id for r in recordings}
    head = recordings[-1].notification.id if recordings else 0
    return [
        last.get(write.events[-1].originator_id, head) if write.events else head for write in batch
    ]


def _resolve(write: _Write, position: int) -> None:
    if not write.done.done():
        write.done.set_result(position)
