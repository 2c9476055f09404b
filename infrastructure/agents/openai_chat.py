"""Model turns from OpenAI-compatible `/chat/completions` streams, via the official client.

Providers come from the operator's configuration and are trusted (no egress rule): a
local Ollama on loopback is the common case. Their keys and any credentials in their URLs
never reach an event, a log line or an error message.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
from openai import AsyncOpenAI

from agent_ledger.application.agents import AgentError
from agent_ledger.application.chat_models import ChatChunk, ChatRequest, ToolCallPiece
from agent_ledger.application.prices import ModelPrice, PriceTable
from agent_ledger.infrastructure.agents.http import TraceParentOf
from agent_ledger.infrastructure.redact import MASK, mask_url, redact
from agent_ledger.infrastructure.settings import Settings

DEFAULT_PROVIDER = "default"
OPENAI_URL = "https://api.openai.com/v1"
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 600.0
MAX_SHOWN_DETAIL = 300


@dataclass(frozen=True)
class Provider:
    """Where a model provider is and its key (never shown: see `__repr__`)."""

    name: str
    base_url: str
    api_key: str | None = field(default=None, repr=False)

    @property
    def shown(self) -> str:
        return f"{self.name} ({mask_url(self.base_url)})"


def providers_from(
    settings: Settings, environ: Mapping[str, str] = os.environ
) -> dict[str, Provider]:
    """The configured providers by name; the default one is `default`."""
    providers: dict[str, Provider] = {}
    if settings.llm_base_url or settings.llm_api_key:
        providers[DEFAULT_PROVIDER] = Provider(
            DEFAULT_PROVIDER, settings.llm_base_url or OPENAI_URL, settings.llm_api_key
        )
    for name, setting in settings.llm_providers.items():
        key = environ.get(setting.api_key_env) if setting.api_key_env else None
        providers[name] = Provider(name, setting.base_url, key)
    return providers


def prices_from(settings: Settings) -> PriceTable:
    return PriceTable(
        {
            model: ModelPrice(price.input_per_million, price.output_per_million)
            for model, price in settings.llm_prices.items()
        }
    )


class OpenAiChatModels:
    """The `ChatModels` port over the official `openai` client, one client per provider.

    The client does not retry (`max_retries=0`): a 429, a 5xx, a refused connection or a
    broken stream fails the attempt as retryable, and the step's retry policy decides, so
    every retry is recorded. Another 4xx is not retryable.
    """

    def __init__(self, providers: Mapping[str, Provider], traceparent: TraceParentOf | None = None):
        self.providers = dict(providers)
        self._clients: dict[str, AsyncOpenAI] = {}
        self._traceparent = traceparent

    def has_provider(self, name: str | None) -> bool:
        return (name or DEFAULT_PROVIDER) in self.providers

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    @asynccontextmanager
    async def stream(
        self, provider: str | None, request: ChatRequest
    ) -> AsyncIterator[AsyncIterator[ChatChunk]]:
        chosen = self.providers[provider or DEFAULT_PROVIDER]
        client = self._client(chosen)
        arguments = _arguments(request)
        if self._traceparent is not None and request.run is not None:
            arguments["extra_headers"] = {"traceparent": await self._traceparent(request.run)}
        try:
            stream = await client.chat.completions.create(**arguments)
        except Exception as error:
            raise _failure(error, chosen) from None
        try:
            yield _chunks(stream, chosen)
        finally:
            await stream.close()

    def _client(self, provider: Provider) -> AsyncOpenAI:
        client = self._clients.get(provider.name)
        if client is None:
            client = AsyncOpenAI(
                base_url=provider.base_url,
                api_key=provider.api_key or "unused",  # local servers want none; the client one
                max_retries=0,
                timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
            )
            self._clients[provider.name] = client
        return client


def _arguments(request: ChatRequest) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "model": request.model,
        "messages": list(request.messages),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if request.tools:
        arguments["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": dict(tool.parameters),
                },
            }
            for tool in request.tools
        ]
    if request.temperature is not None:
        arguments["temperature"] = request.temperature
    if request.max_tokens is not None:
        arguments["max_tokens"] = request.max_tokens
    if request.json_output:
        arguments["response_format"] = {"type": "json_object"}
    return arguments


async def _chunks(stream: Any, provider: Provider) -> AsyncIterator[ChatChunk]:
    try:
        async for raw in stream:
            yield _chunk(raw)
    except Exception as error:
        raise _failure(error, provider, streaming=True) from None


def _chunk(raw: Any) -> ChatChunk:
    text = reasoning = ""
    pieces: tuple[ToolCallPiece, ...] = ()
    finish = None
    if raw.choices:
        choice = raw.choices[0]
        delta = choice.delta
        extra = delta.model_extra or {}
        text = delta.content or ""
        reasoning = extra.get("reasoning_content") or extra.get("reasoning") or ""
        pieces = tuple(
            ToolCallPiece(
                index=call.index,
                id=call.id,
                name=call.function.name if call.function else None,
                arguments=(call.function.arguments or "") if call.function else "",
            )
            for call in delta.tool_calls or ()
        )
        finish = choice.finish_reason
    usage = raw.usage
    return ChatChunk(
        text=text,
        reasoning=reasoning if isinstance(reasoning, str) else "",
        tool_calls=pieces,
        prompt_tokens=usage.prompt_tokens if usage else None,
        completion_tokens=usage.completion_tokens if usage else None,
        finish_reason=finish,
        model=raw.model or None,
    )


def _failure(error: Exception, provider: Provider, streaming: bool = False) -> AgentError:
    """The attempt's failure, told without the provider's key or URL credentials."""
    where = f"the model provider {provider.shown}"
    if isinstance(error, openai.APIStatusError):
        code = error.status_code
        detail = _detail(error.body) or error.message
        message = f"{where} answered HTTP {code}: {detail}"
        if code == 429:
            failure = AgentError(message, error_type="ModelRateLimited")
        elif code >= 500 or code == 408:
            failure = AgentError(message, error_type="ModelUnavailable")
        else:
            failure = AgentError(message, error_type="ModelRejected", retryable=False)
    elif isinstance(error, openai.APITimeoutError | httpx.TimeoutException):
        failure = AgentError(f"{where} timed out", error_type="ModelTimeout")
    elif streaming:
        failure = AgentError(
            f"the stream from {where} broke: {type(error).__name__}: {error}",
            error_type="BrokenStream",
        )
    elif isinstance(error, openai.APIConnectionError | httpx.TransportError):
        failure = AgentError(f"{where} could not be reached", error_type="ModelUnreachable")
    else:
        failure = AgentError(f"{where} failed: {type(error).__name__}: {error}")
    failure.args = (_hidden(str(failure), provider),)
    return failure


def _detail(body: object) -> str:
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        return str(message)[:MAX_SHOWN_DETAIL] if message else ""
    return ""


def _hidden(text: str, provider: Provider) -> str:
    """`text` without the provider's key (a server may echo it) and URL passwords."""
    if provider.api_key:
        text = text.replace(provider.api_key, MASK)
    return redact(text)
