"""A write under way outlives the cancellation of whoever asked for it."""

from __future__ import annotations

import asyncio
import threading
from functools import partial

from agent_ledger.application.execution_session import ExecutionSession
from agent_ledger.application.executions import Executions
from agent_ledger.application.group_commit import GroupCommitter, _Write
from agent_ledger.application.processes import InMemoryProcessCatalog
from agent_ledger.application.starter import StartRequest, start_execution
from agent_ledger.application.work_memory import IN_MEMORY_ENV
from agent_ledger.domain.execution_state import StepStatus
from agent_ledger.domain.executions import Execution

PROCESS = {"name": "one", "steps": [{"id": "a", "type": "agent_task", "agent": "echo"}]}


class HeldCommitter(GroupCommitter):
    """Saves as usual, but says when a save begins and holds it until released."""

    def __init__(self, executions: Executions):
        super().__init__(executions)
        self.saving = threading.Event()
        self.release = threading.Event()

    def _save(self, batch: list[_Write]) -> list[int]:
        self.saving.set()
        assert self.release.wait(10), "the test never released the save"
        return super()._save(batch)


def test_a_cancelled_write_ends_before_the_session_can_be_read_again() -> None:
    async def scenario() -> tuple[bool, StepStatus, StepStatus]:
        executions = Executions(env=IN_MEMORY_ENV)
        process, _ = InMemoryProcessCatalog().register(PROCESS)
        started = start_execution(executions, StartRequest(user_id="u", process=process, input={}))
        committer = HeldCommitter(executions)
        committer.release.set()
        session = ExecutionSession(
            executions, executions.get_execution(started.execution_id), committer=committer
        )
        await session.record(
            partial(Execution.schedule_step, step_id="a", attempt=1),
            partial(Execution.start_step, step_id="a", attempt=1),
        )
        committer.saving.clear()
        committer.release.clear()
        failing = asyncio.create_task(
            session.record(
                partial(Execution.fail_step, step_id="a", attempt=1, error={"type": "X"})
            )
        )
        assert await asyncio.to_thread(committer.saving.wait, 10)  # the failure is being saved
        failing.cancel()  # as a driver stopping after that very failure does
        for _ in range(20):  # loop turns enough to deliver the cancellation
            await asyncio.sleep(0)
        waited = not failing.done()  # the cancelled caller waits while its write is held
        committer.release.set()
        await asyncio.gather(failing, return_exceptions=True)
        await session.flush()
        reloaded = await session.reload()
        stored = executions.get_execution(started.execution_id)
        return waited, reloaded.steps["a"].status, stored.steps["a"].status

    waited, in_session, stored = asyncio.run(scenario())
    assert waited
    assert in_session is StepStatus.FAILED
    assert stored is StepStatus.FAILED
