"""Earlier executions of a conversation thread, for agents that continue it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from agent_ledger.application.executions import ExecutionNotFoundError, Executions
from agent_ledger.infrastructure.read_models.status_queries import ExecutionStatusQueries

MAX_THREAD_HISTORY = 20


class ThreadHistoryFromViews:
    """The thread's earlier executions of the same user: status view rows, inputs from the store."""

    def __init__(self, statuses: ExecutionStatusQueries, executions: Executions):
        self.statuses = statuses
        self.executions = executions

    def __call__(
        self, user_id: str, thread_id: str, execution_id: UUID
    ) -> Sequence[Mapping[str, Any]]:
        current = self.statuses.get(execution_id, user_id)
        rows = self.statuses.list_rows(user_id=user_id, thread_id=thread_id, limit=200)
        earlier = [
            r
            for r in rows
            if r.execution_id != execution_id
            and (current is None or r.started_at < current.started_at)
        ][:MAX_THREAD_HISTORY]
        history = []
        for row in reversed(earlier):  # oldest first
            try:  # the store, not the view: the previous turn may have only just finished
                turn = self.executions.get_execution(row.execution_id)
            except ExecutionNotFoundError:
                continue
            history.append(
                {
                    "execution_id": str(row.execution_id),
                    "process": row.process_name,
                    "status": turn.status.value,
                    "input": turn.input,
                    "output": turn.output,
                }
            )
        return history
