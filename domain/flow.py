"""What an execution should do next, decided from its state and its process definition alone.

The engine asks `decide()` after every change; because the answer depends only on the
recorded state (and the time), any worker that takes an execution over reaches the same
decisions as the one before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from agent_ledger.domain.execution_state import StepState, StepStatus
from agent_ledger.domain.executions import Execution
from agent_ledger.domain.processes import ProcessDefinition, StepType

BRANCH_NOT_TAKEN = "branch_not_taken"
DEPENDENCY_FAILED = "dependency_failed"

_ACTIVE = {StepStatus.SCHEDULED, StepStatus.RUNNING, StepStatus.RETRYING, StepStatus.TIMED_OUT}


@dataclass
class Decision:
    """The next moves of an execution."""

    skip: list[tuple[str, str]] = field(default_factory=list)
    start: list[str] = field(default_factory=list)
    fire_timers: list[str] = field(default_factory=list)
    take_signals: list[str] = field(default_factory=list)
    """Waiting steps whose signal has arrived: each takes the oldest of its name."""
    time_out_waits: list[str] = field(default_factory=list)
    awaiting: list[str] = field(default_factory=list)
    """Steps that wait for a signal that has not arrived (nor their deadline)."""
    wake_at: datetime | None = None
    failed: list[str] = field(default_factory=list)
    finished: bool = False

    def _wake(self, at: datetime) -> None:
        self.wake_at = at if self.wake_at is None else min(self.wake_at, at)


def decide(
    execution: Execution, definition: ProcessDefinition, now: datetime, busy: set[str]
) -> Decision:
    """Steps to skip, steps to start (a first or next attempt), timers due, when to look again.

    `busy` names steps whose attempt is running in this worker right now.
    """
    decision = Decision()
    steps = execution.steps
    states = dict(steps)
    sequential = not definition.config.parallel_execution
    active = any(s.status in _ACTIVE for s in steps.values()) or bool(busy)
    unclaimed: dict[str, int] = {}  # signals received, by name, not yet given to a step
    for received in execution.inbox:
        unclaimed[received["signal"]] = unclaimed.get(received["signal"], 0) + 1
    for step_id in definition.topological_order():
        state = states[step_id]
        if state.status is StepStatus.FAILED:
            decision.failed.append(step_id)
        elif state.status is StepStatus.RETRYING and step_id not in busy:
            if state.due_at is None or state.due_at <= now:
                decision.start.append(step_id)
            else:
                decision._wake(state.due_at)
        elif state.status is StepStatus.RUNNING and state.awaiting is not None:
            if unclaimed.get(state.awaiting, 0) > 0:
                unclaimed[state.awaiting] -= 1
                decision.take_signals.append(step_id)
            elif state.due_at is not None and state.due_at <= now:
                decision.time_out_waits.append(step_id)
            else:
                decision.awaiting.append(step_id)
                if state.due_at is not None:
                    decision._wake(state.due_at)
        elif state.status is StepStatus.RUNNING and state.due_at is not None:
            if state.due_at <= now:
                decision.fire_timers.append(step_id)
            else:
                decision._wake(state.due_at)
        elif state.status is StepStatus.PENDING:
            verdict = _pending_verdict(step_id, definition, states)
            if verdict == "wait":
                continue
            if verdict == "run":
                if sequential and (active or decision.start):
                    continue
                decision.start.append(step_id)
            else:
                decision.skip.append((step_id, verdict))
                # later steps see this one as skipped when they are judged below
                states[step_id] = StepState(step_id, StepStatus.SKIPPED, skip_reason=verdict)
    decision.finished = all(s.status.is_done for s in states.values())
    return decision


def _pending_verdict(
    step_id: str, definition: ProcessDefinition, states: dict[str, StepState]
) -> str:
    """'wait', 'run', or the reason to skip the step."""
    dependencies = definition.dependencies(step_id)
    if any(not states[d].status.is_done for d in dependencies):
        return "wait"
    for dependency in dependencies:
        gateway = definition.step(dependency)
        state = states[dependency]
        if gateway.type is StepType.GATEWAY and state.status is StepStatus.COMPLETED:
            chosen = (state.output or {}).get("next", [])
            named = any(step_id in route.next for route in gateway.routes)
            if named and step_id not in chosen:
                return BRANCH_NOT_TAKEN
    if dependencies and all(
        states[d].status is StepStatus.SKIPPED and states[d].skip_reason == BRANCH_NOT_TAKEN
        for d in dependencies
    ):
        return BRANCH_NOT_TAKEN
    if any(
        states[d].status in (StepStatus.FAILED, StepStatus.CANCELLED)
        or states[d].skip_reason == DEPENDENCY_FAILED
        for d in dependencies
    ):
        return DEPENDENCY_FAILED
    return "run"
