"""Resume and fork on the engine (in memory)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent_ledger.application.agents import AgentError
from agent_ledger.application.lineage import ForkRequest, fork, resume, resume_many
from agent_ledger.domain.executions import NotResumableError
from tests.support.engine_harness import EngineHarness

CHAIN = {
    "name": "chain",
    "config": {"parallel_execution": False},
    "steps": [
        {"id": "first", "type": "agent_task", "agent": "echo", "input": {"q": "{{ input.q }}"}},
        {
            "id": "middle",
            "type": "agent_task",
            "agent": "flaky",
            "depends_on": ["first"],
            "input": {"from": "{{ steps.first.output.q }}"},
            "retry": {"max_attempts": 2, "initial_interval": 0.01},
        },
        {"id": "last", "type": "agent_task", "agent": "echo", "depends_on": ["middle"]},
    ],
    "output": "{{ steps.middle.output }}",
}


def harness_with_flaky(state: dict[str, bool]) -> EngineHarness:
    harness = EngineHarness()

    async def flaky(ctx: Any, step_input: Any) -> Any:
        if state["down"]:
            raise AgentError("down", error_type="AgentUnavailable")
        return step_input

    harness.agent("flaky", flaky)
    return harness


def test_a_resumed_execution_reruns_only_what_failed_with_a_fresh_retry_budget() -> None:
    state = {"down": True}
    harness = harness_with_flaky(state)
    execution_id = harness.start(harness.process(CHAIN), {"q": "x"})
    assert asyncio.run(harness.run(execution_id)).status.value == "failed"
    assert harness.types(execution_id).count("step_retrying") == 1  # 2 attempts used up

    resume(harness.executions, execution_id, user_id="user-a", actor="user-a", reason="again")
    execution = asyncio.run(harness.run(execution_id))

    assert execution.status.value == "failed"  # still down: two more attempts, 3 and 4
    assert [e.attempt for e in harness.events(execution_id, "step_started")][-2:] == [3, 4]
    state["down"] = False
    resume(harness.executions, execution_id, user_id=None, actor="ops", reason="fixed")
    execution = asyncio.run(harness.run(execution_id))

    assert execution.status.value == "completed"
    assert execution.output == {"from": "x"}
    starts = [e.step_id for e in harness.events(execution_id, "step_started")]
    assert starts.count("first") == 1
    assert starts.count("last") == 1
    with pytest.raises(NotResumableError):
        resume(harness.executions, execution_id, user_id=None, actor="ops", reason="no")


def test_bulk_resume_resumes_what_it_may_and_says_why_not_for_the_rest() -> None:
    state = {"down": True}
    harness = harness_with_flaky(state)
    process = harness.process(CHAIN)
    failed = [harness.start(process, {"q": str(n)}) for n in range(3)]
    for execution_id in failed:
        asyncio.run(harness.run(execution_id))
    state["down"] = False
    resume(harness.executions, failed[0], user_id=None, actor="ops", reason="first")

    done = resume_many(harness.executions, failed, user_id="user-a", actor="a", reason="bulk")

    assert [r.execution_id for r in done.resumed] == failed[1:]
    assert [i for i, _ in done.refused] == [failed[0]]  # pending again already
    assert "only a failed" in done.refused[0][1]
    none = resume_many(harness.executions, failed[1:], user_id="user-b", actor="b", reason="x")
    assert none.resumed == []
    assert len(none.refused) == 2  # another user's: not found


def test_a_fork_copies_what_does_not_follow_its_step_and_runs_the_rest() -> None:
    harness = harness_with_flaky({"down": False})
    parent = harness.start(harness.process(CHAIN), {"q": "old"})
    asyncio.run(harness.run(parent))

    forked = fork(
        harness.executions,
        ForkRequest(parent, "middle", "user-a", "user-a", input={"q": "new"}),
    )
    child = asyncio.run(harness.run(forked.execution_id))

    assert forked.copied == ("first",)
    assert child.status.value == "completed"
    assert child.output == {"from": "old"}  # first's output was copied, not run on "new"
    assert child.input == {"q": "new"}
    started = [e.step_id for e in harness.events(forked.execution_id, "step_started")]
    assert started == ["middle", "last"]
    event = harness.events(forked.execution_id, "execution_forked")[0]
    assert event.parent_id == parent
    assert event.parent_chain_head == harness.executions.get_execution(parent).chain_head
