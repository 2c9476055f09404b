"""Wake-ups on every commit for a reader that reads the store itself (a projector alone):
`StoreNotices` on PostgreSQL, saves in this process."""

from __future__ import annotations

from collections.abc import Callable

from agent_ledger.application.executions import Executions
from agent_ledger.infrastructure.feed.notices import StoreNotices


class CommitWakeUps:
    """Calls `wake()` on every commit to the events table, without reading any event."""

    def __init__(
        self,
        executions: Executions,
        wake: Callable[..., None],
        notices: StoreNotices | None,
        channel: str = "executions_events",
    ):
        self.executions = executions
        self.wake = wake
        self.notices = notices
        self.channel = channel

    def start(self) -> None:
        self.executions.add_listener(self.wake)
        if self.notices is not None:
            # on (re)connect, anything committed before LISTEN took effect: a wake-up too
            self.notices.subscribe(self.channel, self.wake, self.wake)

    def stop(self) -> None:
        self.executions.remove_listener(self.wake)
