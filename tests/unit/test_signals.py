"""Signals on the engine (in memory): waiting parks the execution, a signal moves it on."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import pytest

from agent_ledger.application.executions import ExecutionNotFoundError
from agent_ledger.application.signals import (
    SignalNotAwaitedError,
    SignalPayloadError,
    SignalRefusedError,
    SignalRequest,
    send_signal,
)
from agent_ledger.application.starter import IdempotencyKeyReusedError
from agent_ledger.domain.execution_state import ExecutionFinishedError
from tests.support.engine_harness import EngineHarness

APPROVAL_SCHEMA = {
    "type": "object",
    "properties": {"approved": {"type": "boolean"}, "comment": {"type": "string"}},
    "required": ["approved"],
}


def approval_process(**wait: Any) -> dict[str, Any]:
    return {
        "name": "approve",
        "steps": [
            {"id": "draft", "type": "agent_task", "agent": "echo", "input": {"plan": "cut"}},
            {
                "id": "review",
                "type": "wait_for_signal",
                "signal": "approval",
                "depends_on": ["draft"],
                "schema": APPROVAL_SCHEMA,
                **wait,
            },
            {
                "id": "decide",
                "type": "gateway",
                "depends_on": ["review"],
                "routes": [
                    {"when": "steps.review.output.approved", "next": ["apply"]},
                    {"default": True, "next": ["hold"]},
                ],
            },
            {"id": "apply", "type": "agent_task", "agent": "echo", "input": {"go": True}},
            {"id": "hold", "type": "agent_task", "agent": "echo", "input": {"go": False}},
        ],
        "output": "{{ steps.review.output }}",
    }


def signal(
    harness: EngineHarness, execution_id: UUID, payload: dict[str, Any], **overrides: Any
) -> int:
    request = SignalRequest(
        **{
            "execution_id": execution_id,
            "name": "approval",
            "payload": payload,
            "caller": "user-a",
            "roles": frozenset({"user"}),
            **overrides,
        }
    )
    return send_signal(harness.executions, request).position


def test_a_waiting_execution_holds_no_lease_and_a_signal_completes_the_step() -> None:
    harness = EngineHarness()
    execution_id = harness.start(harness.process(approval_process()))
    execution = asyncio.run(harness.run(execution_id))

    assert execution.status.value == "waiting"
    awaited = harness.events(execution_id, "signal_awaited")[0]
    assert (awaited.step_id, awaited.signal) == ("review", "approval")
    row = harness.executions.recorder.work[execution_id]
    assert row.waiting
    assert row.lease_owner is None

    signal(harness, execution_id, {"approved": True, "comment": "go"})
    execution = asyncio.run(harness.run(execution_id))

    assert execution.status.value == "completed"
    assert execution.output == {"approved": True, "comment": "go"}
    assert execution.steps["apply"].status.value == "completed"
    received = harness.events(execution_id, "signal_received")[0]
    assert (received.actor, received.roles) == ("user-a", ["user"])


def test_a_signal_sent_before_its_step_is_ready_is_kept_and_taken_later() -> None:
    harness = EngineHarness()
    execution_id = harness.start(harness.process(approval_process()))
    signal(harness, execution_id, {"approved": False})  # before any worker ran it

    execution = asyncio.run(harness.run(execution_id))

    assert execution.status.value == "completed"
    assert execution.output == {"approved": False}
    assert execution.steps["apply"].status.value == "skipped"
    assert execution.inbox == []


def test_two_waits_on_one_name_take_two_signals_in_order() -> None:
    harness = EngineHarness()
    document = {
        "name": "twice",
        "steps": [
            {"id": "first", "type": "wait_for_signal", "signal": "approval"},
            {
                "id": "second",
                "type": "wait_for_signal",
                "signal": "approval",
                "depends_on": ["first"],
            },
        ],
        "output": {"a": "{{ steps.first.output }}", "b": "{{ steps.second.output }}"},
    }
    execution_id = harness.start(harness.process(document))
    signal(harness, execution_id, {"n": 1})
    signal(harness, execution_id, {"n": 2})
    with pytest.raises(SignalNotAwaitedError):
        signal(harness, execution_id, {"n": 3})  # no third step will take it

    execution = asyncio.run(harness.run(execution_id))

    assert execution.output == {"a": {"n": 1}, "b": {"n": 2}}


def test_a_wait_times_out_like_any_step_and_its_on_error_applies() -> None:
    harness = EngineHarness()
    execution_id = harness.start(
        harness.process(approval_process(timeout_seconds=60, on_error="skip_step"))
    )
    # the instant clock: the drained worker sleeps to the parked execution's deadline at once
    execution = asyncio.run(harness.run(execution_id))

    assert harness.types(execution_id).count("step_timed_out") == 1
    assert execution.steps["review"].status.value == "skipped"
    assert execution.status.value == "completed"


def test_refused_signals_record_nothing() -> None:
    harness = EngineHarness()
    execution_id = harness.start(harness.process(approval_process(allowed_roles=["admin"])))
    asyncio.run(harness.run(execution_id))
    version = harness.executions.get_execution(execution_id).version

    with pytest.raises(SignalRefusedError):  # the owner, but only admins may
        signal(harness, execution_id, {"approved": True})
    with pytest.raises(ExecutionNotFoundError):  # another user
        signal(harness, execution_id, {"approved": True}, caller="user-b")
    with pytest.raises(SignalPayloadError, match="'approved' is a required property"):
        signal(harness, execution_id, {"comment": "?"}, caller="root", roles=frozenset({"admin"}))

    assert harness.executions.get_execution(execution_id).version == version
    signal(harness, execution_id, {"approved": True}, caller="root", roles=frozenset({"admin"}))
    assert asyncio.run(harness.run(execution_id)).status.value == "completed"
    with pytest.raises(ExecutionFinishedError):
        signal(harness, execution_id, {"approved": True}, caller="root", roles=frozenset({"admin"}))


def test_an_idempotency_key_replays_its_signal_and_refuses_another() -> None:
    harness = EngineHarness()
    execution_id = harness.start(harness.process(approval_process()))
    first = signal(harness, execution_id, {"approved": True}, idempotency_key="k-1")
    again = send_signal(
        harness.executions,
        SignalRequest(
            execution_id, "approval", {"approved": True}, "user-a", frozenset({"user"}), "k-1"
        ),
    )
    assert (again.position, again.replayed) == (first, True)
    with pytest.raises(IdempotencyKeyReusedError):
        signal(harness, execution_id, {"approved": False}, idempotency_key="k-1")
    assert len(harness.events(execution_id, "signal_received")) == 1


def test_woken_executions_take_their_turns_within_their_users_limit() -> None:
    harness = EngineHarness()
    harness.queue.per_user_limit = 2
    process = harness.process(approval_process())
    waiting = [harness.start(process) for _ in range(5)]
    asyncio.run(harness.run(waiting[0]))  # drains: all five wait, none counts as running
    rows = harness.executions.recorder.work
    assert all(rows[i].waiting and not rows[i].lease_owner for i in waiting)
    newer = harness.start(process)  # started after them, before their signals

    for execution_id in waiting:
        signal(harness, execution_id, {"approved": True})
    claimed = [c.execution_id for c in harness.queue.claim("w", 10, 30.0)]

    assert len(claimed) == 2  # the limit holds for woken executions
    assert set(claimed) <= set(waiting)  # and they go before the newer one
    assert newer not in claimed


def test_a_signal_saved_while_a_worker_parks_a_stale_copy_still_wakes_the_execution() -> None:
    from agent_ledger.application.driver import ExecutionDriver
    from agent_ledger.application.execution_session import ExecutionSession

    harness = EngineHarness()
    execution_id = harness.start(harness.process(approval_process()))
    asyncio.run(harness.run(execution_id))  # waiting, parked
    stale = harness.executions.get_execution(execution_id)  # read before the signal
    signal(harness, execution_id, {"approved": True})  # its wake-up re-queues it
    [claim] = harness.queue.claim("worker-1", 1, 30)
    assert claim.execution_id == execution_id

    # the worker drives the copy it read before the signal: it decides to wait again, and
    # its parking (no event of its own, so no conflict) lands after the signal's wake-up
    session = ExecutionSession(harness.executions, stale, "worker-1")
    asyncio.run(ExecutionDriver(session, harness.runner, harness.clock).run())

    assert not harness.executions.recorder.work[execution_id].waiting  # woken again
    execution = asyncio.run(harness.run(execution_id))
    assert execution.status.value == "completed"
    assert execution.output == {"approved": True}
