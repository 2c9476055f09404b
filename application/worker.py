"""A worker: claims executions from the work queue, drives them, keeps their leases alive."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from datetime import timedelta
from uuid import UUID

from agent_ledger.application.backoff import Backoff, describe, store_unavailable
from agent_ledger.application.clock import Clock, SystemClock
from agent_ledger.application.drive_failures import DriveFailures, GiveUp
from agent_ledger.application.driver import ExecutionDriver
from agent_ledger.application.event_log import LoggedEvent
from agent_ledger.application.execution_session import ExecutionSession
from agent_ledger.application.executions import ExecutionNotFoundError, Executions
from agent_ledger.application.group_commit import GroupCommitter
from agent_ledger.application.path_timing import mark
from agent_ledger.application.step_runner import StepRunner
from agent_ledger.application.work import Claim, LeaseLostError, LoopStore, WorkQueue
from agent_ledger.domain.executions import Execution

log = logging.getLogger(__name__)

_OFFERS_REMEMBERED = 1024
"""Executions handed over in-process whose `execution_started` the worker may still hear of."""


def worker_name() -> str:
    """A name that tells operators which host and process held a lease."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    """Claims queued executions up to its capacity and drives each on this event loop.

    Many workers may share one store: claims skip rows another worker has locked, a
    lease that is not renewed expires and another worker takes the execution over,
    and every write is fenced by the lease, so a worker that lost one cannot write.
    """

    def __init__(
        self,
        executions: Executions,
        queue: WorkQueue,
        runner: StepRunner,
        *,
        clock: Clock | None = None,
        name: str | None = None,
        capacity: int = 32,
        lease_seconds: float = 30.0,
        poll_interval: float = 1.0,
        wake_on_finish: bool = True,
        store: LoopStore | None = None,
    ):
        self.executions = executions
        self.queue = queue
        self.runner = runner
        self.clock = clock or SystemClock()
        self.name = name or worker_name()
        self.capacity = capacity
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.wake_on_finish = wake_on_finish
        """Claim again whenever an execution ends, as it may free a slot for a user's waiting
        execution; False where the store announces that (PostgreSQL's work notices)."""
        self._backlog = False  # the last claim found no free slot or filled all of them
        self.store = store
        """Claims and writes awaited on this worker's loop (else in a thread)."""
        self.committer = GroupCommitter(executions, store=store)
        self.tasks: dict[UUID, asyncio.Task[None]] = {}
        self._drivers: dict[UUID, ExecutionDriver] = {}
        self._cancel_on_load: set[UUID] = set()
        self._checks: set[asyncio.Task[None]] = set()
        self._offered: dict[UUID, Execution] = {}  # handed over, not yet claimed
        self._heard_of: OrderedDict[UUID, None] = OrderedDict()  # handed over: no wake-up
        self._heard_of_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self.drive_failures = DriveFailures()

    # -- signals from other threads ------------------------------------------------------------

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach to the event loop that `run()` runs on."""
        self._loop = loop

    SIGNALS = frozenset(
        {
            "execution_started",
            "execution_cancellation_requested",
            "signal_received",
            "execution_resumed",
        }
    )
    """The event types `on_events` acts on."""

    def on_events(self, events: Iterable[LoggedEvent], upto: int | None = None) -> None:
        """Thread-safe: new, resumed and signalled executions and cancellation requests wake
        the worker."""
        if self._loop is None:
            return
        for logged in events:
            kind = logged.type  # known without decoding the event
            if kind == "execution_cancellation_requested":
                self._loop.call_soon_threadsafe(self.cancel, logged.event.originator_id)
            elif kind == "execution_started" and self._handed_over(logged.event.originator_id):
                continue  # claimed when it was handed over
            elif kind in ("execution_started", "signal_received", "execution_resumed"):
                mark("worker.notice")
                self._loop.call_soon_threadsafe(self.wake)

    def offer(self, execution: Execution) -> None:
        """Thread-safe: an execution this process has just started and queued. The worker
        claims at once, with no notice to wait for, and drives this copy if it gets the
        lease (a write by anyone else meanwhile makes its first save conflict: it reloads)."""
        if self._loop is None:
            return
        with self._heard_of_lock:
            self._heard_of[execution.id] = None
            while len(self._heard_of) > _OFFERS_REMEMBERED:
                self._heard_of.popitem(last=False)
        mark("worker.notice")
        self._loop.call_soon_threadsafe(self._take_offer, execution)

    def _take_offer(self, execution: Execution) -> None:
        if len(self._offered) < self.capacity:
            self._offered[execution.id] = execution
        self.wake()

    def _handed_over(self, execution_id: UUID) -> bool:
        with self._heard_of_lock:
            return self._heard_of.pop(execution_id, 0) is None

    def on_notice(self, cancelled: UUID | None = None) -> None:
        """Thread-safe: work was queued (claim now), or `cancelled` was asked to cancel."""
        if self._loop is None:
            return
        if cancelled is None:
            mark("worker.notice")
            self._loop.call_soon_threadsafe(self.wake)
        else:
            self._loop.call_soon_threadsafe(self.cancel, cancelled)

    def on_missed_notices(self) -> None:
        """Thread-safe: notices may have been lost; claim now and look for cancellations."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._recheck)

    def _recheck(self) -> None:
        self.wake()
        task = asyncio.ensure_future(self.renew_once())  # finds requested cancellations
        self._checks.add(task)
        task.add_done_callback(self._checked)

    def _checked(self, task: asyncio.Task[None]) -> None:
        self._checks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("checking held executions failed", exc_info=task.exception())

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def cancel(self, execution_id: UUID) -> None:
        """Stop a held execution, recording its cancellation; otherwise look for it."""
        task = self.tasks.get(execution_id)
        if task is None:
            self.wake()
            return
        driver = self._drivers.get(execution_id)
        if driver is None:
            self._cancel_on_load.add(execution_id)  # still loading: it cancels itself
            return
        driver.cancel_requested = True
        task.cancel()

    # -- the claim loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Claim and drive executions until `shutdown()`."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        renewer = asyncio.create_task(self._renew_forever())
        backoff = Backoff("claiming work", log)
        try:
            while not self._stopping:
                self._wake.clear()
                asked = self.capacity - len(self.tasks)
                wait = self.poll_interval
                try:
                    claimed = await self.claim_once()
                except Exception as error:  # the store is away: claim again, later
                    wait = backoff.failed(error)
                else:
                    backoff.succeeded()
                    if claimed and claimed == asked and len(self.tasks) < self.capacity:
                        continue  # it took all it asked for: there may be more waiting
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
        finally:
            renewer.cancel()

    async def claim_once(self) -> int:
        free = self.capacity - len(self.tasks)
        if self._stopping:
            return 0
        if free <= 0:
            self._backlog = True  # ready work may be left for when a slot frees
            return 0
        offered, self._offered = self._offered, {}  # later offers wait for the next claim
        if self.store is None:
            claimed = await asyncio.to_thread(self._claim_and_load, free, offered)
        else:
            claimed = await self._claim_and_load_on_loop(free, offered)
        self._backlog = len(claimed) == free
        for claim, loaded in claimed:
            self._start(claim, loaded)
        return len(claimed)

    def _claim_and_load(
        self, limit: int, offered: dict[UUID, Execution]
    ) -> list[tuple[Claim, Execution | Exception]]:
        """Claim, then load what was claimed and not handed over, in one trip to a thread."""
        mark("worker.claiming")
        claims = self.queue.claim(self.name, limit, self.lease_seconds)
        try:
            loaded = self._known(claims, offered)
            missing = [c.execution_id for c in claims if c.execution_id not in loaded]
            if missing:
                loaded.update(self.executions.get_executions(missing))
        except Exception as error:  # each driver reports it and lets its lease go
            return [(claim, error) for claim in claims]
        return self._held(claims, loaded)

    async def _claim_and_load_on_loop(
        self, limit: int, offered: dict[UUID, Execution]
    ) -> list[tuple[Claim, Execution | Exception]]:
        """Claim (reading what it claims) on this loop; what it could not read, in a thread."""
        assert self.store is not None
        mark("worker.claiming")
        claims = await self.store.claim(self.name, limit, self.lease_seconds)
        try:
            loaded = self._known(claims, offered)
            missing = [c.execution_id for c in claims if c.execution_id not in loaded]
            if missing:
                loaded.update(await asyncio.to_thread(self.executions.get_executions, missing))
        except Exception as error:  # each driver reports it and lets its lease go
            return [(claim, error) for claim in claims]
        return self._held(claims, loaded)

    def _known(self, claims: list[Claim], offered: dict[UUID, Execution]) -> dict[UUID, Execution]:
        """The claimed executions this worker has without loading them: handed over, or
        read with the claim (never one taken over: its last holder may have written since)."""
        known: dict[UUID, Execution] = {}
        for claim in claims:
            mark("worker.claimed", claim.execution_id)
            if claim.taken_over_from is not None:
                continue
            execution = offered.get(claim.execution_id)
            if execution is None and claim.history is not None:
                execution = self.executions.from_history(claim.history)
            if execution is not None:
                known[claim.execution_id] = execution
        return known

    @staticmethod
    def _held(
        claims: list[Claim], loaded: dict[UUID, Execution]
    ) -> list[tuple[Claim, Execution | Exception]]:
        for claim in claims:
            mark("worker.loaded", claim.execution_id)
        return [
            (claim, loaded.get(claim.execution_id) or ExecutionNotFoundError(claim.execution_id))
            for claim in claims
        ]

    def _start(self, claim: Claim, loaded: Execution | Exception) -> None:
        if claim.execution_id in self.tasks:
            return
        task = asyncio.create_task(self._drive(claim, loaded))
        self.tasks[claim.execution_id] = task
        task.add_done_callback(lambda _: self._finished(claim.execution_id))

    async def _drive(self, claim: Claim, loaded: Execution | Exception) -> None:
        try:
            if isinstance(loaded, Exception):
                raise loaded
            mark("worker.driving", claim.execution_id)
            session = ExecutionSession(self.executions, loaded, self.name, self.committer)
            driver = ExecutionDriver(
                session, self.runner, self.clock, taken_over_from=claim.taken_over_from
            )
            self._drivers[claim.execution_id] = driver
            if claim.execution_id in self._cancel_on_load:
                driver.cancel_requested = True
                await driver.record_cancellation()
                return
            await driver.run()
        except LeaseLostError:
            log.info("lost the lease on %s; another worker continues it", claim.execution_id)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            await self._drive_failed(claim.execution_id, error)
        else:
            self.drive_failures.succeeded(claim.execution_id)

    async def _drive_failed(self, execution_id: UUID, error: Exception) -> None:
        """Let the execution go for a while, longer each time in a row; then fail it."""
        verdict = self.drive_failures.failed(
            execution_id, store_unavailable=store_unavailable(error)
        )
        if isinstance(verdict, GiveUp):
            try:
                await self._give_up(execution_id, error, verdict.tries)
            except LeaseLostError:
                return
            except Exception as failure:
                log.warning(
                    "recording execution %s as failed did not work either (%s)",
                    execution_id,
                    describe(failure),
                )
                verdict = self.drive_failures.retry_later(execution_id)
            else:
                return
        if verdict.grew:
            log.warning(
                "driving execution %s failed (%s, %d in a row); it is claimed again in %.1fs",
                execution_id,
                describe(error),
                verdict.tries,
                verdict.delay,
                exc_info=error if verdict.tries == 1 else None,
            )
        later = self.clock.now() + timedelta(seconds=verdict.delay)
        try:
            await asyncio.to_thread(self.queue.release, self.name, [execution_id], later)
        except Exception as failure:  # the store is away: the lease runs out, then it is claimed
            log.warning("releasing execution %s failed (%s)", execution_id, describe(failure))
            return
        asyncio.get_running_loop().call_later(verdict.delay, self.wake)  # nobody else will

    async def _give_up(self, execution_id: UUID, error: Exception, tries: int) -> None:
        """Record the execution as failed, from a fresh load: what failed is not retried."""
        session = await ExecutionSession.load(
            self.executions, execution_id, self.name, self.committer
        )
        driver = ExecutionDriver(session, self.runner, self.clock)
        reason = {
            "type": "EngineError",
            "message": f"the engine could not drive this execution ({tries} tries in a row): "
            f"{describe(error)}",
        }
        await driver.give_up(reason)
        self.drive_failures.forget(execution_id)
        log.error("execution %s recorded as failed: %s", execution_id, reason["message"])

    def _finished(self, execution_id: UUID) -> None:
        self.tasks.pop(execution_id, None)
        self._drivers.pop(execution_id, None)
        self._cancel_on_load.discard(execution_id)
        if self.wake_on_finish or self._backlog:
            self.wake()

    async def _renew_forever(self) -> None:
        backoff = Backoff("renewing leases", log)
        interval = self.lease_seconds / 3
        wait = interval
        while True:
            await asyncio.sleep(wait)
            try:
                await self.renew_once()
            except Exception as error:  # sooner than usual: the leases run out meanwhile
                wait = min(backoff.failed(error), interval)
            else:
                backoff.succeeded()
                wait = interval

    async def renew_once(self) -> None:
        held = list(self.tasks)
        renewal = await asyncio.to_thread(self.queue.renew, self.name, held, self.lease_seconds)
        for execution_id in held:
            if execution_id not in renewal.held:
                task = self.tasks.get(execution_id)
                if task is not None:
                    task.cancel()  # lost: stop quietly, the new holder carries on
            elif execution_id in renewal.cancel_requested:
                self.cancel(execution_id)

    async def drain(self, timeout: float = 30.0) -> None:
        """Claim and drive until nothing is held or ready (tests and one-shot runs)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            await self.claim_once()
            if not self.tasks:
                ready_at = await asyncio.to_thread(self.queue.next_ready_at)
                if ready_at is None:
                    return
                await self.clock.sleep(max(0.0, (ready_at - self.clock.now()).total_seconds()))
                continue
            await asyncio.wait(set(self.tasks.values()), return_when=asyncio.FIRST_COMPLETED)
        raise TimeoutError("the work queue did not drain in time")

    async def shutdown(self, grace: float = 0.0) -> None:
        """Stop claiming, let running executions finish for up to `grace` seconds, then stop
        driving the rest (recording nothing) and give their leases back."""
        self._stopping = True
        self.wake()
        try:
            if self.tasks and grace > 0:
                await asyncio.wait(set(self.tasks.values()), timeout=grace)
            held = list(self.tasks)
            tasks = list(self.tasks.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if held:
                await asyncio.to_thread(self.queue.release, self.name, held)
            await self.runner.aclose()
        finally:
            if self.store is not None:
                await self.store.close()
