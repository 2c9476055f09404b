"""Runs a worker on its own event loop and thread, away from the API's loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

from agent_ledger.application.worker import Worker

log = logging.getLogger(__name__)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop where it is installed (as with uvicorn's standard extras), else asyncio's.

    A worker hands every database call to a thread and back: uvloop's wake-ups and
    callbacks cost less of the CPU the engine shares with the database.
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop has no Windows build
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class WorkerThread:
    """The engine role of a process: a `Worker` with a loop of its own."""

    def __init__(self, worker: Worker, shutdown_grace: float = 5.0):
        self.worker = worker
        self.shutdown_grace = shutdown_grace
        self.loop = new_event_loop()
        self._thread = threading.Thread(target=self._run, name="worker", daemon=True)
        self._main: asyncio.Future[None] | None = None

    def start(self) -> None:
        self.worker.bind(self.loop)
        self._thread.start()

    def stop(self) -> None:
        """Drain for a while, then stop driving and give the leases back."""
        if not self._thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(
            self.worker.shutdown(self.shutdown_grace), self.loop
        )
        try:
            future.result(self.shutdown_grace + 10)
        except Exception:
            log.exception("the worker did not shut down cleanly")
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._main = self.loop.create_task(self.worker.run())
        try:
            self.loop.run_forever()
        finally:
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            with contextlib.suppress(Exception):
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.close()
