"""The tail's iterator yields every event once and in order across connections that end
mid-stream in each way a real one does (4408, 1012, 4401, 4429, a dropped socket)."""

from __future__ import annotations

import json
from uuid import UUID, uuid4

from cutting_proxy import CuttingProxy
from tests.support.server import Server

from agent_ledger_client import Backoff, Client, Event
from agent_ledger_client.tail import Subscription

FAST = Backoff(initial=0.01, maximum=0.05, busy_minimum=0.05)


def test_the_stream_yields_each_event_once_across_forced_reconnects(
    server: Server, token: str
) -> None:
    refreshes: list[str] = []

    def refresh() -> str:
        refreshes.append(token)
        return token

    with Client(server.url, token) as direct:
        ids = [direct.start("echo", {"i": i}).id for i in range(4)]
        for execution_id in ids:
            direct.wait(execution_id, timeout=30)
        expected = [e for execution_id in ids for e in direct.events(execution_id)]
    expected.sort(key=lambda e: e.position)
    first = expected[0].position - 1

    with (
        CuttingProxy(server.url.replace("http", "ws", 1), per_connection=3).running() as proxy,
        Client(proxy.url, token, token_provider=refresh, backoff=FAST) as client,
    ):
        received: list[Event] = []
        finished: set[UUID] = set()
        for event in client.stream(after=first, timeout=60):
            received.append(event)
            if event.type == "execution_completed" and event.execution_id in ids:
                finished.add(event.execution_id)
            if finished == set(ids):
                break

    mine = [e for e in received if e.execution_id in ids]
    assert [e.position for e in mine] == [e.position for e in expected]
    assert len({e.position for e in received}) == len(received)  # nothing twice
    assert {"drop", 4408, 1012, 4401, 4429} <= set(proxy.cuts)
    assert len(refreshes) == proxy.cuts.count(4401)
    # each reconnection resumed after the last position yielded
    assert proxy.paths[0].startswith(f"/v1/stream?after={first}")
    assert f"after={received[2].position}" in proxy.paths[1]


def test_a_position_already_passed_on_is_never_yielded_again() -> None:
    subscription = Subscription("http://example", 10, None, ["agent_started"])
    event = {
        "execution_id": str(uuid4()),
        "version": 1,
        "type": "agent_started",
        "timestamp": "2026-01-01T00:00:00+00:00",
        "user_id": "u",
        "data": {},
    }
    assert subscription.accept(json.dumps({**event, "position": 9})) is None
    assert subscription.accept(json.dumps({**event, "position": 10})) is None
    assert subscription.accept(json.dumps({"type": "heartbeat", "position": 12})) is None
    assert subscription.accept(json.dumps({**event, "position": 11})) is None  # behind a heartbeat
    accepted = subscription.accept(json.dumps({**event, "position": 13}))
    assert accepted is not None
    assert accepted.position == 13
    assert subscription.url() == "ws://example/v1/stream?after=13&types=agent_started"
