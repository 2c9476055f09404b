"""Running one role of the service (worker, projector) as a process of its own."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from agent_ledger.infrastructure.runtime import Runtime
from agent_ledger.infrastructure.settings import Settings

log = logging.getLogger(__name__)


def run_until_signalled(
    settings: Settings, *, engine: bool, projector: bool, feed: bool = False
) -> None:
    """Start the roles, then stop gracefully on SIGTERM or SIGINT (drain, release leases)."""
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received signal %s; stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    runtime = Runtime.start(settings, engine=engine, projector=projector, feed=feed)
    name = runtime.worker_thread.worker.name if runtime.worker_thread else "-"
    log.info("running (worker %s, projector %s)", name, "on" if projector else "off")
    try:
        stop.wait()
    finally:
        runtime.stop()
        log.info("stopped")
