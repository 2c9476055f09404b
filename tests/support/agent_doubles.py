"""Test doubles for the agent ports."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from uuid import UUID

from agent_ledger.application.agents import JSON, AgentError, AgentRegistry, AgentRun, ToolError

EXECUTION_ID = UUID(int=1)


@dataclass(frozen=True)
class Recorded:
    """Something an agent did through its context, as the engine would record it."""

    kind: str  # agent_thinking | tool_executing | tool_completed | tool_failed
    detail: JSON = None
    tool: str | None = None


@dataclass
class InMemoryAgentContext:
    """An `AgentContext` that records thoughts and tool calls and runs the registry's tools."""

    registry: AgentRegistry
    step_id: str = "step"
    user_id: str = "tester"
    execution_id: UUID = EXECUTION_ID
    recorded: list[Recorded] = field(default_factory=list)

    @property
    def run(self) -> AgentRun:
        """Return who and what the agent works for."""
        return AgentRun(self.user_id, self.execution_id, self.step_id, attempt=1)

    @property
    def kinds(self) -> list[str]:
        """Return the kinds of everything recorded, in order."""
        return [r.kind for r in self.recorded]

    @property
    def tools_called(self) -> list[str]:
        """Return the names of the tools called, in order."""
        return [r.tool for r in self.recorded if r.kind == "tool_executing" and r.tool]

    async def think(self, message: str) -> None:
        """Record a thought."""
        self.recorded.append(Recorded("agent_thinking", message))

    async def call_tool(self, tool: str, **args: JSON) -> JSON:
        """Record the call, run the registered tool, record its result or failure."""
        self.recorded.append(Recorded("tool_executing", args, tool))
        try:
            result = self.registry.tool(tool)(**args)
            json.dumps(result, allow_nan=False)  # a tool's result must be plain JSON
        except AgentError as error:
            self.recorded.append(Recorded("tool_failed", str(error), tool))
            raise
        except Exception as error:
            self.recorded.append(Recorded("tool_failed", str(error), tool))
            raise ToolError(str(error), retryable=False) from error
        self.recorded.append(Recorded("tool_completed", result, tool))
        return result
