"""The event feed: follows the store and hands each new batch of events to in-process
subscribers."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from agent_ledger.application.backoff import Backoff
from agent_ledger.application.event_log import LoggedEvent, type_of_topic
from agent_ledger.application.executions import MAX_PAGE, Executions
from agent_ledger.application.path_timing import mark
from agent_ledger.infrastructure.feed.notices import StoreNotices
from agent_ledger.infrastructure.feed.reconnect import unavailable
from agent_ledger.infrastructure.store.append_sql import parse_notice

log = logging.getLogger(__name__)

Subscriber = Callable[[list[LoggedEvent], int], None]
"""Called with the new events it may want and the position the feed has read up to."""

WantedTypes = Callable[[], frozenset[str] | None]
"""The event types a subscriber wants now (wire names); None for every type."""


def every_type() -> None:
    """Wants every event (the default)."""
    return None


def nothing() -> frozenset[str]:
    """Wants no event, only the call that says the store moved on (a wake-up)."""
    return frozenset()


class EventFeed:
    """One reader of new events per process: woken by PostgreSQL NOTIFY (every process's
    writes, this one's included) or, without it, by saves in this process, and by a slow
    poll as a fallback for any missed wake-up.

    The store is the truth; a wake-up only says "look again", so nothing is lost if one
    is missed, and subscribers see every event of the types they want once, in position
    order. A notice also says how far the store reached and which types it committed:
    while every wake-up since the last read came with one, the feed reads no head, and
    reads no events at all when none of those types is wanted.
    """

    def __init__(
        self,
        executions: Executions,
        *,
        poll_interval: float = 0.5,
        notices: StoreNotices | None = None,
        channel: str = "executions_events",
    ):
        self.executions = executions
        self.poll_interval = poll_interval
        self.notices = notices
        self.channel = channel
        self.position = 0
        self._subscribers: list[tuple[Subscriber, WantedTypes]] = []
        self._lock = threading.Lock()
        # what notices said since the last read; _unknown: a wake-up said nothing
        self._unknown = True
        self._noticed_head = 0
        self._noticed_types: set[str] | None = set()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []

    def subscribe(self, subscriber: Subscriber, wants: WantedTypes = every_type) -> None:
        """Deliver new events to `subscriber`; events of types no subscriber `wants` are not
        read from the store at all."""
        with self._lock:
            self._subscribers.append((subscriber, wants))

    def wake(self, *_: object) -> None:
        """Look at the store again soon (any arguments are ignored)."""
        with self._lock:
            self._unknown = True
        self._wake.set()

    def notice(self, payload: str) -> None:
        """A PostgreSQL notice on the events channel: read up to its position, soon."""
        said = parse_notice(payload)
        if said is None:
            self.wake()
            return
        head, topics = said
        mark("feed.notice", head)
        with self._lock:
            self._noticed_head = max(self._noticed_head, head)
            if topics is None or self._noticed_types is None:
                self._noticed_types = None
            else:
                self._noticed_types.update(type_of_topic(t) for t in topics)
        self._wake.set()

    def start(self, after: int | None = None) -> None:
        """Deliver events after `after` (default: from the store's current head)."""
        self.position = self.executions.last_position() if after is None else after
        if self.notices is not None:  # this process's own writes are noticed like any other's
            # on (re)connect, anything committed before LISTEN took effect: read the head
            self.notices.subscribe(self.channel, self.notice, self.wake)
        else:
            self.executions.add_listener(self.wake)
        self._spawn(self._follow, "event-feed")

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        self.executions.remove_listener(self.wake)
        for thread in self._threads:
            thread.join(timeout=5)

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _follow(self) -> None:
        backoff = Backoff("event feed reading the store", log, expected=unavailable)
        while not self._stopped.is_set():
            self._wake.clear()
            try:
                # read at once; the notices that arrive during a read are taken together
                # by the next one (a burst of commits costs a read per read, not per commit)
                while self._deliver_next_page():
                    pass
                backoff.succeeded()
            except Exception as error:
                self._wake.wait(backoff.failed(error))  # or sooner: notifications are back
                self.wake()  # what the notices said went with the failed read
            if not self._wake.wait(self.poll_interval):
                self.wake()  # the poll: notices may have been missed

    def _deliver_next_page(self) -> bool:
        # the head first, then what is wanted: a subscriber that starts wanting a type after
        # this reads the store itself (its catch-up) beyond everything up to this head
        with self._lock:
            unknown, head, committed = self._unknown, self._noticed_head, self._noticed_types
            self._unknown, self._noticed_types = False, set()
        if unknown:
            head, committed = self.executions.last_position(), None
        if head <= self.position:
            return False
        with self._lock:
            subscribers = list(self._subscribers)
        wanted = _union(wants() for _, wants in subscribers)
        if committed is not None and wanted is not None and not committed & wanted:
            events: list[LoggedEvent] = []  # nothing wanted was committed up to the head
        else:
            events = self.executions.read_log(after=self.position, upto=head, types=wanted)
        upto = head
        mark("feed.read", upto)
        if len(events) == MAX_PAGE:
            upto = events[-1].position
            self.wake()  # the rest up to the head: what it holds is known no more
        for subscriber, _ in subscribers:
            try:
                subscriber(events, upto)
            except Exception:
                log.exception("an event feed subscriber failed")
        self.position = upto
        return True


def _union(choices: Iterable[frozenset[str] | None]) -> frozenset[str] | None:
    """Every type any subscriber wants; None when one of them wants every type."""
    union: set[str] = set()
    for chosen in choices:
        if chosen is None:
            return None
        union |= chosen
    return frozenset(union)
