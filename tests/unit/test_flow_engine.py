"""Process semantics: parallel branches, joins, order, failure policies, timers, leases."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from agent_ledger.application.agents import AgentContext, AgentError
from agent_ledger.application.starter import StartRequest, start_execution
from agent_ledger.application.work import Enqueue, Fence, LeaseLostError
from agent_ledger.domain.execution_state import ExecutionStatus, StepStatus
from tests.support.engine_harness import EngineHarness


def agent_step(step_id: str, agent: str = "echo", **options: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "agent_task",
        "agent": agent,
        "input": {"step": step_id},
        **options,
    }


def process(*steps: dict[str, Any], parallel: bool = True, **config: Any) -> dict[str, Any]:
    return {
        "name": "flow",
        "config": {"parallel_execution": parallel, **config},
        "steps": list(steps),
    }


def started_order(harness: EngineHarness, execution_id: Any) -> list[str]:
    return [e.step_id for e in harness.events(execution_id, "step_started")]


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll a condition on the event loop, failing the test if it stays false."""

    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout)


def failed(harness: EngineHarness, execution_id: Any, step_id: str) -> bool:
    return harness.executions.get_execution(execution_id).steps[step_id].status is (
        StepStatus.FAILED
    )


class Gate:
    """An agent that waits until the test opens it, recording who is inside at once."""

    def __init__(self) -> None:
        self.inside: set[str] = set()
        self.most_at_once = 0
        self.open = asyncio.Event()

    async def __call__(self, context: AgentContext, data: Any) -> Any:
        self.inside.add(context.run.step_id)
        self.most_at_once = max(self.most_at_once, len(self.inside))
        await self.open.wait()
        self.inside.discard(context.run.step_id)
        return data


def test_a_diamond_runs_its_branches_together_and_the_join_waits_for_both() -> None:
    harness = EngineHarness()
    gate = Gate()
    harness.agent("gate", gate)
    execution_id = harness.start(
        harness.process(
            process(
                agent_step("fork"),
                agent_step("left", "gate", depends_on=["fork"]),
                agent_step("right", "gate", depends_on=["fork"]),
                agent_step("join", depends_on=["left", "right"]),
            )
        )
    )

    async def scenario() -> None:
        draining = asyncio.create_task(harness.worker.drain(timeout=5))
        await until(lambda: gate.most_at_once >= 2)
        states = harness.executions.get_execution(execution_id).steps
        assert states["join"].status is StepStatus.PENDING  # a join never starts early
        gate.open.set()
        await draining

    asyncio.run(scenario())

    assert gate.most_at_once == 2
    order = started_order(harness, execution_id)
    assert order[0] == "fork"
    assert order[-1] == "join"
    assert harness.executions.get_execution(execution_id).status is ExecutionStatus.COMPLETED


def test_without_parallel_execution_steps_run_one_at_a_time_in_topological_order() -> None:
    harness = EngineHarness()
    execution_id = harness.start(
        harness.process(
            process(
                agent_step("c", depends_on=["a", "b"]),
                agent_step("b"),
                agent_step("a"),
                agent_step("d", depends_on=["a"]),
                parallel=False,
            )
        )
    )

    asyncio.run(harness.run(execution_id))

    # declaration order breaks ties among ready steps: b, a, then c (waits for both), then d
    assert started_order(harness, execution_id) == ["b", "a", "c", "d"]
    types = harness.types(execution_id)
    starts = [i for i, t in enumerate(types) if t == "step_started"]
    ends = [i for i, t in enumerate(types) if t == "step_completed"]
    assert all(end < start for end, start in zip(ends, starts[1:], strict=False))


async def fail(context: AgentContext, data: Any) -> Any:
    raise AgentError("broken", retryable=False)


@pytest.mark.parametrize("stop_on_failure", [True, False])
def test_stop_on_failure_decides_whether_independent_branches_finish(
    stop_on_failure: bool,
) -> None:
    harness = EngineHarness()
    gate = Gate()
    harness.agent("gate", gate)
    harness.agent("fail", fail)
    execution_id = harness.start(
        harness.process(
            process(
                agent_step("broken", "fail"),
                agent_step("slow", "gate"),
                agent_step("after_broken", depends_on=["broken"]),
                stop_on_failure=stop_on_failure,
            )
        )
    )

    async def scenario() -> None:
        draining = asyncio.create_task(harness.worker.drain(timeout=5))
        await until(lambda: bool(gate.inside))
        await until(lambda: failed(harness, execution_id, "broken"))  # while "slow" runs
        gate.open.set()
        await draining

    asyncio.run(scenario())

    execution = harness.executions.get_execution(execution_id)
    assert execution.status is ExecutionStatus.FAILED
    assert execution.error is not None
    assert execution.error["step_id"] == "broken"
    expected_slow = StepStatus.CANCELLED if stop_on_failure else StepStatus.COMPLETED
    assert execution.steps["slow"].status is expected_slow
    if not stop_on_failure:
        assert execution.steps["after_broken"].skip_reason == "dependency_failed"


def test_a_timer_step_waits_durably_and_fires() -> None:
    harness = EngineHarness()
    execution_id = harness.start(
        harness.process(
            process(
                agent_step("before"),
                {"id": "pause", "type": "timer", "seconds": 2, "depends_on": ["before"]},
                agent_step("after", depends_on=["pause"]),
            )
        )
    )

    asyncio.run(harness.run(execution_id))

    types = harness.types(execution_id)
    assert types.index("timer_started") < types.index("timer_fired")
    started = harness.events(execution_id, "timer_started")[0]
    assert started.seconds == 2.0
    assert 2.0 in harness.clock.slept
    assert harness.executions.get_execution(execution_id).status is ExecutionStatus.COMPLETED


def test_a_long_wait_lets_the_lease_go_and_is_picked_up_when_due() -> None:
    harness = EngineHarness()
    execution_id = harness.start(
        harness.process(
            process(
                {"id": "pause", "type": "timer", "seconds": 3600},
                agent_step("after", depends_on=["pause"]),
            )
        )
    )

    async def scenario() -> None:
        claimed = await harness.worker.claim_once()
        assert claimed == 1
        await asyncio.wait(set(harness.worker.tasks.values()))
        row = harness.executions.recorder.work[execution_id]  # type: ignore[attr-defined]
        assert row.lease_owner is None  # released while it waits
        assert row.ready_at >= harness.clock.now().timestamp() + 3500
        await harness.worker.drain(timeout=5)  # sleeps (instantly) until due, then finishes

    asyncio.run(scenario())

    assert harness.executions.get_execution(execution_id).status is ExecutionStatus.COMPLETED


def test_a_worker_that_lost_its_lease_cannot_write() -> None:
    harness = EngineHarness()
    execution_id = harness.start(
        "only-echo" if False else harness.process(process(agent_step("a")))
    )
    execution = harness.executions.get_execution(execution_id)
    claims = harness.queue.claim("worker-1", 1, lease_seconds=30)
    assert [c.execution_id for c in claims] == [execution_id]
    harness.executions.recorder.work[execution_id].lease_owner = "worker-2"  # type: ignore[attr-defined]

    execution.schedule_step("a", 1)
    with pytest.raises(LeaseLostError):
        harness.executions.save(execution, work=[Fence(execution_id, "worker-1")])

    assert harness.executions.get_execution(execution_id).version == 1


def test_an_expired_lease_is_taken_over_and_the_lost_attempt_retried() -> None:
    harness = EngineHarness()
    calls: list[int] = []

    async def once_lost(context: AgentContext, data: Any) -> Any:
        calls.append(context.run.attempt)
        return {"attempt": context.run.attempt}

    harness.agent("work", once_lost)
    execution_id = harness.start(harness.process(process(agent_step("a", "work"))))
    # a worker claims it, starts the attempt, then dies without a word
    assert harness.queue.claim("dead-worker", 1, lease_seconds=-1)
    execution = harness.executions.get_execution(execution_id)
    execution.schedule_step("a", 1)
    execution.start_step("a", 1)
    harness.executions.save(execution, work=[Fence(execution_id, "dead-worker")])

    final = asyncio.run(harness.run(execution_id))

    assert final.status is ExecutionStatus.COMPLETED
    taken = harness.events(execution_id, "execution_taken_over")
    assert [(t.previous_worker, t.worker) for t in taken] == [("dead-worker", "worker-1")]
    retries = harness.events(execution_id, "step_retrying")
    assert [(r.attempt, r.error["type"]) for r in retries] == [(1, "WorkerLost")]
    assert calls == [2]
    assert final.output == {"a": {"attempt": 2}}


def test_each_user_runs_at_most_three_executions_at_once_and_the_rest_wait_in_order() -> None:
    harness = EngineHarness()
    gate = Gate()
    harness.agent("gate", gate)
    name = harness.process(process(agent_step("a", "gate")))
    first = [harness.start(name) for _ in range(5)]
    other_user = start_execution(
        harness.executions,
        StartRequest(user_id="user-b", process=harness.catalog.get(name), input={}),
    ).execution_id

    claims = harness.queue.claim("worker-1", 10, lease_seconds=30)

    claimed = [c.execution_id for c in claims]
    assert set(claimed) == {*first[:3], other_user}
    more = harness.queue.claim("worker-2", 10, lease_seconds=30)
    assert more == []  # user-a's fourth waits until one of the three finishes


def test_enqueueing_twice_keeps_one_queue_entry() -> None:
    harness = EngineHarness()
    execution_id = harness.start(harness.process(process(agent_step("a"))))
    execution = harness.executions.get_execution(execution_id)
    execution.schedule_step("a", 1)
    harness.executions.save(execution, work=[Enqueue(execution_id, "user-a")])

    assert len(harness.executions.recorder.work) == 1  # type: ignore[attr-defined]
