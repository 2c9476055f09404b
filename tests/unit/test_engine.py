"""The engine records every transition of a process, and handles failure and cancellation."""

from __future__ import annotations

import asyncio
from typing import Any

from agent_ledger.application.agents import AgentContext, AgentError
from agent_ledger.domain.execution_state import ExecutionStatus, StepStatus
from tests.support.engine_harness import EngineHarness, one_step

AGENT_SEQUENCE = [
    "agent_started",
    "agent_thinking",
    "tool_executing",
    "tool_completed",
    "agent_completed",
]


def first_occurrences(types: list[str], wanted: list[str]) -> list[str]:
    seen: list[str] = []
    for kind in types:
        if kind in wanted and kind not in seen:
            seen.append(kind)
    return seen


def test_the_sample_process_records_every_step_and_ends_with_projected_savings() -> None:
    harness = EngineHarness()
    execution_id = harness.start(
        "cost_optimization", {"question": "Where can we cut our LLM spend?"}
    )

    execution = asyncio.run(harness.run(execution_id))

    assert execution.status is ExecutionStatus.COMPLETED
    assert execution.output["projected_monthly_savings_usd"] > 0
    history = harness.executions.get_history(execution_id)
    types = [h.event.__class__.__name__ for h in history]
    assert types[0] == "ExecutionStarted"
    assert types[-1] == "ExecutionCompleted"
    for step in ("triage", "data", "optimization", "summary"):
        step_types = [
            t
            for h, t in zip(history, harness.types(execution_id), strict=True)
            if getattr(h.event, "step_id", None) == step
        ]
        assert step_types[:2] == ["step_scheduled", "step_started"]
        assert first_occurrences(step_types, AGENT_SEQUENCE) == AGENT_SEQUENCE
        assert step_types[-1] == "step_completed"
    positions = [h.position for h in history]
    assert positions == sorted(set(positions))


def test_a_failing_agent_fails_its_step_and_the_execution_with_the_error() -> None:
    harness = EngineHarness()

    async def broken(context: AgentContext, _: Any) -> Any:
        await context.think("about to fail")
        raise AgentError("the model refused", error_type="ModelRefused", retryable=False)

    harness.agent("broken", broken)
    execution_id = harness.start(harness.process(one_step("broken")))

    execution = asyncio.run(harness.run(execution_id))

    assert execution.status is ExecutionStatus.FAILED
    assert execution.error is not None
    assert execution.error["type"] == "ModelRefused"
    assert execution.error["step_id"] == "work"
    assert harness.types(execution_id)[-3:] == ["agent_failed", "step_failed", "execution_failed"]


def test_a_retryable_failure_is_retried_after_the_policy_delay() -> None:
    harness = EngineHarness()
    calls: list[int] = []

    async def flaky(context: AgentContext, _: Any) -> Any:
        calls.append(context.run.attempt)
        if context.run.attempt < 3:
            raise AgentError("rate limited", error_type="RateLimited")
        return {"ok": True}

    harness.agent("flaky", flaky)
    retry = {"max_attempts": 3, "initial_interval": 0.5, "backoff_coefficient": 2.0}
    execution_id = harness.start(harness.process(one_step("flaky", retry=retry)))

    execution = asyncio.run(harness.run(execution_id))

    assert execution.status is ExecutionStatus.COMPLETED
    assert calls == [1, 2, 3]
    retries = harness.events(execution_id, "step_retrying")
    assert [(r.attempt, r.delay_seconds, r.error["type"]) for r in retries] == [
        (1, 0.5, "RateLimited"),
        (2, 1.0, "RateLimited"),
    ]
    assert harness.clock.slept == [0.5, 1.0]


def test_a_hung_agent_times_out_and_the_step_fails_when_no_attempt_is_left() -> None:
    harness = EngineHarness()
    cancelled = asyncio.Event()

    async def hung(context: AgentContext, _: Any) -> Any:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    harness.agent("hung", hung)
    execution_id = harness.start(harness.process(one_step("hung", timeout_seconds=0.05)))

    execution = asyncio.run(harness.run(execution_id))

    assert cancelled.is_set(), "the hung agent's call was not cancelled"
    assert execution.status is ExecutionStatus.FAILED
    assert harness.types(execution_id)[-3:] == ["step_timed_out", "step_failed", "execution_failed"]


def test_on_error_skip_step_records_the_skip_and_the_execution_completes() -> None:
    harness = EngineHarness()

    async def broken(context: AgentContext, _: Any) -> Any:
        raise AgentError("no data", retryable=False)

    harness.agent("broken", broken)
    execution_id = harness.start(harness.process(one_step("broken", on_error="skip_step")))

    execution = asyncio.run(harness.run(execution_id))

    assert execution.status is ExecutionStatus.COMPLETED
    skipped = harness.events(execution_id, "step_skipped")
    assert [s.reason for s in skipped] == ["error"]


def test_cancelling_a_running_execution_stops_its_agent_and_records_who_cancelled() -> None:
    harness = EngineHarness()
    started = asyncio.Event()
    stopped = asyncio.Event()

    async def slow(context: AgentContext, _: Any) -> Any:
        await context.think("working")
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    harness.agent("slow", slow)
    execution_id = harness.start(harness.process(one_step("slow")))

    async def scenario() -> None:
        draining = asyncio.create_task(harness.worker.drain(timeout=5))
        await asyncio.wait_for(started.wait(), 5)
        await asyncio.to_thread(
            harness.executions.request_cancellation,
            execution_id,
            user_id="user-a",
            by="user-a",
            reason="changed my mind",
        )
        harness.worker.cancel(execution_id)  # as the change feed does on seeing the request
        await draining

    asyncio.run(scenario())

    execution = harness.executions.get_execution(execution_id)
    assert stopped.is_set()
    assert execution.status is ExecutionStatus.CANCELLED
    assert execution.steps["work"].status is StepStatus.CANCELLED
    cancelled = harness.events(execution_id, "execution_cancelled")
    assert [(c.by, c.reason) for c in cancelled] == [("user-a", "changed my mind")]


def test_a_gateway_takes_the_first_matching_route_and_skips_the_other_branch() -> None:
    harness = EngineHarness()
    process = {
        "name": "routed",
        "config": {"parallel_execution": False},
        "steps": [
            {
                "id": "route",
                "type": "gateway",
                "routes": [
                    {"when": "input.kind == 'a'", "next": ["left"]},
                    {"default": True, "next": ["right"]},
                ],
            },
            {"id": "left", "type": "agent_task", "agent": "echo", "input": {"side": "left"}},
            {"id": "right", "type": "agent_task", "agent": "echo", "input": {"side": "right"}},
        ],
        "output": "{{ steps.left.output }}",
    }
    execution_id = harness.start(harness.process(process), {"kind": "a"})

    execution = asyncio.run(harness.run(execution_id))

    assert execution.status is ExecutionStatus.COMPLETED
    assert execution.output == {"side": "left"}
    gateway = harness.events(execution_id, "gateway_evaluated")
    assert [(g.route, g.next) for g in gateway] == [(0, ["left"])]
    assert [(s.step_id, s.reason) for s in harness.events(execution_id, "step_skipped")] == [
        ("right", "branch_not_taken")
    ]


def _count_writes(harness: EngineHarness) -> list[int]:
    """Counts the engine's writes (each a list of how many events it saved)."""
    writes: list[int] = []
    save = harness.executions.save_collected

    def counting(changes: Any, work: Any = ()) -> Any:
        writes.append(sum(len(events) for _, events in changes))
        return save(changes, work)

    harness.executions.save_collected = counting  # type: ignore[method-assign]
    return writes


def test_agents_that_answer_at_once_cost_one_write_for_the_whole_execution() -> None:
    harness = EngineHarness()
    harness.agent("instant", lambda context, data: _answer(data))
    steps = [
        {"id": "a", "type": "agent_task", "agent": "instant", "input": {}},
        {"id": "b", "type": "agent_task", "agent": "instant", "input": {}, "depends_on": ["a"]},
    ]
    execution_id = harness.start(harness.process({"name": "two", "steps": steps}))
    writes = _count_writes(harness)

    execution = asyncio.run(harness.run(execution_id))

    assert execution.status is ExecutionStatus.COMPLETED
    assert writes == [len(harness.types(execution_id)) - 1]  # all but the start, in one write


def test_a_slow_agent_is_recorded_running_while_it_works() -> None:
    harness = EngineHarness()
    seen: list[StepStatus] = []

    async def slow(context: AgentContext, data: Any) -> Any:
        await asyncio.sleep(0.1)  # well past the engine's flush window
        seen.append(harness.executions.get_execution(context.run.execution_id).steps["work"].status)
        return {"done": True}

    harness.agent("slow", slow)
    execution_id = harness.start(harness.process(one_step("slow")))
    execution = asyncio.run(harness.run(execution_id))

    assert execution.status is ExecutionStatus.COMPLETED
    assert seen == [StepStatus.RUNNING]


async def _answer(data: Any) -> Any:
    return {"echo": data}
