"""A write under way outlives the cancellation of whoever asked for it."""

from __future__ import annotations

import asyncio
import time
from functools import partial

from application.execution_session import ExecutionSession
from application.executions import Executions
from application.group_commit import GroupCommitter, _Write
from application.processes import InMemoryProcessCatalog
from application.work_memory import IN_MEMORY_ENV
from domain.execution_state import StepStatus
from domain.executions import Execution

PROCESS = {"name": "one", "steps": [{"id": "a", "type": "agent_task", "agent": "echo"}]}


class SlowCommitter(GroupCommitter):
    """Saves as usual, a little late: long enough to be cancelled while saving."""

    def _save(self, batch: list[_Write]) -> list[int]:
        time.sleep(0.2)
        return super()._save(batch)


def test_a_cancelled_write_ends_before_the_session_can_be_read_again() -> None:
    async def scenario() -> tuple[StepStatus, StepStatus]:
        executions = Executions(env=IN_MEMORY_ENV)
        process, _ = InMemoryProcessCatalog().register(PROCESS)
        started = executions.start_execution(user_id="u", process=process, input={})
        session = ExecutionSession(
            executions,
            executions.get_execution(started.execution_id),
            committer=SlowCommitter(executions),
        )
        await session.record(
            partial(Execution.schedule_step, step_id="a", attempt=1),
            partial(Execution.start_step, step_id="a", attempt=1),
        )
        failing = asyncio.create_task(
            session.record(
                partial(Execution.fail_step, step_id="a", attempt=1, error={"type": "X"})
            )
        )
        await asyncio.sleep(0.05)  # the failure is applied and being saved
        failing.cancel()  # as a driver stopping after that very failure does
        await asyncio.gather(failing, return_exceptions=True)
        await session.flush()
        reloaded = await session.reload()
        stored = executions.get_execution(started.execution_id)
        return reloaded.steps["a"].status, stored.steps["a"].status

    in_session, stored = asyncio.run(scenario())
    assert in_session is StepStatus.FAILED
    assert stored is StepStatus.FAILED
