"""Ports through which the engine runs agents and their tools."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

JSON = Any
"""A JSON-compatible value: dict, list, str, int, float, bool or None."""


@dataclass(frozen=True)
class AgentRun:
    """Who and what an agent is working for: immutable for the whole call."""

    user_id: str
    execution_id: UUID
    step_id: str
    attempt: int
    thread_id: str | None = None
    thread_history: tuple[Mapping[str, JSON], ...] = ()


class AgentContext(Protocol):
    """What a built-in agent may do while it runs: think aloud and call tools."""

    @property
    def run(self) -> AgentRun: ...

    async def think(self, message: str) -> None:
        """Report a thought (recorded as `AgentThinking`)."""

    async def call_tool(self, tool: str, **args: JSON) -> JSON:
        """Call a registered tool (recorded as `ToolExecuting` then `ToolCompleted`/`ToolFailed`).

        Raises `ToolError` when the tool fails.
        """


class RemoteAgentContext(AgentContext, Protocol):
    """An agent context that also records tool calls made outside this process."""

    async def report_tool_started(self, call_id: str, tool: str, args: JSON) -> None: ...

    async def report_tool_finished(
        self,
        call_id: str,
        result: JSON = None,
        error: str | None = None,
        error_type: str = "ToolError",
    ) -> None: ...


class ModelAgentContext(RemoteAgentContext, Protocol):
    """An agent context that also records a model's streamed answer and its calls."""

    def tool_call_id(self, proposed: str) -> str:
        """`proposed` if no tool call of this step used it yet, else a unique variant."""

    async def stream_output(self, text: str, index: int) -> None:
        """Record a piece of the answer (`AgentOutputDelta`)."""

    async def report_model_call(
        self,
        model: str,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        duration_ms: float,
        cost_usd: float | None,
    ) -> None:
        """Record one model call's usage (`LlmCallCompleted`)."""


Agent = Callable[[AgentContext, JSON], Awaitable[JSON]]
"""A built-in agent: given its context and the step input, returns its output."""

Tool = Callable[..., JSON]
"""A tool: a deterministic function of keyword arguments returning a JSON value."""


class AgentError(Exception):
    """An agent failed; `retryable` says whether another attempt may succeed."""

    def __init__(self, message: str, *, error_type: str = "AgentError", retryable: bool = True):
        super().__init__(message)
        self.error_type = error_type
        self.retryable = retryable


class ToolError(AgentError):
    """A tool call failed."""

    def __init__(self, message: str, *, retryable: bool = True):
        super().__init__(message, error_type="ToolError", retryable=retryable)


class UnknownAgentError(AgentError):
    """The step names an agent that is not registered."""

    def __init__(self, name: str):
        super().__init__(
            f"no agent is registered as {name!r}", error_type="UnknownAgent", retryable=False
        )


class UnknownToolError(ToolError):
    """An agent called a tool that is not registered."""

    def __init__(self, name: str):
        super().__init__(f"no tool is registered as {name!r}", retryable=False)


class AgentRegistry:
    """Built-in agents and tools, by name."""

    def __init__(self) -> None:
        self._agents: dict[str, Agent] = {}
        self._tools: dict[str, Tool] = {}

    def register_agent(self, name: str, agent: Agent) -> None:
        self._agents[name] = agent

    def register_tool(self, name: str, tool: Tool) -> None:
        self._tools[name] = tool

    def agent(self, name: str) -> Agent:
        try:
            return self._agents[name]
        except KeyError:
            raise UnknownAgentError(name) from None

    def tool(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            raise UnknownToolError(name) from None

    def has_agent(self, name: str) -> bool:
        return name in self._agents

    def has_tool(self, name: str) -> bool:
        return name in self._tools

    @property
    def tool_names(self) -> list[str]:
        return sorted(self._tools)

    @property
    def agent_names(self) -> list[str]:
        return sorted(self._agents)
