"""What a worker does with an execution it could not drive: try later, then fail it.

A failure that escapes an execution's driver (a write the store refuses, a read that
fails) happens again on an immediate retry; released at once, the execution was claimed
again and again in a hot loop. Instead each failure in a row doubles the wait before
the execution may be claimed again, and after `max_tries` the execution is recorded as
failed with the reason, unless the store itself is away (then only the wait grows).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from uuid import UUID


@dataclass(frozen=True)
class RetryLater:
    """Release the execution, claimable again after `delay` seconds."""

    tries: int
    delay: float
    grew: bool
    """Whether the delay is longer than after the previous failure (log once per step)."""


@dataclass(frozen=True)
class GiveUp:
    """Record the execution as failed: it failed `tries` times in a row."""

    tries: int


class DriveFailures:
    """Failures in a row per execution, and the answer to the next one."""

    def __init__(
        self,
        *,
        first: float = 0.5,
        cap: float = 30.0,
        max_tries: int = 6,
        remembered: int = 10_000,
    ):
        self.first = first
        self.cap = cap
        self.max_tries = max_tries
        self.remembered = remembered
        self._tries: OrderedDict[UUID, int] = OrderedDict()

    def failed(self, execution_id: UUID, *, store_unavailable: bool) -> RetryLater | GiveUp:
        """Note a failure; while the store is away, an execution is never given up."""
        tries = self._tries.get(execution_id, 0) + 1
        if tries >= self.max_tries and not store_unavailable:
            return GiveUp(tries)
        return self.retry_later(execution_id)

    def retry_later(self, execution_id: UUID) -> RetryLater:
        """Note a failure that will be retried whatever the count (giving up failed too)."""
        tries = self._tries.pop(execution_id, 0) + 1
        self._tries[execution_id] = tries
        while len(self._tries) > self.remembered:  # executions another worker finished
            self._tries.popitem(last=False)
        delay = self.delay(tries)
        return RetryLater(tries, delay, grew=tries == 1 or delay > self.delay(tries - 1))

    def delay(self, tries: int) -> float:
        return float(min(self.first * 2 ** (tries - 1), self.cap))

    def succeeded(self, execution_id: UUID) -> None:
        self._tries.pop(execution_id, None)

    def forget(self, execution_id: UUID) -> None:
        """The execution was given up (or finished): start from nothing next time."""
        self._tries.pop(execution_id, None)
