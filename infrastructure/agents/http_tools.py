"""HTTP tools: tools admins register for model agents, each called by POSTing to its URL.

The registrations live in the read-model table `http_tools`; `SqlHttpTools` keeps them
(for the API) and implements the application's `HttpTools` port (for the worker). A call
POSTs `{"tool", "arguments", "execution_id", "step_id", "attempt", "user_id"}` and expects
2xx with `{"result": ...}`, or `{"error": "message"}` for a failure the model is told of.
The egress rule of HTTP agents applies at registration and again before each call. A URL
may hold credentials (sent as basic auth): they stay in the table, never in a message,
an event or a view.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import sqlalchemy as sa

from agent_ledger.application.agents import JSON, AgentRun, ToolError, UnknownToolError
from agent_ledger.application.chat_models import ToolSpec
from agent_ledger.domain.process_validation import without_credentials
from agent_ledger.infrastructure.agents.egress import (
    AgentUrlPolicy,
    EgressRefusedError,
    HostNotResolvedError,
)
from agent_ledger.infrastructure.agents.http import TraceParentOf, own_traceparent
from agent_ledger.infrastructure.read_models.tables import http_tools as table
from agent_ledger.infrastructure.redact import redact

MAX_ANSWER_BYTES = 1_000_000
"""A tool's answer larger than this is a failure: results go into events and prompts."""


@dataclass(frozen=True)
class HttpTool:
    """A registered tool: where it lives, what it does, its parameters and time limit."""

    name: str
    url: str
    description: str
    parameters: dict[str, JSON]
    timeout_seconds: float
    updated_by: str
    updated_at: datetime
    created_at: datetime

    @property
    def shown_url(self) -> str:
        """The URL without its credentials, as messages and views show it."""
        return without_credentials(self.url)

    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.parameters, self.timeout_seconds)

    def same_as(self, other: HttpTool) -> bool:
        """Whether both register the same tool (who and when aside)."""
        return (self.url, self.description, self.parameters, self.timeout_seconds) == (
            other.url,
            other.description,
            other.parameters,
            other.timeout_seconds,
        )


class SqlHttpTools:
    """HTTP tools in the read-model database, and the client that calls them."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        egress: AgentUrlPolicy | None = None,
        connect_timeout: float = 5.0,
        traceparent: TraceParentOf = own_traceparent,
    ):
        self.engine = engine
        self.egress = egress if egress is not None else AgentUrlPolicy()
        self.connect_timeout = connect_timeout
        self.traceparent = traceparent
        self._client: httpx.AsyncClient | None = None  # made on the first call, in its loop

    # -- the registry (the API) -------------------------------------------------------------

    def get(self, name: str) -> HttpTool | None:
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(table).where(table.c.name == name)).first()
        return None if row is None else _tool(row)

    def exists(self, name: str) -> bool:
        return self.get(name) is not None

    def registered(self) -> list[HttpTool]:
        """Every registered tool, by name."""
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(table).order_by(table.c.name)).all()
        return [_tool(row) for row in rows]

    def url_problem(self, url: str) -> str | None:
        """Why the egress rule refuses `url` (its host judged, credentials aside), or None."""
        try:
            self.egress.check(without_credentials(url))
        except EgressRefusedError as error:
            return str(error)
        return None

    def put(
        self,
        name: str,
        *,
        url: str,
        description: str,
        parameters: Mapping[str, JSON],
        timeout_seconds: float,
        by: str,
    ) -> tuple[HttpTool, bool]:
        """Register or change a tool; True when it is new. An unchanged one is kept as is."""
        now = datetime.now(UTC)
        wanted = HttpTool(
            name, url, description, dict(parameters), float(timeout_seconds), by, now, now
        )
        for _ in range(3):  # a concurrent first registration of the name: update it instead
            with self.engine.begin() as connection:
                row = connection.execute(
                    sa.select(table).where(table.c.name == name).with_for_update()
                ).first()
                if row is None:
                    try:
                        connection.execute(sa.insert(table).values(**_values(wanted)))
                    except sa.exc.IntegrityError:
                        continue
                    return wanted, True
                known = _tool(row)
                if known.same_as(wanted):
                    return known, False
                changed = _values(wanted)
                del changed["created_at"]
                connection.execute(sa.update(table).where(table.c.name == name).values(**changed))
                return HttpTool(**{**_values(wanted), "created_at": known.created_at}), False
        raise RuntimeError(f"could not register the tool {name!r}: too much contention")

    def delete(self, name: str) -> bool:
        """Remove a tool; False when there was none."""
        with self.engine.begin() as connection:
            deleted = connection.execute(sa.delete(table).where(table.c.name == name))
        return deleted.rowcount > 0

    # -- the HttpTools port (the worker) ----------------------------------------------------

    async def spec(self, name: str) -> ToolSpec | None:
        tool = await asyncio.to_thread(self.get, name)
        return None if tool is None else tool.spec()

    async def call(self, name: str, args: Mapping[str, JSON], run: AgentRun) -> JSON:
        """POST the call to the tool's URL; `ToolError` says why it failed, never with the
        URL's credentials. The time limit is the caller's (`ToolBox`)."""
        tool = await asyncio.to_thread(self.get, name)
        if tool is None:
            raise UnknownToolError(name)
        shown = tool.shown_url
        try:
            await self.egress.check_call(tool.url)
        except EgressRefusedError as error:
            raise ToolError(f"the tool url is refused: {error}", retryable=False) from None
        except HostNotResolvedError as error:
            raise ToolError(f"the tool at {shown} could not be reached: {error}") from None
        payload = {
            "tool": name,
            "arguments": dict(args),
            "execution_id": str(run.execution_id),
            "step_id": run.step_id,
            "attempt": run.attempt,
            "user_id": run.user_id,
        }
        try:
            traceparent = await self.traceparent(run)
            status, body = await self._post(tool.url, payload, {"traceparent": traceparent})
        except httpx.HTTPError as error:
            reason = redact(str(error).replace(tool.url, shown)) or type(error).__name__
            raise ToolError(f"the tool at {shown} could not be reached: {reason}") from None
        return _answer(shown, status, body)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def _post(
        self, url: str, payload: dict[str, JSON], headers: dict[str, str]
    ) -> tuple[int, bytes | None]:
        """The answer's status and body (None when it is larger than `MAX_ANSWER_BYTES`)."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(None, connect=self.connect_timeout)
            )
        async with self._client.stream("POST", url, json=payload, headers=headers) as response:
            body = bytearray()
            async for piece in response.aiter_bytes():
                body += piece
                if len(body) > MAX_ANSWER_BYTES:
                    return response.status_code, None
            return response.status_code, bytes(body)


def _answer(shown: str, status: int, body: bytes | None) -> JSON:
    """The result in a tool's answer, or the `ToolError` the answer amounts to."""
    if body is None:
        raise ToolError(f"the tool at {shown} answered more than {MAX_ANSWER_BYTES} bytes")
    try:
        answer: Any = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        answer = None
        if 200 <= status < 300:
            raise ToolError(f"the tool at {shown} answered with invalid JSON") from None
    reported = answer.get("error") if isinstance(answer, dict) else None
    if not 200 <= status < 300:
        said = f": {reported}" if isinstance(reported, str) and reported else ""
        raise ToolError(
            f"the tool at {shown} answered HTTP {status}{said}",
            retryable=status >= 500 or status == 429,
        )
    if isinstance(reported, str):
        raise ToolError(reported or f"the tool at {shown} reported an error", retryable=False)
    if not isinstance(answer, dict) or "result" not in answer:
        raise ToolError(
            f'the tool at {shown} must answer {{"result": ...}} or {{"error": "..."}}',
            retryable=False,
        )
    return answer["result"]


def _tool(row: Any) -> HttpTool:
    return HttpTool(
        name=row.name,
        url=row.url,
        description=row.description,
        parameters=row.parameters,
        timeout_seconds=row.timeout_seconds,
        updated_by=row.updated_by,
        updated_at=_aware(row.updated_at),
        created_at=_aware(row.created_at),
    )


def _aware(moment: datetime) -> datetime:
    """SQLite hands back the UTC instants it was given without their zone."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _values(tool: HttpTool) -> dict[str, Any]:
    return {
        "name": tool.name,
        "url": tool.url,
        "description": tool.description,
        "parameters": tool.parameters,
        "timeout_seconds": tool.timeout_seconds,
        "updated_by": tool.updated_by,
        "updated_at": tool.updated_at,
        "created_at": tool.created_at,
    }
