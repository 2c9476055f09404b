"""Every error the API returns is application/problem+json (RFC 9457), mapped here once."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from eventsourcing.persistence import RecordConflictError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from agent_ledger.application.executions import ExecutionNotFoundError
from agent_ledger.application.lineage import UnknownStepToForkError
from agent_ledger.application.processes import (
    AgentUrlRefusedError,
    UnknownBuiltinAgentError,
    UnknownProcessError,
)
from agent_ledger.application.signals import (
    SignalNotAwaitedError,
    SignalPayloadError,
    SignalRefusedError,
)
from agent_ledger.application.starter import IdempotencyKeyReusedError
from agent_ledger.application.thread_policies import ThreadBusyError
from agent_ledger.domain.errors import DomainError, ExpressionError, InvalidProcessDefinitionError
from agent_ledger.domain.execution_state import ExecutionRuleError
from agent_ledger.infrastructure.auth.tokens import AuthenticationError, PermissionDeniedError
from agent_ledger.infrastructure.feed.reconnect import UNAVAILABLE, unavailable

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"
RETRY_AFTER_SECONDS = 1
"""What a 503 for an unreachable database asks clients to wait before trying again."""


class ProblemError(Exception):
    """An error raised by a route that already knows its status and problem type."""

    def __init__(self, status: int, kind: str, title: str, detail: str, **extra: Any):
        super().__init__(detail)
        self.status, self.kind, self.title, self.detail, self.extra = (
            status,
            kind,
            title,
            detail,
            extra,
        )


def problem(
    status: int,
    kind: str,
    title: str,
    detail: str,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {
        "type": f"/problems/{kind}",
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


# error type → (status, problem kind, title); the most specific match wins
_DOMAIN_ERRORS: list[tuple[type[Exception], int, str, str]] = [
    (ExecutionNotFoundError, 404, "not-found", "Execution not found"),
    (UnknownProcessError, 422, "unknown-process", "Unknown process"),
    (IdempotencyKeyReusedError, 409, "idempotency-key-reused", "Idempotency key reused"),
    (UnknownStepToForkError, 422, "unknown-step", "No such step"),
    (SignalNotAwaitedError, 409, "signal-not-awaited", "No step waits for this signal"),
    (ThreadBusyError, 409, "thread-busy", "The thread has an execution under way"),
    (SignalPayloadError, 422, "invalid-signal-payload", "The payload does not fit the schema"),
    (AgentUrlRefusedError, 422, "agent-url-refused", "Agent URL refused"),
    (UnknownBuiltinAgentError, 422, "unknown-agent", "Unknown agent"),
    (InvalidProcessDefinitionError, 422, "invalid-process", "Invalid process definition"),
    (ExpressionError, 422, "invalid-expression", "Invalid expression"),
    (ExecutionRuleError, 409, "conflict", "The execution does not allow this now"),
    (RecordConflictError, 409, "concurrent-change", "Changed concurrently; try again"),
    (DomainError, 422, "rule-broken", "Request breaks a rule"),
]


def install(app: FastAPI) -> None:
    """Register the problem+json handlers on the app."""

    @app.exception_handler(ProblemError)
    async def _problem(_: Request, error: ProblemError) -> JSONResponse:
        return problem(error.status, error.kind, error.title, error.detail, **error.extra)

    @app.exception_handler(AuthenticationError)
    async def _unauthenticated(_: Request, error: AuthenticationError) -> JSONResponse:
        return problem(
            401,
            "unauthenticated",
            "Authentication required",
            str(error),
            headers={"WWW-Authenticate": 'Bearer realm="agent-ledger"'},
        )

    @app.exception_handler(PermissionDeniedError)
    async def _forbidden(_: Request, error: PermissionDeniedError) -> JSONResponse:
        return problem(403, "forbidden", "Not allowed", str(error))

    @app.exception_handler(SignalRefusedError)
    async def _signal_refused(_: Request, error: SignalRefusedError) -> JSONResponse:
        return problem(403, "forbidden", "Not allowed", str(error))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type")}
            for e in error.errors()
        ]
        if any(e["type"] == "json_invalid" for e in errors):
            return problem(
                400,
                "malformed-json",
                "Malformed JSON",
                "the request body is not valid JSON",
                errors=errors,
            )
        return problem(
            422,
            "invalid-request",
            "Invalid request",
            "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors),
            errors=errors,
        )

    @app.exception_handler(HTTPException)
    async def _http(request: Request, error: HTTPException) -> JSONResponse:
        kind = {404: "not-found", 405: "method-not-allowed"}.get(error.status_code, "http-error")
        headers = error.headers
        if error.status_code == 405:  # Starlette names the first route's methods only
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return problem(
            error.status_code, kind, str(error.detail), str(error.detail), headers=headers
        )

    for error_type, status, kind, title in _DOMAIN_ERRORS:
        app.add_exception_handler(error_type, _domain_handler(status, kind, title))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=error)
        return problem(500, "internal", "Internal error", "an unexpected error occurred")

    async def _database_error(request: Request, error: Exception) -> JSONResponse:
        if not unavailable(error):
            return await _unexpected(request, error)
        # not logged per request: the process's own loops log the outage, once per step
        return problem(
            503,
            "store-unavailable",
            "Store unavailable",
            "the database cannot be reached right now; retry shortly",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    for error_type in (*UNAVAILABLE, sa.exc.DBAPIError):
        app.add_exception_handler(error_type, _database_error)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route takes at the request's path (a path has a route per method).

    A path spelled out by a route (`/v1/executions/resume`) is that route's alone, not also
    an instance of a templated one (`/v1/executions/{execution_id}`)."""
    routes = request.app.router.routes
    methods = [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]
    spelled = request.app.openapi().get("paths", {}).get(request.url.path)
    if spelled is None:
        return methods
    own = {method.upper() for method in spelled}
    if "GET" in own:
        own.add("HEAD")
    return [method for method in methods if method in own]


def _domain_handler(status: int, kind: str, title: str) -> Any:
    async def handler(_: Request, error: Exception) -> JSONResponse:
        return problem(status, kind, title, str(error))

    return handler
