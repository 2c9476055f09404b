"""The live tail's resume rules, shared by the sync and async streams: where to reconnect
from, which messages to pass on, what each close code means, how long to wait."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from urllib.parse import urlencode
from uuid import UUID

from agent_ledger_client.errors import StreamClosedError
from agent_ledger_client.schemas import Event

RESUMABLE = {1000, 1001, 1006, 1011, 1012, 1013, 4408}
"""Closes after which the same subscription resumes from the last position."""
REFRESH = 4401
BUSY = 4429


class Next(Enum):
    """What to do after a subscription ended."""

    RECONNECT = "reconnect"
    REFRESH_TOKEN = "refresh_token"


@dataclass
class Backoff:
    """Exponential back-off with full jitter: a random wait up to `initial * 2**n`, capped."""

    initial: float = 0.25
    maximum: float = 10.0
    busy_minimum: float = 1.0
    """The shortest wait after 4429 (too many subscriptions)."""

    def delay(self, failures: int, busy: bool = False) -> float:
        ceiling = min(self.maximum, self.initial * 2**failures)
        wait = random.uniform(ceiling / 2, ceiling)
        return max(wait, self.busy_minimum) if busy else wait


class Subscription:
    """One logical subscription across connections: its query and its last position."""

    def __init__(
        self,
        base_url: str,
        after: int | None,
        execution_id: UUID | str | None,
        types: Iterable[str] | None,
        all_users: bool = False,
    ):
        self.ws_base = base_url.rstrip("/").replace("http", "ws", 1)
        self.last = after
        self.execution_id = execution_id
        self.types = ",".join(types) if types is not None else None
        self.all_users = all_users
        self.failures = 0

    def url(self) -> str:
        """Where to connect now: after the last position passed on (or live only)."""
        query: dict[str, str] = {}
        if self.last is not None:
            query["after"] = str(self.last)
        if self.execution_id is not None:
            query["execution_id"] = str(self.execution_id)
        if self.types:
            query["types"] = self.types
        if self.all_users:
            query["all_users"] = "true"
        return f"{self.ws_base}/v1/stream?{urlencode(query)}"

    def accept(self, raw: str | bytes) -> Event | None:
        """The event to yield, or None for a heartbeat or a position already passed on."""
        message = json.loads(raw)
        position = message["position"]
        if self.last is not None and position <= self.last:
            return None  # never twice, whatever a server sends again after a reconnect
        self.last = position  # a heartbeat's position is a safe resume point too
        self.failures = 0
        return None if message["type"] == "heartbeat" else Event.model_validate(message)

    def closed(self, code: int | None, reason: str, can_refresh: bool) -> Next:
        """What to do after a close (None: the connection dropped without one)."""
        if code is None or code in RESUMABLE or code == BUSY:
            return Next.RECONNECT
        if code == REFRESH and can_refresh:
            return Next.REFRESH_TOKEN
        raise StreamClosedError(code, reason)

    def handshake_refused(self, status: int, can_refresh: bool) -> Next:
        """What to do when the server refused the WebSocket upgrade with an HTTP status."""
        if status == 401 and can_refresh:
            return Next.REFRESH_TOKEN
        if status in (429, 502, 503, 504):
            return Next.RECONNECT
        raise StreamClosedError({401: 4401, 403: 4403, 404: 4404}.get(status, 4400), str(status))
