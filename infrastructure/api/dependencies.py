"""FastAPI dependencies: the authenticated caller and the narrow services each route uses.

The process's `Runtime` stays here: routes ask for the executions, the status queries,
the catalog, ... and never reach into the whole runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Protocol, TypeVar

import sqlalchemy as sa
from fastapi import Depends, Header, Request

from agent_ledger.application.audit import AuditReadLog
from agent_ledger.application.executions import Executions
from agent_ledger.application.processes import ProcessCatalog
from agent_ledger.application.starter import ExecutionStarter
from agent_ledger.application.tool_box import ToolBox
from agent_ledger.infrastructure.agents.egress import AgentUrlPolicy
from agent_ledger.infrastructure.agents.http_tools import SqlHttpTools
from agent_ledger.infrastructure.audit.sql import SqlAuditReadLog
from agent_ledger.infrastructure.auth.tokens import (
    AuthenticationError,
    Caller,
    authenticate,
    bearer_token,
)
from agent_ledger.infrastructure.read_models.metrics_queries import MetricsQueries
from agent_ledger.infrastructure.read_models.status_queries import ExecutionStatusQueries
from agent_ledger.infrastructure.runtime import Runtime
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.webhooks.book import SqlWebhooks
from agent_ledger.infrastructure.work.schedules import ScheduleService

T = TypeVar("T")


async def get_caller(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Caller:
    """The token's subject, unless the token is invalid, expired or revoked (401)."""
    caller = authenticate(bearer_token(authorization), request.app.state.jwt_secret)
    # the tail keeps every process's view of revocations fresh (re-read periodically)
    if request.app.state.tail_hub.is_revoked(caller.user_id, caller.issued_at):
        raise AuthenticationError("the token was revoked")
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]


class ProjectionProgress(Protocol):
    """How far the read models are: read-your-writes waits on a projection's position."""

    def projection_position(self, name: str = ...) -> int: ...

    def wait_for_projection(self, position: int, timeout: float, name: str = ...) -> bool: ...


def _part(part: Callable[[Runtime], T]) -> Callable[[Request], Coroutine[Any, Any, T]]:
    """A dependency on one part of the process's runtime."""

    async def dependency(request: Request) -> T:
        return part(request.app.state.runtime)

    return dependency


async def get_starter(request: Request) -> ExecutionStarter:
    starter: ExecutionStarter = request.app.state.starter
    return starter


StarterDep = Annotated[ExecutionStarter, Depends(get_starter)]
SettingsDep = Annotated[Settings, Depends(_part(lambda runtime: runtime.settings))]
ExecutionsDep = Annotated[Executions, Depends(_part(lambda runtime: runtime.executions))]
CatalogDep = Annotated[ProcessCatalog, Depends(_part(lambda runtime: runtime.catalog))]
StatusQueriesDep = Annotated[
    ExecutionStatusQueries, Depends(_part(lambda runtime: runtime.statuses))
]
MetricsQueriesDep = Annotated[
    MetricsQueries, Depends(_part(lambda runtime: MetricsQueries(runtime.read_engine)))
]
AuditReadsDep = Annotated[
    AuditReadLog, Depends(_part(lambda runtime: SqlAuditReadLog(runtime.read_engine)))
]
ProjectionsDep = Annotated[ProjectionProgress, Depends(_part(lambda runtime: runtime))]
ReadEngineDep = Annotated[sa.Engine, Depends(_part(lambda runtime: runtime.read_engine))]
"""The read-model database itself, for the routes that check it (readiness) or list
its own bookkeeping (parked events)."""
BuiltinToolsDep = Annotated[ToolBox, Depends(_part(lambda runtime: ToolBox(runtime.agents)))]
"""The built-in tools (their specs, as model agents see them)."""
HttpToolsDep = Annotated[
    SqlHttpTools,
    Depends(
        _part(
            lambda runtime: SqlHttpTools(
                runtime.read_engine,
                egress=AgentUrlPolicy.from_setting(runtime.settings.agent_url_allow),
            )
        )
    ),
]
"""The registered HTTP tools, judged by this deployment's egress rule."""
SchedulesDep = Annotated[ScheduleService, Depends(_part(lambda runtime: runtime.schedules))]
"""Schedules: their commands and rows, and a scheduler to start one by hand."""
WebhooksDep = Annotated[
    SqlWebhooks,
    Depends(_part(lambda rt: SqlWebhooks(rt.read_engine, rt.settings.cipher_key))),
]
WebhookEgressDep = Annotated[
    AgentUrlPolicy,
    Depends(_part(lambda rt: AgentUrlPolicy.from_setting(rt.settings.agent_url_allow))),
]
"""Webhooks (their rows and delivery logs) and the egress rule their URLs must pass."""
