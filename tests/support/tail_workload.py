"""Events for tail tests and benchmarks, appended straight to the store in group commits."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from agent_ledger.application.executions import Executions
from agent_ledger.domain.executions import Execution

EVENTS_PER_EXECUTION = 12


def finished_execution(user_id: str, thoughts: int = 5) -> Execution:
    """A one-step echo execution, already completed: nothing is left for an engine to do."""
    execution = Execution.start(
        user_id=user_id,
        process_name="echo",
        process_version=1,
        definition={},
        step_ids=["echo"],
        input={"user": user_id},
    )
    execution.schedule_step("echo", 1)
    execution.start_step("echo", 1)
    execution.start_agent("echo", 1, "echo", {})
    for n in range(thoughts):
        execution.record_thinking("echo", 1, f"thinking {n}")
    execution.complete_agent("echo", 1, {"n": thoughts}, 1.0)
    execution.complete_step("echo", 1, {"n": thoughts})
    execution.complete({"n": thoughts})
    return execution


def append(executions: Executions, users: Iterable[str]) -> int:
    """One execution per user named, saved together; returns the last position."""
    return executions.save_and_position(*(finished_execution(u) for u in users))


def positions_by_user(executions: Executions, users: Sequence[str]) -> dict[str, list[int]]:
    """Every stored position of each user's events, read from the whole log."""
    found: dict[str, list[int]] = {u: [] for u in users}
    after = 0
    while page := executions.read_log(after=after, limit=1000):
        for logged in page:
            owner = getattr(logged.event, "user_id", None)
            if owner in found:
                found[owner].append(logged.position)
        after = page[-1].position
    return found
