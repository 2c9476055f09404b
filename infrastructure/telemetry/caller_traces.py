"""The `traceparent` an attempt sends on, in its execution's trace (the caller's, if any)."""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from uuid import UUID

from agent_ledger.application.agents import AgentRun
from agent_ledger.application.executions import Executions
from agent_ledger.projections.traces import attempt_traceparent


class CallerTraces:
    """Reads each execution's start once (its correlation id may be the caller's
    `traceparent`) and remembers the newest `size`."""

    def __init__(self, executions: Executions, size: int = 4096):
        self.executions = executions
        self.size = size
        self._callers: OrderedDict[UUID, str | None] = OrderedDict()
        self._lock = threading.Lock()

    async def traceparent(self, run: AgentRun) -> str:
        """The attempt's `traceparent` (a store read the first time an execution asks)."""
        with self._lock:
            known = run.execution_id in self._callers
            caller = self._callers.get(run.execution_id)
        if not known:
            caller = await asyncio.to_thread(self._caller_of, run.execution_id)
            with self._lock:
                self._callers[run.execution_id] = caller
                while len(self._callers) > self.size:
                    self._callers.popitem(last=False)
        return attempt_traceparent(run.execution_id, run.step_id, run.attempt, caller)

    def _caller_of(self, execution_id: UUID) -> str | None:
        first = self.executions.get_history(execution_id, limit=1)
        return getattr(first[0].event, "correlation_id", None) if first else None
