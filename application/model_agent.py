"""The model agent: a language model answering a step, calling tools until it is done.

One attempt is a conversation of at most `max_turns` model calls. Each call streams: its
text becomes `AgentOutputDelta` events and its reasoning `AgentThinking` events, coalesced
(every `coalesce_seconds` or `coalesce_pieces` pieces, whichever comes first) so that a long
answer is a few dozen events; each call ends with `LlmCallCompleted` (tokens, time, cost).
The tools the model asks for run between calls, each recorded as `ToolExecuting` then
`ToolCompleted` or `ToolFailed`; a failing tool is reported back to the model, not fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from agent_ledger.application.agents import JSON, AgentError, ModelAgentContext, ToolError
from agent_ledger.application.chat_models import (
    ChatChunk,
    ChatModels,
    ChatRequest,
    ToolCall,
    ToolSpec,
    Turn,
    tool_message,
)
from agent_ledger.application.prices import PriceTable
from agent_ledger.application.tool_box import ToolBox
from agent_ledger.domain.expressions import render
from agent_ledger.domain.processes import LlmAgent

COALESCE_SECONDS = 0.05
COALESCE_PIECES = 64
TURN_SEPARATOR = "\n\n"
"""Put between the texts of two turns of one attempt (as a delta too: the deltas of an
attempt always concatenate to its final text)."""

_FENCED = re.compile(r"\A\s*```[a-zA-Z]*\s*\n(?P<body>.*?)\n?\s*```\s*\Z", re.S)


@dataclass(frozen=True)
class ModelAnswer:
    """How a model attempt ended: its output and the attempt's usage totals."""

    output: JSON
    usage: dict[str, JSON]


def model_input(agent: LlmAgent, step_input: Any, scope: Mapping[str, Any]) -> dict[str, JSON]:
    """The prompts of an attempt, rendered (recorded as the agent's input).

    Without a `prompt`, the user message is the step's rendered `input` as JSON, or the
    execution's input when the step has none. Raises `ExpressionError`.
    """
    system = None if agent.system is None else _as_text(render(agent.system, scope))
    if agent.prompt is not None:
        prompt = _as_text(render(agent.prompt, scope))
    else:
        rendered = render(step_input, scope) if step_input else scope.get("input")
        prompt = _as_text(rendered)
    return {"system": system, "prompt": prompt}


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


class ModelAgent:
    """Runs model agents: the tool-calling loop over a `ChatModels` port."""

    def __init__(
        self,
        models: ChatModels,
        tools: ToolBox,
        prices: PriceTable | None = None,
        *,
        coalesce_seconds: float = COALESCE_SECONDS,
        coalesce_pieces: int = COALESCE_PIECES,
    ):
        self.models = models
        self.tools = tools
        self.prices = prices or PriceTable()
        self.coalesce_seconds = coalesce_seconds
        self.coalesce_pieces = coalesce_pieces

    async def aclose(self) -> None:
        await self.models.aclose()
        await self.tools.aclose()

    async def __call__(
        self, agent: LlmAgent, context: ModelAgentContext, prepared: Mapping[str, JSON]
    ) -> ModelAnswer:
        if not self.models.has_provider(agent.provider):
            which = f"named {agent.provider!r}" if agent.provider else "(the default)"
            raise AgentError(
                f"no model provider {which} is configured in this worker",
                error_type="ModelProviderMissing",
                retryable=False,
            )
        specs = await self.tools.specs(agent.tools)
        by_name = {spec.name: spec for spec in specs}
        messages = _opening(prepared, context)
        writer = OutputWriter(context, self.coalesce_seconds, self.coalesce_pieces)
        totals = _Totals()
        request = ChatRequest(
            model=agent.model,
            messages=messages,
            tools=specs,
            temperature=agent.temperature,
            max_tokens=agent.max_tokens,
            json_output=agent.response_format == "json",
            run=context.run,
        )
        try:
            for number in range(1, agent.max_turns + 1):
                turn = await self._turn(agent, context, request, writer, totals)
                if not turn.tool_calls:
                    return ModelAnswer(_output(agent, turn, writer.text), totals.usage())
                if number == agent.max_turns:
                    break
                messages.append(_assistant_message(turn, number))
                for call in turn.tool_calls:
                    result = await self._call_tool(context, by_name, call)
                    messages.append(tool_message(call.id, result))
        except AgentError:
            await writer.flush()  # the partial answer stays recorded under this attempt
            raise
        raise AgentError(
            f"the model asked for tools in each of its {agent.max_turns} turns and never answered",
            error_type="MaxTurnsExceeded",
            retryable=False,
        )

    async def _turn(
        self,
        agent: LlmAgent,
        context: ModelAgentContext,
        request: ChatRequest,
        writer: OutputWriter,
        totals: _Totals,
    ) -> Turn:
        turn = Turn()
        answered_by: str | None = None
        started = time.monotonic()
        writer.new_turn()
        async with self.models.stream(agent.provider, request) as chunks:
            async for chunk in writer.paced(chunks):
                answered_by = answered_by or chunk.model
                await writer.add(chunk)
                turn.add(chunk)
        await writer.flush()
        if turn.finish_reason is None:
            raise AgentError(
                "the model's stream ended before its answer was complete",
                error_type="BrokenStream",
            )
        duration_ms = round((time.monotonic() - started) * 1000, 3)
        cost = self.prices.cost(
            (agent.model, answered_by), turn.prompt_tokens, turn.completion_tokens
        )
        totals.add(turn, cost)
        await context.report_model_call(
            agent.model, turn.prompt_tokens, turn.completion_tokens, duration_ms, cost
        )
        return turn

    async def _call_tool(
        self,
        context: ModelAgentContext,
        tools: Mapping[str, ToolSpec],
        call: ToolCall,
    ) -> str:
        """Run one tool call, recorded; the model gets its JSON result or `{"error": ...}`."""
        name, call_id = call.name, context.tool_call_id(call.id)
        args: Any
        try:
            args = json.loads(call.arguments or "{}")
        except json.JSONDecodeError:
            args = call.arguments
        await context.report_tool_started(call_id, name, args)
        try:
            spec = tools.get(name)
            if spec is None:
                raise ToolError(f"no tool {name!r} is available to this agent", retryable=False)
            if not isinstance(args, dict):
                raise ToolError("the arguments must be a JSON object", retryable=False)
            result = await self.tools.call(spec, args, context.run)
        except ToolError as error:
            await context.report_tool_finished(
                call_id, error=str(error), error_type=error.error_type
            )
            return json.dumps({"error": str(error)}, ensure_ascii=False)
        await context.report_tool_finished(call_id, result=result)
        return json.dumps(result, ensure_ascii=False)


class OutputWriter:
    """Coalesces a streamed answer into events: text to deltas, reasoning to thoughts."""

    def __init__(self, context: ModelAgentContext, seconds: float, pieces: int):
        self.context = context
        self.seconds = seconds
        self.pieces = pieces
        self.text = ""
        self._index = 0
        self._text_buffer: list[str] = []
        self._thought_buffer: list[str] = []
        self._count = 0
        self._since: float | None = None
        self._turn_started = False

    def new_turn(self) -> None:
        self._turn_started = True

    async def paced(self, chunks: AsyncIterator[ChatChunk]) -> AsyncIterator[ChatChunk]:
        """The chunks of a stream, flushing what is buffered whenever its time is up, also
        while the model pauses (the stream is read by a task of its own)."""
        queue: asyncio.Queue[ChatChunk | BaseException | None] = asyncio.Queue()
        reader = asyncio.create_task(_pump(chunks, queue))
        try:
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), self._time_left())
                except TimeoutError:
                    await self.flush()
                    continue
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
                if self._count >= self.pieces or self._time_left() == 0:
                    await self.flush()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    async def add(self, chunk: ChatChunk) -> None:
        if chunk.reasoning:
            self._buffer(self._thought_buffer, chunk.reasoning)
        if chunk.text:
            if self._turn_started and self.text:
                self._buffer(self._text_buffer, TURN_SEPARATOR)
            self._turn_started = False
            self._buffer(self._text_buffer, chunk.text)

    def _buffer(self, buffer: list[str], piece: str) -> None:
        buffer.append(piece)
        self._count += 1
        if self._since is None:
            self._since = time.monotonic()

    def _time_left(self) -> float | None:
        if self._since is None:
            return None
        return max(0.0, self._since + self.seconds - time.monotonic())

    async def flush(self) -> None:
        """Record whatever is buffered: the thought first, then the answer's next piece."""
        thought, text = "".join(self._thought_buffer), "".join(self._text_buffer)
        self._thought_buffer.clear()
        self._text_buffer.clear()
        self._count, self._since = 0, None
        if thought:
            await self.context.think(thought)
        if text:
            index, self._index = self._index, self._index + 1
            self.text += text
            await self.context.stream_output(text, index)


async def _pump(
    chunks: AsyncIterator[ChatChunk], queue: asyncio.Queue[ChatChunk | BaseException | None]
) -> None:
    try:
        async for chunk in chunks:
            queue.put_nowait(chunk)
    except Exception as error:
        queue.put_nowait(error)
        return
    queue.put_nowait(None)


class _Totals:
    """An attempt's usage: model calls, tokens and cost (None once any part is unknown)."""

    def __init__(self) -> None:
        self.calls = 0
        self.prompt_tokens: int | None = 0
        self.completion_tokens: int | None = 0
        self.cost_usd: float | None = 0.0

    def add(self, turn: Turn, cost: float | None) -> None:
        self.calls += 1
        self.prompt_tokens = _plus(self.prompt_tokens, turn.prompt_tokens)
        self.completion_tokens = _plus(self.completion_tokens, turn.completion_tokens)
        self.cost_usd = None if cost is None or self.cost_usd is None else self.cost_usd + cost

    def usage(self) -> dict[str, JSON]:
        return {
            "model_calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": None if self.cost_usd is None else round(self.cost_usd, 8),
        }


def _plus(total: int | None, part: int | None) -> int | None:
    return None if total is None or part is None else total + part


def _opening(prepared: Mapping[str, JSON], context: ModelAgentContext) -> list[dict[str, JSON]]:
    """The first messages: the system prompt, the thread's earlier turns, the user prompt."""
    messages: list[dict[str, JSON]] = []
    if prepared.get("system"):
        messages.append({"role": "system", "content": prepared["system"]})
    for earlier in context.run.thread_history:
        messages.append({"role": "user", "content": _as_text(earlier.get("input"))})
        if earlier.get("output") is not None:
            messages.append({"role": "assistant", "content": _as_text(earlier["output"])})
    messages.append({"role": "user", "content": prepared.get("prompt") or ""})
    return messages


def _fallback_id(turn: int, index: int) -> str:
    return f"call_{turn}_{index}"


def _assistant_message(turn: Turn, number: int) -> dict[str, JSON]:
    for index, call in enumerate(turn.tool_calls):
        call.id = call.id or _fallback_id(number, index)
    return {
        "role": "assistant",
        "content": turn.text or None,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments or "{}"},
            }
            for call in turn.tool_calls
        ],
    }


def _output(agent: LlmAgent, turn: Turn, text: str) -> JSON:
    if agent.response_format != "json":
        return text
    answer = turn.text
    fenced = _FENCED.match(answer)
    try:
        return json.loads(fenced["body"] if fenced else answer)
    except json.JSONDecodeError:
        raise AgentError(
            "the model was asked for JSON and answered with text that is not JSON",
            error_type="BadModelOutput",
        ) from None
