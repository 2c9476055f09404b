"""Starts executions for many concurrent requests, saving their first events together."""

from __future__ import annotations

import asyncio

from eventsourcing.persistence import RecordConflictError

from application.executions import Executions, StartedExecution, StartRequest
from application.group_commit import GroupCommitter


class ExecutionStarter:
    """The API's start command on its event loop: starts that arrive together share one
    transaction (group commit), so a burst of requests costs few writes to the store."""

    def __init__(self, executions: Executions, committer: GroupCommitter | None = None):
        self.executions = executions
        self.committer = committer or GroupCommitter(executions)

    async def start(self, start: StartRequest) -> StartedExecution:
        if start.idempotency_key is not None:
            existing = await asyncio.to_thread(self.executions.replay, start)
            if existing is not None:
                return existing
        execution = self.executions.new_execution(start)
        try:
            position = await self.committer.save(execution, start.work(execution))
        except RecordConflictError as conflict:
            return await asyncio.to_thread(self.executions.replayed_after_conflict, start, conflict)
        return StartedExecution(execution.id, position, created=True)
