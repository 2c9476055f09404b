"""An attempt's timeout: never early, whatever event loop the worker runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
import uvloop

from agent_ledger.application.step_runner import within_timeout

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,  # keeps time in whole milliseconds
}


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_hung_call_is_given_up_on_no_earlier_than_its_timeout(loop_name: str) -> None:
    timeout = 0.0123  # not a whole number of milliseconds

    async def elapsed_until_given_up() -> list[float]:
        elapsed = []
        for _ in range(60):
            began = time.monotonic()
            with pytest.raises(TimeoutError):
                await within_timeout(asyncio.sleep(5), timeout)
            elapsed.append(time.monotonic() - began)
        return elapsed

    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        elapsed = runner.run(elapsed_until_given_up())

    assert min(elapsed) >= timeout
    assert max(elapsed) < timeout + 0.5


def test_a_call_that_answers_in_time_gives_its_answer() -> None:
    async def answers() -> str:
        await asyncio.sleep(0.001)
        return "done"

    async def run() -> str:
        result: str = await within_timeout(answers(), 1.0)
        return result

    assert asyncio.run(run()) == "done"
