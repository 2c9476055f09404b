"""The echo agent: returns its input unchanged, for tests, benchmarks and smoke checks."""

from __future__ import annotations

from agent_ledger.application.agents import JSON, AgentContext


async def echo_agent(ctx: AgentContext, step_input: JSON) -> JSON:
    """Return the step input as it came."""
    return step_input
