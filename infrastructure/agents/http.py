"""Agents behind a URL: JSON answers or NDJSON event streams, turned into domain events."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from agent_ledger.application.agents import JSON, AgentError, AgentRun, RemoteAgentContext
from agent_ledger.domain.processes import HttpAgent
from agent_ledger.infrastructure.agents.egress import (
    AgentUrlPolicy,
    EgressRefusedError,
    HostNotResolvedError,
)
from agent_ledger.projections.traces import attempt_traceparent

NDJSON = "application/x-ndjson"

TraceParentOf = Callable[[AgentRun], Awaitable[str]]
"""The W3C `traceparent` of an attempt's outgoing calls."""


async def own_traceparent(run: AgentRun) -> str:
    """The attempt's span in the execution's own trace (no caller's trace to continue)."""
    return attempt_traceparent(run.execution_id, run.step_id, run.attempt)


class HttpAgentClient:
    """POSTs the step to the agent's URL and follows its answer.

    5xx, 429, a broken stream and a timeout are retryable failures; another 4xx is not.
    Before each call the egress rule is applied again (the name may resolve elsewhere now):
    a refused URL fails the attempt for good. Cancelling the awaiting task aborts the request.
    """

    def __init__(
        self,
        connect_timeout: float = 5.0,
        *,
        egress: AgentUrlPolicy | None = None,
        traceparent: TraceParentOf = own_traceparent,
    ):
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=connect_timeout))
        self._egress = egress if egress is not None else AgentUrlPolicy()
        self._traceparent = traceparent

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __call__(self, agent: HttpAgent, context: RemoteAgentContext, input: JSON) -> JSON:
        shown = agent.shown_url
        try:
            await self._egress.check_call(agent.url)
        except EgressRefusedError as error:
            raise AgentError(
                f"the agent url is refused: {error}", error_type="AgentUrlRefused", retryable=False
            ) from None
        except HostNotResolvedError as error:
            raise AgentError(
                f"the agent at {shown} could not be reached: {error}",
                error_type="AgentUnreachable",
            ) from None
        run = context.run
        payload = {
            "execution_id": str(run.execution_id),
            "step_id": run.step_id,
            "attempt": run.attempt,
            "user_id": run.user_id,
            "thread_id": run.thread_id,
            "thread_history": list(run.thread_history),
            "input": input,
        }
        headers = {
            "Accept": f"{NDJSON}, application/json",
            "traceparent": await self._traceparent(run),
        }
        try:
            async with self._client.stream(
                "POST", agent.url, json=payload, headers=headers
            ) as response:
                _check_status(response)
                if response.headers.get("content-type", "").startswith(NDJSON):
                    return await _follow_stream(response, context)
                body = json.loads(await response.aread())
        except httpx.TimeoutException as error:
            raise AgentError(
                f"the agent at {shown} timed out: {error}", error_type="AgentTimeout"
            ) from error
        except httpx.TransportError as error:
            raise AgentError(
                f"the agent at {shown} could not be reached: {error}",
                error_type="AgentUnreachable",
            ) from error
        except json.JSONDecodeError as error:
            raise AgentError(
                f"the agent at {shown} answered with invalid JSON",
                error_type="BadAgentResponse",
            ) from error
        if not isinstance(body, dict) or "output" not in body:
            raise AgentError(
                'the agent must answer {"output": ...}',
                error_type="BadAgentResponse",
                retryable=False,
            )
        return body["output"]


def _check_status(response: httpx.Response) -> None:
    code = response.status_code
    if code >= 500 or code == 429:
        raise AgentError(f"the agent answered HTTP {code}", error_type="AgentUnavailable")
    if code >= 400:
        raise AgentError(
            f"the agent refused the request with HTTP {code}",
            error_type="AgentRejected",
            retryable=False,
        )


async def _follow_stream(response: httpx.Response, context: RemoteAgentContext) -> JSON:
    async for line in response.aiter_lines():
        if not line.strip():
            continue
        try:
            message: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError as error:
            raise AgentError(
                "the agent's stream held a line that is not JSON", error_type="BrokenStream"
            ) from error
        kind = message.get("type")
        if kind == "thinking":
            await context.think(str(message.get("message", "")))
        elif kind == "tool_executing":
            await context.report_tool_started(
                str(message["call_id"]), str(message["tool"]), message.get("args", {})
            )
        elif kind == "tool_completed":
            await context.report_tool_finished(str(message["call_id"]), message.get("result"))
        elif kind == "tool_failed":
            await context.report_tool_finished(
                str(message["call_id"]), error=str(message.get("error", "tool failed"))
            )
        elif kind == "result":
            return message.get("output")
        elif kind == "error":
            raise AgentError(
                str(message.get("message", "the agent failed")),
                error_type="AgentReportedError",
                retryable=bool(message.get("retryable", True)),
            )
    raise AgentError("the agent's stream ended without a result", error_type="BrokenStream")
