"""FastAPI dependencies: the authenticated caller and the narrow services each route uses.

The process's `Runtime` stays here: routes ask for the executions, the status queries,
the catalog, ... and never reach into the whole runtime.
"""

from __future__ import annotations

from typing import Annotated, Protocol

import sqlalchemy as sa
from fastapi import Depends, Header, Request

from application.audit import AuditReadLog
from application.executions import Executions
from application.processes import ProcessCatalog
from application.starter import ExecutionStarter
from infrastructure.audit.sql import SqlAuditReadLog
from infrastructure.auth.tokens import AuthenticationError, Caller, authenticate, bearer_token
from infrastructure.read_models.metrics_queries import MetricsQueries
from infrastructure.read_models.status_queries import ExecutionStatusQueries
from infrastructure.runtime import Runtime
from infrastructure.settings import Settings


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


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_settings(request: Request) -> Settings:
    return _runtime(request).settings


async def get_executions(request: Request) -> Executions:
    return _runtime(request).executions


async def get_starter(request: Request) -> ExecutionStarter:
    starter: ExecutionStarter = request.app.state.starter
    return starter


async def get_catalog(request: Request) -> ProcessCatalog:
    return _runtime(request).catalog


async def get_status_queries(request: Request) -> ExecutionStatusQueries:
    return _runtime(request).statuses


async def get_metrics_queries(request: Request) -> MetricsQueries:
    return MetricsQueries(_runtime(request).read_engine)


async def get_audit_reads(request: Request) -> AuditReadLog:
    return SqlAuditReadLog(_runtime(request).read_engine)


async def get_projections(request: Request) -> ProjectionProgress:
    return _runtime(request)


async def get_read_engine(request: Request) -> sa.Engine:
    return _runtime(request).read_engine


SettingsDep = Annotated[Settings, Depends(get_settings)]
ExecutionsDep = Annotated[Executions, Depends(get_executions)]
StarterDep = Annotated[ExecutionStarter, Depends(get_starter)]
CatalogDep = Annotated[ProcessCatalog, Depends(get_catalog)]
StatusQueriesDep = Annotated[ExecutionStatusQueries, Depends(get_status_queries)]
MetricsQueriesDep = Annotated[MetricsQueries, Depends(get_metrics_queries)]
AuditReadsDep = Annotated[AuditReadLog, Depends(get_audit_reads)]
ProjectionsDep = Annotated[ProjectionProgress, Depends(get_projections)]
ReadEngineDep = Annotated[sa.Engine, Depends(get_read_engine)]
"""The read-model database itself, for the routes that check it (readiness) or list
its own bookkeeping (parked events)."""
