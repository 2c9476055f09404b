"""Operator control over finished executions: resume one where it stopped, or fork a new
execution from one of its steps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.persistence import RecordConflictError

from agent_ledger.application.driver import definition_of
from agent_ledger.application.executions import Executions
from agent_ledger.application.work import Enqueue
from agent_ledger.domain.errors import DomainError
from agent_ledger.domain.execution_state import StepStatus
from agent_ledger.domain.executions import Execution
from agent_ledger.domain.processes import ProcessDefinition

MAX_CONFLICT_RETRIES = 5


class UnknownStepToForkError(DomainError):
    """`from_step` is not a step of the execution's process."""

    def __init__(self, step_id: str, process: str):
        super().__init__(f"process {process!r} has no step {step_id!r} to fork from")


@dataclass(frozen=True)
class Resumed:
    execution_id: UUID
    position: int


def resume(
    executions: Executions,
    execution_id: UUID,
    *,
    user_id: str | None,
    actor: str,
    reason: str,
    correlation_id: str | None = None,
) -> Resumed:
    """Resume a failed, timed-out or cancelled execution (`user_id` None: any user's).

    Raises `ExecutionNotFoundError`, or `NotResumableError` when it is running, waiting or
    completed (also when another resume won the race).
    """
    for _ in range(MAX_CONFLICT_RETRIES):
        execution = executions.get_execution(execution_id, user_id=user_id)
        execution.act_as(f"user:{actor}", correlation_id)
        execution.resume(actor=actor, reason=reason)
        try:
            position = executions.save_and_position(
                execution, work=[Enqueue(execution.id, execution.user_id)]
            )
        except RecordConflictError:
            continue  # another writer (a second resume) was first: decide again
        return Resumed(execution.id, position)
    raise RecordConflictError(f"execution {execution_id} kept changing; try again")


@dataclass(frozen=True)
class BulkResumed:
    resumed: list[Resumed]
    refused: list[tuple[UUID, str]]
    """Executions not resumed, with why (not found, not resumable, changed meanwhile)."""


BULK_CHUNK = 100


def resume_many(
    executions: Executions,
    execution_ids: Sequence[UUID],
    *,
    user_id: str | None,
    actor: str,
    reason: str,
    correlation_id: str | None = None,
) -> BulkResumed:
    """Resume many executions, a hundred per load and per write (a write that loses a race
    with another writer is redone one execution at a time)."""
    resumed: list[Resumed] = []
    refused: list[tuple[UUID, str]] = []
    for start in range(0, len(execution_ids), BULK_CHUNK):
        chunk = list(execution_ids[start : start + BULK_CHUNK])
        loaded = executions.get_executions(chunk)
        ready: list[Execution] = []
        for execution_id in chunk:
            execution = loaded.get(execution_id)
            if execution is None or (user_id is not None and execution.user_id != user_id):
                refused.append((execution_id, f"execution {execution_id} was not found"))
                continue
            try:
                execution.act_as(f"user:{actor}", correlation_id)
                execution.resume(actor=actor, reason=reason)
            except DomainError as error:
                refused.append((execution_id, str(error)))
                continue
            ready.append(execution)
        if not ready:
            continue
        work = [Enqueue(e.id, e.user_id) for e in ready]
        try:
            recordings = executions.save(*ready, work=work)
        except RecordConflictError:
            for execution in ready:
                try:
                    resumed.append(
                        resume(
                            executions,
                            execution.id,
                            user_id=user_id,
                            actor=actor,
                            reason=reason,
                            correlation_id=correlation_id,
                        )
                    )
                except DomainError as error:
                    refused.append((execution.id, str(error)))
            continue
        positions = {r.domain_event.originator_id: r.notification.id for r in recordings}
        resumed += [Resumed(e.id, positions[e.id]) for e in ready]
    return BulkResumed(resumed, refused)


def downstream_of(definition: ProcessDefinition, step_id: str) -> set[str]:
    """`step_id` and every step that waits for it, directly or not."""
    found = {step_id}
    for candidate in definition.topological_order():
        if any(d in found for d in definition.dependencies(candidate)):
            found.add(candidate)
    return found


@dataclass(frozen=True)
class ForkRequest:
    parent_id: UUID
    from_step: str
    caller: str
    owner_filter: str | None
    """The caller's user id, or None when the caller may fork any user's execution."""
    input: Mapping[str, Any] | None = None
    correlation_id: str | None = None


@dataclass(frozen=True)
class Forked:
    execution_id: UUID
    position: int
    copied: tuple[str, ...]


def fork(executions: Executions, request: ForkRequest) -> Forked:
    """Start a new execution of the parent's process version for the parent's owner: the
    parent's completed steps that do not wait for `from_step` keep their outputs (copied),
    `from_step` and everything after it run; with `input`, the new execution has it."""
    parent = executions.get_execution(request.parent_id, user_id=request.owner_filter)
    definition = definition_of(parent)
    if request.from_step not in parent.steps:
        raise UnknownStepToForkError(request.from_step, parent.process_name)
    again = downstream_of(definition, request.from_step)
    copied = {
        step_id: state.output
        for step_id, state in parent.steps.items()
        if step_id not in again and state.status is StepStatus.COMPLETED
    }
    child = Execution.start(
        user_id=parent.user_id,
        process_name=parent.process_name,
        process_version=parent.process_version,
        definition=parent.definition,
        step_ids=list(definition.topological_order()),
        input=dict(request.input) if request.input is not None else dict(parent.input),
        thread_id=parent.thread_id,
        caused_by=f"user:{request.caller}",
        correlation_id=request.correlation_id,
    )
    child.act_as(f"user:{request.caller}", request.correlation_id)
    child.record_fork(parent, request.from_step, copied)
    position = executions.save_and_position(child, work=[Enqueue(child.id, child.user_id)])
    return Forked(child.id, position, tuple(copied))
