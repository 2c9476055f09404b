"""The port to language models: one streamed chat turn, in the product's own terms.

An adapter in infrastructure speaks a provider's wire format (the OpenAI-compatible
`/chat/completions` stream) and yields `ChatChunk`s; the model agent never sees it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent_ledger.application.agents import JSON, AgentRun


@dataclass(frozen=True)
class ToolSpec:
    """A tool as a model sees it: name, what it does, its JSON-schema parameters."""

    name: str
    description: str
    parameters: Mapping[str, JSON]
    timeout_seconds: float = 30.0


@dataclass(frozen=True)
class ChatRequest:
    """One turn of a conversation with a model."""

    model: str
    messages: Sequence[Mapping[str, JSON]]
    tools: Sequence[ToolSpec] = ()
    temperature: float | None = None
    max_tokens: int | None = None
    json_output: bool = False
    run: AgentRun | None = None
    """The attempt the call is made for (its trace context goes with the request)."""


@dataclass(frozen=True)
class ToolCallPiece:
    """Part of a tool call as it streams: the call at `index` gets its id and name once and
    its arguments (JSON text) in pieces."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class ChatChunk:
    """One streamed piece of a model's turn; usage comes once, usually last."""

    text: str = ""
    reasoning: str = ""
    tool_calls: tuple[ToolCallPiece, ...] = ()
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    model: str | None = None


@dataclass
class ToolCall:
    """A whole tool call the model asked for in a turn."""

    id: str
    name: str
    arguments: str = ""


@dataclass
class Turn:
    """What one turn of the model said: its text, the tools it asked for, its usage."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    _slots: dict[int, int] = field(default_factory=dict, repr=False)
    """Where the call streamed under each index is in `tool_calls`."""

    def add(self, chunk: ChatChunk) -> None:
        """Fold a chunk in: text appended, tool-call pieces joined by their index."""
        self.text += chunk.text
        for piece in chunk.tool_calls:
            slot = self._slots.get(piece.index)
            call = None if slot is None else self.tool_calls[slot]
            # some servers number every call 0: a new id under a used index is a new call
            if call is None or (piece.id and call.id and piece.id != call.id):
                self._slots[piece.index] = len(self.tool_calls)
                call = ToolCall(id=piece.id or "", name="")
                self.tool_calls.append(call)
            call.id = call.id or (piece.id or "")
            call.name = call.name or (piece.name or "")
            call.arguments += piece.arguments
        if chunk.prompt_tokens is not None:
            self.prompt_tokens = chunk.prompt_tokens
        if chunk.completion_tokens is not None:
            self.completion_tokens = chunk.completion_tokens
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason


class ChatModels(Protocol):
    """Where model turns are streamed from, by provider name (None: the default provider)."""

    def has_provider(self, name: str | None) -> bool:
        """Whether a provider of that name (None: the default) is configured."""

    async def aclose(self) -> None:
        """Close the connections kept to the providers."""

    def stream(
        self, provider: str | None, request: ChatRequest
    ) -> AbstractAsyncContextManager[AsyncIterator[ChatChunk]]:
        """Open a streamed turn; leaving the context closes the stream (and aborts it).

        Raises `AgentError` (retryable or not) when the provider refuses or fails.
        """


def tool_message(call_id: str, content: Any) -> dict[str, JSON]:
    """The message that hands a tool's result (or error) back to the model."""
    return {"role": "tool", "tool_call_id": call_id, "content": content}
