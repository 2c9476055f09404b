"""Follow-up messages on a thread ("double texting"): what a start does while the user's
thread already has an execution that has not finished (pending, running or waiting).

- `enqueue` (the default): start anyway; it runs as any other execution does.
- `reject`: refuse (`ThreadBusyError`), storing nothing.
- `interrupt`: request the cancellation of each, with the reason `interrupted by <new id>`,
  recorded before the new execution starts.
- `signal`: deliver the input as the signal `message` to one that waits, or will wait, for
  it (the oldest first); when none does, start as `enqueue`.

The thread's executions come from a port (`ThreadMembers`, the status view read once it
has caught up with the store) and are confirmed from the store; a request that replays an
earlier start by its Idempotency-Key does so before any policy applies.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from uuid import UUID

from agent_ledger.application.signals import SignalNotAwaitedError, SignalRequest, send_signal
from agent_ledger.application.starter import ExecutionStarter, StartedExecution, StartRequest
from agent_ledger.domain.execution_state import ExecutionFinishedError, ExecutionRuleError

MESSAGE = "message"
"""The signal that carries a follow-up input to an execution of the thread."""

ThreadMembers = Callable[[str, str], Sequence[UUID]]
"""(user_id, thread_id) → the user's executions of the thread not known to have finished,
oldest first, as of the request's arrival at least (read your own writes)."""


class ThreadPolicy(StrEnum):
    """What a start does while its thread has an execution that has not finished."""

    ENQUEUE = "enqueue"
    REJECT = "reject"
    INTERRUPT = "interrupt"
    SIGNAL = "signal"


class ThreadBusyError(ExecutionRuleError):
    """The thread has an execution that has not finished, and the policy is `reject`."""

    def __init__(self, thread_id: str, execution_id: UUID):
        super().__init__(
            f"thread {thread_id!r} has execution {execution_id}, not finished yet; start "
            "again once it has, or with thread_policy interrupt, signal or enqueue"
        )
        self.execution_id = execution_id


@dataclass(frozen=True)
class Signalled:
    """The input went to an execution of the thread as its `message` signal."""

    execution_id: UUID
    position: int
    replayed: bool


class ThreadPolicies:
    """Starts an execution on a thread under a policy; for all but `enqueue`, starts on one
    thread take turns in this process (`ThreadTurns`)."""

    def __init__(self, starter: ExecutionStarter, members: ThreadMembers):
        self.starter = starter
        self.members = members

    async def start(
        self, request: StartRequest, policy: ThreadPolicy, roles: frozenset[str]
    ) -> StartedExecution | Signalled:
        """Start, refuse, interrupt or signal, as `policy` says (`roles`: the caller's, which
        a signal is checked against)."""
        thread_id = request.thread_id
        if policy is ThreadPolicy.ENQUEUE or thread_id is None:
            return await self.starter.start(request)
        async with self.starter.thread_turns.turn(request.user_id, thread_id):
            if policy is ThreadPolicy.INTERRUPT:  # the start replays an earlier one first
                return await self.starter.start(
                    request, before_save=partial(self._interrupt, request)
                )
            replayed = await self.starter.replayed(request)
            if replayed is not None:
                return replayed
            busy = await self.starter.blocking(self._unfinished, request.user_id, thread_id)
            if policy is ThreadPolicy.REJECT and busy:
                raise ThreadBusyError(thread_id, busy[0])
            if policy is ThreadPolicy.SIGNAL:
                for execution_id in busy:
                    signalled = await self.starter.blocking(
                        self._signal, request, roles, execution_id
                    )
                    if signalled is not None:
                        return signalled
            return await self.starter.start(request)

    def _unfinished(self, user_id: str, thread_id: str) -> list[UUID]:
        """The thread's executions the view shows unfinished and the store confirms."""
        candidates = list(self.members(user_id, thread_id))
        loaded = self.starter.executions.get_executions(candidates)
        return [c for c in candidates if c in loaded and not loaded[c].status.is_terminal]

    async def _interrupt(self, request: StartRequest, new_id: UUID) -> None:
        assert request.thread_id is not None
        busy = await self.starter.blocking(self._unfinished, request.user_id, request.thread_id)
        for execution_id in busy:
            await self.starter.blocking(self._cancel, request, execution_id, new_id)

    def _cancel(self, request: StartRequest, execution_id: UUID, new_id: UUID) -> None:
        with contextlib.suppress(ExecutionFinishedError):  # it ended meanwhile: fine
            self.starter.executions.request_cancellation(
                execution_id,
                user_id=request.user_id,
                by=request.user_id,
                reason=f"interrupted by {new_id}",
                caused_by=request.caused_by,
                correlation_id=request.correlation_id,
            )

    def _signal(
        self, request: StartRequest, roles: frozenset[str], execution_id: UUID
    ) -> Signalled | None:
        """Deliver the input as `message`, unless the execution neither waits nor will wait
        for one, or has ended meanwhile."""
        try:
            sent = send_signal(
                self.starter.executions,
                SignalRequest(
                    execution_id=execution_id,
                    name=MESSAGE,
                    payload=request.input,
                    caller=request.user_id,
                    roles=roles,
                    idempotency_key=request.idempotency_key,
                    correlation_id=request.correlation_id,
                ),
            )
        except (SignalNotAwaitedError, ExecutionFinishedError):
            return None
        return Signalled(execution_id, sent.position, sent.replayed)
