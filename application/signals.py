"""Sending a signal to an execution: who may, which step will take it, what it must hold.

A signal is recorded on arrival (`SignalReceived`, in the execution's hash chain) and
taken later, in order, by the steps that wait for its name; the write wakes the
execution, parked while it only waited.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from eventsourcing.persistence import RecordConflictError
from jsonschema.validators import validator_for

from agent_ledger.application.driver import definition_of
from agent_ledger.application.executions import Executions
from agent_ledger.application.starter import IdempotencyKeyReusedError
from agent_ledger.application.work import Wake
from agent_ledger.domain.errors import DomainError
from agent_ledger.domain.execution_state import ExecutionFinishedError, StepStatus
from agent_ledger.domain.executions import Execution
from agent_ledger.domain.processes import StepDefinition, StepType


class SignalNotAwaitedError(DomainError):
    """No step of the execution waits, or will wait, for a signal of this name."""

    def __init__(self, name: str, process: str):
        super().__init__(f"no step of {process!r} waits for a signal named {name!r} now")
        self.name = name


class SignalRefusedError(DomainError):
    """The caller's roles may not send this signal (the step's `allowed_roles`)."""

    def __init__(self, name: str, allowed: Collection[str]):
        super().__init__(
            f"the signal {name!r} may be sent by: {', '.join(sorted(allowed))} "
            "(the owner as user, or an admin)"
        )


class SignalPayloadError(DomainError):
    """The payload does not fit the waiting step's `schema`."""

    def __init__(self, name: str, problem: str):
        super().__init__(f"the payload of signal {name!r} does not fit its schema: {problem}")


@dataclass(frozen=True)
class SignalRequest:
    """A signal as the API received it."""

    execution_id: UUID
    name: str
    payload: Mapping[str, Any]
    caller: str
    roles: frozenset[str]
    idempotency_key: str | None = None
    correlation_id: str | None = None


@dataclass(frozen=True)
class SignalSent:
    """Where the signal was recorded; `replayed` when an earlier request with the same
    Idempotency-Key had recorded it."""

    position: int
    replayed: bool = False


def send_signal(executions: Executions, request: SignalRequest) -> SignalSent:
    """Record the signal (raising `ExecutionNotFoundError` for another user's execution,
    `SignalNotAwaitedError`, `SignalRefusedError`, `SignalPayloadError`,
    `ExecutionFinishedError` or `IdempotencyKeyReusedError`)."""
    admin = "admin" in request.roles
    owner_filter = None if admin else request.caller
    for _ in range(5):
        execution = executions.get_execution(request.execution_id, user_id=owner_filter)
        if request.idempotency_key is not None:
            earlier = _earlier(executions, execution, request)
            if earlier is not None:
                return earlier
        if execution.status.is_terminal:
            raise ExecutionFinishedError(execution.id, execution.status)
        step = _taker(execution, request.name)
        _check_roles(step, request, execution.user_id)
        _check_payload(step, request)
        execution.act_as(f"user:{request.caller}", request.correlation_id)
        execution.receive_signal(
            request.name,
            dict(request.payload),
            actor=request.caller,
            roles=sorted(request.roles),
            idempotency_key=request.idempotency_key,
        )
        try:
            position = executions.save_and_position(execution, work=[Wake(execution.id)])
        except RecordConflictError:
            continue  # the engine wrote meanwhile: decide again on the newer state
        return SignalSent(position)
    raise RecordConflictError(f"execution {request.execution_id} kept changing; try again")


def _taker(execution: Execution, name: str) -> StepDefinition:
    """The step that will take this signal: signals go, oldest first, to the steps waiting
    for their name now, then to those that will wait (in the definition's order)."""
    definition = definition_of(execution)
    waiting: list[StepDefinition] = []
    later: list[StepDefinition] = []
    for step_id in definition.topological_order():
        step = definition.step(step_id)
        if step.type is not StepType.WAIT_FOR_SIGNAL or step.signal != name:
            continue
        state = execution.steps[step_id]
        if state.status.is_done:
            continue
        awaiting = state.status is StepStatus.RUNNING and state.awaiting is not None
        (waiting if awaiting else later).append(step)
    takers = waiting + later
    queued = sum(1 for received in execution.inbox if received["signal"] == name)
    if queued >= len(takers):
        raise SignalNotAwaitedError(name, execution.process_name)
    return takers[queued]


def _check_roles(step: StepDefinition, request: SignalRequest, owner: str) -> None:
    allowed = set(step.allowed_roles)
    as_owner = request.caller == owner and "user" in allowed and "user" in request.roles
    as_admin = "admin" in request.roles and "admin" in allowed
    if not (as_owner or as_admin):
        raise SignalRefusedError(request.name, allowed)


def _check_payload(step: StepDefinition, request: SignalRequest) -> None:
    if step.schema is None:
        return
    validator = validator_for(step.schema)(step.schema)
    error = next(iter(sorted(validator.iter_errors(dict(request.payload)), key=str)), None)
    if error is not None:
        where = "".join(f"[{p!r}]" for p in error.absolute_path) or "the payload"
        raise SignalPayloadError(request.name, f"at {where}: {error.message}")


def _earlier(
    executions: Executions, execution: Execution, request: SignalRequest
) -> SignalSent | None:
    """The same request recorded before under its Idempotency-Key, if any; a different
    request under that key is refused."""
    after = 0
    while page := executions.get_history(execution.id, after=after):
        after = page[-1].position
        for logged in page:
            if logged.type != "signal_received":
                continue  # known without decoding the event
            event = logged.event
            assert isinstance(event, Execution.SignalReceived)
            if event.idempotency_key != request.idempotency_key:
                continue
            if event.signal != request.name or event.payload != dict(request.payload):
                raise IdempotencyKeyReusedError(request.idempotency_key or "")
            return SignalSent(logged.position, replayed=True)
    return None
