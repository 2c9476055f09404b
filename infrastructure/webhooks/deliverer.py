"""The deliverer: POSTs each webhook's events in position order, signed, at least once.

Like a projection, each webhook follows the store from a tracked position (its row's
`position`), advanced only once the receiver answered 2xx: a restart neither loses an
event nor sends again one already acknowledged (but the one in flight, at most).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx

from agent_ledger.application.event_log import LoggedEvent, to_message
from agent_ledger.application.executions import Executions
from agent_ledger.infrastructure.agents.egress import AgentUrlPolicy
from agent_ledger.infrastructure.read_models.event_index import indexed_positions
from agent_ledger.infrastructure.read_models.locks import ProjectionLocks
from agent_ledger.infrastructure.read_models.tracking import tracked_position
from agent_ledger.infrastructure.webhooks.book import FAILING, Delivery, SqlWebhooks, Webhook
from agent_ledger.projections.event_index import EventIndexProjection

log = logging.getLogger(__name__)

LOCK_NAME = "webhooks"
"""One deliverer is active at a time (the projection lock of this name)."""
PAGE = 50


def signature(secret: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256(secret, body)>`, the `X-Agent-Ledger-Signature` header."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


STOP_CHECK_SECONDS = 1.0
"""Longest wait on the event index between looks at whether the deliverer is stopping."""


class WebhookDeliverer:
    """A thread that delivers every active webhook's due events."""

    def __init__(
        self,
        executions: Executions,
        book: SqlWebhooks,
        *,
        egress: AgentUrlPolicy,
        retry_first: float,
        retry_cap: float,
        retry_window: float,
        timeout: float,
        poll_interval: float = 0.5,
        locks: ProjectionLocks | None = None,
        index_waiter: Callable[[int, float], bool] | None = None,
    ):
        """`index_waiter(position, timeout)` blocks until the event index has reached
        `position` (the projector's `wait_for`): new events wake the deliverer at once."""
        self.executions = executions
        self.book = book
        self.egress = egress
        self.retry_first = retry_first
        self.retry_cap = retry_cap
        self.retry_window = timedelta(seconds=retry_window)
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.locks = locks
        self.index_waiter = index_waiter
        self._indexed = 0
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._client = httpx.Client(timeout=timeout, follow_redirects=False)

    def wake(self, *_: object) -> None:
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="webhook-deliverer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 5)
        self._client.close()
        if self.locks is not None:
            self.locks.release_all()

    def _run(self) -> None:
        while not self._stopped.is_set():
            if not self._any_active():
                # nothing to follow: no look at each new event (a new webhook starts from its
                # own position, so waiting one poll loses none of its events)
                self._wake.wait(self.poll_interval)
                self._wake.clear()
                continue
            delivered = 0
            try:
                delivered = self.run_once()
            except Exception:  # the store or read model is away: try again after a poll
                log.exception("webhook delivery failed; trying again")
            idle = 0.0 if delivered else self._idle()
            if self.index_waiter is not None and idle > 0:
                # in steps: a stop must not wait out a long poll interval
                self.index_waiter(self._indexed + 1, min(idle, STOP_CHECK_SECONDS))
            else:
                self._wake.wait(idle)
                self._wake.clear()

    def _any_active(self) -> bool:
        try:
            return self.book.any_active()
        except Exception:  # the store is away: run_once logs it
            return True

    def _idle(self) -> float:
        try:
            due = self.book.next_due()
        except Exception:
            return self.poll_interval
        if due is None:
            return self.poll_interval
        return max(0.0, min(self.poll_interval, (due - datetime.now(UTC)).total_seconds()))

    def run_once(self) -> int:
        """Try every due webhook's next events; returns how many were acknowledged."""
        with self.book.engine.connect() as connection:
            indexed = tracked_position(connection, EventIndexProjection.name)
        self._indexed = max(self._indexed, indexed)
        if self.locks is not None and not self.locks.try_acquire(LOCK_NAME):
            return 0
        delivered = 0
        for hook in self.book.due(datetime.now(UTC)):
            if self._stopped.is_set():
                break
            delivered += self.deliver(hook, indexed)
        return delivered

    def deliver(self, hook: Webhook, indexed: int) -> int:
        """Its next page of events up to `indexed`, in order, until one fails."""
        with self.book.engine.connect() as connection:
            positions = indexed_positions(
                connection,
                user_id=hook.user_id,
                after=hook.position,
                upto=indexed,
                types=hook.types,
                limit=PAGE,
            )
        delivered = 0
        for position in positions:
            if self._stopped.is_set():
                break
            events = self.executions.read_log(after=position - 1, upto=position, limit=1)
            if not events:
                continue
            acknowledged, hook = self._post(hook, events[0])
            if not acknowledged:
                break
            delivered += 1
        return delivered

    def _post(self, hook: Webhook, event: LoggedEvent) -> tuple[bool, Webhook]:
        body = json.dumps(to_message(event), separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "agent-ledger-webhooks",
            "X-Agent-Ledger-Signature": signature(hook.secret, body),
            "X-Agent-Ledger-Position": str(event.position),
            "X-Agent-Ledger-Timestamp": timestamp,
            "X-Agent-Ledger-Webhook": hook.name,
        }
        attempt = hook.attempt + 1
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            self.egress.check(hook.url)
            response = self._client.post(hook.url, content=body, headers=headers)
            status = response.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except httpx.TimeoutException:
            error = f"no answer within {self.timeout:g} s"
        except (httpx.HTTPError, ValueError, OSError) as failure:
            error = f"{type(failure).__name__}: {failure}"[:500]
        now = datetime.now(UTC)
        delivery = Delivery(
            position=event.position,
            event_type=event.type,
            attempt=attempt,
            status_code=status,
            error=error,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
            at=now,
        )
        if error is None:
            values: dict[str, object] = {
                "position": event.position,
                "attempt": 0,
                "failing_since": None,
                "next_attempt_at": None,
                "last_error": None,
            }
            moved = self.book.record(hook, delivery, values)
            ahead = replace(hook, position=event.position, attempt=0, failing_since=None)
            return moved, ahead
        since = hook.failing_since or now
        if now - since >= self.retry_window:
            values = {"state": FAILING, "attempt": attempt, "last_error": error}
            log.warning(
                "webhook %r of %r is failing after retrying for %s: %s",
                hook.name,
                hook.user_id,
                now - since,
                error,
            )
        else:
            wait = min(self.retry_first * 2 ** (attempt - 1), self.retry_cap)
            values = {
                "attempt": attempt,
                "failing_since": since,
                "next_attempt_at": now + timedelta(seconds=wait),
                "last_error": error,
            }
        self.book.record(hook, delivery, values)
        return False, hook
