"""Bounded back-off for loops that must outlive an outage of the store, logged once per step."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from eventsourcing.persistence import InterfaceError, OperationalError


def store_unavailable(error: BaseException) -> bool:
    """Whether `error` says the store could not be reached (not that a statement was wrong)."""
    return isinstance(error, OperationalError | InterfaceError)


class Backoff:
    """How long a loop waits after each failure of `what`: `first`, doubled on every failure
    in a row up to `cap`, and `first` again after a success.

    Logs a warning on the first failure and each time the delay grows (once per step, not
    once per try: a loop failing at the cap for an hour logs nothing more), with the error's
    type and first line, and once when `what` works again. The first failure of a run also
    logs its traceback, unless `expected(error)` (an outage needs none).
    """

    def __init__(
        self,
        what: str,
        log: logging.Logger,
        *,
        first: float = 0.1,
        cap: float = 1.0,
        expected: Callable[[BaseException], bool] = store_unavailable,
    ) -> None:
        self.what = what
        self.log = log
        self.expected = expected
        self.first = first
        self.cap = cap
        self.delay = 0.0  # 0 while nothing is failing
        self._since = 0.0
        self._tries = 0

    @property
    def failing(self) -> bool:
        return self.delay > 0

    def failed(self, error: BaseException) -> float:
        """Note a failure; the seconds to wait before the next try."""
        self._tries += 1
        if not self.failing:
            self._since = time.monotonic()
            grown = self.first
        else:
            grown = min(self.delay * 2, self.cap)
        if grown != self.delay:
            self.log.warning(
                "%s failed (%s); retrying every %.2gs%s",
                self.what,
                describe(error),
                grown,
                "" if grown < self.cap else " from now on",
                exc_info=error if not self.failing and not self.expected(error) else None,
            )
        self.delay = grown
        return grown

    def succeeded(self) -> None:
        """Note a success: the next failure starts from `first` again."""
        if self.failing:
            self.log.warning(
                "%s works again after %.1fs (%d failed tries)",
                self.what,
                time.monotonic() - self._since,
                self._tries,
            )
        self.delay = 0.0
        self._tries = 0


def describe(error: BaseException) -> str:
    """An error in one short line: its type and the first line of its message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:300]}" if lines else type(error).__name__
