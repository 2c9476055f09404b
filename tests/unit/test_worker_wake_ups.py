"""When a worker claims: on notices, and after an execution ends if it may have left work."""

from __future__ import annotations

import asyncio

from agent_ledger.application.worker import Worker
from tests.support.engine_harness import EngineHarness, one_step


def test_a_full_worker_claims_the_rest_as_its_executions_end_without_a_notice() -> None:
    harness = EngineHarness()
    worker = Worker(
        harness.executions,
        harness.queue,
        harness.runner,
        clock=harness.clock,
        name="full",
        capacity=1,
        poll_interval=60,  # no poll comes in time: only the worker's own wake-ups
        wake_on_finish=False,  # as where work notices announce freed slots
    )
    process = harness.process(one_step("echo"))
    started = [harness.start(process) for _ in range(3)]

    async def run_until_all_ended() -> None:
        running = asyncio.create_task(worker.run())
        try:
            async with asyncio.timeout(10):
                while not all(
                    harness.executions.get_execution(i).status.is_terminal for i in started
                ):
                    await asyncio.sleep(0.01)
        finally:
            await worker.shutdown()
            running.cancel()

    asyncio.run(run_until_all_ended())
    assert [harness.types(i)[-1] for i in started] == ["execution_completed"] * 3
