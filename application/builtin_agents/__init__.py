"""The sample agents and tools shipped with Agent Ledger, over a bundled spend data set."""

from __future__ import annotations

from agent_ledger.application.agents import AgentRegistry
from agent_ledger.application.builtin_agents.data import data_agent
from agent_ledger.application.builtin_agents.echo import echo_agent
from agent_ledger.application.builtin_agents.optimization import optimization_agent
from agent_ledger.application.builtin_agents.summary import summary_agent
from agent_ledger.application.builtin_agents.tools import register_tools
from agent_ledger.application.builtin_agents.triage import triage_agent

__all__ = ["register_builtin_agents"]


def register_builtin_agents(registry: AgentRegistry) -> None:
    """Register the sample agents and every spend tool on a registry."""
    registry.register_agent("triage", triage_agent)
    registry.register_agent("data", data_agent)
    registry.register_agent("optimization", optimization_agent)
    registry.register_agent("summary", summary_agent)
    registry.register_agent("echo", echo_agent)
    register_tools(registry)
