"""The tail's fan-out, filters and request rules, without a server or a database."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from agent_ledger.application.event_log import EVENT_TYPES, LoggedEvent
from agent_ledger.application.tail_filter import TailFilter, UnknownEventTypeError, parse_types
from agent_ledger.domain.executions import Execution
from agent_ledger.infrastructure.api.tail import (
    CloseCode,
    Ended,
    Outgoing,
    Subscriber,
    TailHub,
    TooManySubscriptionsError,
)
from agent_ledger.infrastructure.api.tail_session import TailRefusedError, TailRequest
from agent_ledger.projections.event_index import EventIndexProjection, IndexEntry


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    running = asyncio.new_event_loop()
    yield running
    running.close()


def outgoing(
    position: int, user: str, kind: str = "agent_thinking", execution: str = ""
) -> Outgoing:
    message: dict[str, Any] = {
        "position": position,
        "execution_id": execution or str(uuid.UUID(int=position)),
        "type": kind,
        "user_id": user,
    }
    return Outgoing(position, message, json.dumps(message))


def drain(subscriber: Subscriber) -> list[int]:
    return [item.position for item in subscriber.pending]


def test_each_subscriber_receives_only_its_own_users_events_and_auditors_receive_all(
    loop: asyncio.AbstractEventLoop,
) -> None:
    hub = TailHub(loop)
    alice = hub.add("alice", 0, TailFilter("alice"))
    bob = hub.add("bob", 0, TailFilter("bob"))
    auditor = hub.add("carol", 0, TailFilter(None))

    hub._fan_out([outgoing(1, "alice"), outgoing(2, "bob"), outgoing(3, "alice")])

    assert drain(alice) == [1, 3]
    assert drain(bob) == [2]
    assert drain(auditor) == [1, 2, 3]
    assert hub.position == 3


def test_a_filter_by_execution_and_type_selects_only_those_events(
    loop: asyncio.AbstractEventLoop,
) -> None:
    hub = TailHub(loop)
    execution = uuid.uuid4()
    only = hub.add("alice", 0, TailFilter("alice", execution, frozenset({"tool_executing"})))

    hub._fan_out(
        [
            outgoing(1, "alice", "tool_executing", str(execution)),
            outgoing(2, "alice", "agent_thinking", str(execution)),
            outgoing(3, "alice", "tool_executing"),
        ]
    )

    assert drain(only) == [1]


def test_a_subscriber_whose_queue_fills_is_ended_as_too_slow_and_others_go_on(
    loop: asyncio.AbstractEventLoop,
) -> None:
    hub = TailHub(loop, max_queue=2)
    slow = hub.add("alice", 0, TailFilter("alice"))
    other = hub.add("bob", 0, TailFilter("bob"))

    hub._fan_out([outgoing(p, "alice") for p in (1, 2, 3)] + [outgoing(4, "bob")])

    assert slow.ended == Ended(CloseCode.TOO_SLOW, "subscriber too slow")
    assert drain(other) == [4]
    assert hub.count == 1


def test_a_user_may_not_open_more_subscriptions_than_the_limit(
    loop: asyncio.AbstractEventLoop,
) -> None:
    hub = TailHub(loop, max_per_user=2)
    first = hub.add("alice", 0, TailFilter("alice"))
    hub.add("alice", 0, TailFilter("alice"))
    hub.add("bob", 0, TailFilter("bob"))

    with pytest.raises(TooManySubscriptionsError):
        hub.add("alice", 0, TailFilter("alice"))
    hub.remove(first)
    hub.add("alice", 0, TailFilter("alice"))


def test_a_revocation_ends_only_subscriptions_of_tokens_issued_before_it(
    loop: asyncio.AbstractEventLoop,
) -> None:
    hub = TailHub(loop)
    old = hub.add("alice", 100.0, TailFilter("alice"))
    newer = hub.add("alice", 200.0, TailFilter("alice"))
    bob = hub.add("bob", 100.0, TailFilter("bob"))

    hub.apply_revocations({"alice": 150.0})

    assert old.ended == Ended(CloseCode.FORBIDDEN, "token revoked")
    assert newer.ended is None
    assert bob.ended is None
    assert hub.count == 2


def test_closing_all_ends_every_subscriber_with_service_restart(
    loop: asyncio.AbstractEventLoop,
) -> None:
    hub = TailHub(loop)
    subscribers = [hub.add(u, 0, TailFilter(u)) for u in ("alice", "bob")]

    hub.close_all()

    assert {s.ended.code for s in subscribers if s.ended} == {CloseCode.SERVICE_RESTART}
    assert hub.count == 0


def test_an_idle_subscriber_times_out_to_none_then_receives_what_arrives(
    loop: asyncio.AbstractEventLoop,
) -> None:
    hub = TailHub(loop)
    alice = hub.add("alice", 0, TailFilter("alice"))

    idle = loop.run_until_complete(alice.next(0.01))
    hub._fan_out([outgoing(7, "alice")])
    ready = loop.run_until_complete(alice.next(0.01))

    assert idle is None
    assert isinstance(ready, Outgoing)
    assert ready.position == 7


def test_the_type_filter_knows_every_event_type_and_refuses_unknown_ones() -> None:
    assert parse_types(" agent_started,tool_executing ") == {"agent_started", "tool_executing"}
    assert parse_types(None) == frozenset()
    assert {"execution_started", "tool_completed", "step_retrying"} <= EVENT_TYPES
    with pytest.raises(UnknownEventTypeError, match="agent_strated"):
        parse_types("agent_strated")


@pytest.mark.parametrize(
    "query",
    [
        {"after": "x"},
        {"after": "-1"},
        {"execution_id": "nope"},
        {"types": "nope"},
        {"all_users": "yes"},
    ],
)
def test_a_bad_stream_request_is_refused_with_a_reason(query: dict[str, str]) -> None:
    with pytest.raises(TailRefusedError) as refused:
        TailRequest.parse(query)

    assert refused.value.code == CloseCode.BAD_REQUEST
    assert refused.value.status == 422
    assert "invalid stream request" in refused.value.detail


def test_sse_last_event_id_takes_precedence_over_after() -> None:
    request = TailRequest.parse({"after": "5", "all_users": "true"}, last_event_id="42")

    assert request.after == 42
    assert request.all_users is True


class ListIndex:
    def __init__(self) -> None:
        self.entries: list[IndexEntry] = []

    def add(self, entry: IndexEntry) -> None:
        self.entries.append(entry)


def test_the_event_index_records_owner_execution_and_type_of_each_event() -> None:
    from agent_ledger.domain.executions import Execution

    execution = Execution.start(
        user_id="alice",
        process_name="echo",
        process_version=1,
        definition={},
        step_ids=["s"],
        input={},
    )
    execution.schedule_step("s", 1)
    view = ListIndex()
    projection = EventIndexProjection(view)

    for position, event in enumerate(execution.collect_events(), start=10):
        projection.process(event, position)
    projection.process(object(), 99)  # not an execution event: nothing to index

    assert [(e.position, e.user_id, e.execution_id, e.type) for e in view.entries] == [
        (10, "alice", execution.id, "execution_started"),
        (11, "alice", execution.id, "step_scheduled"),
    ]


def test_events_of_users_nobody_follows_are_not_encoded_but_the_position_moves_on(
    loop: asyncio.AbstractEventLoop,
) -> None:
    hub = TailHub(loop)
    alice = hub.add("alice", 0, TailFilter("alice"))
    events = []
    for position, user in enumerate(["bob", "alice", "bob"], start=1):
        execution = Execution.start(
            user_id=user,
            process_name="p",
            process_version=1,
            definition={},
            step_ids=[],
            input={},
        )
        events.append(LoggedEvent(position, execution.collect_events()[0]))

    hub.publish(events)
    loop.run_until_complete(asyncio.sleep(0))

    assert drain(alice) == [2]
    assert hub.position == 3
