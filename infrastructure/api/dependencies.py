"""FastAPI dependencies: the process's runtime and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from application.starter import ExecutionStarter
from infrastructure.auth.tokens import AuthenticationError, Caller, authenticate, bearer_token
from infrastructure.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


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


async def get_starter(request: Request) -> ExecutionStarter:
    starter: ExecutionStarter = request.app.state.starter
    return starter


StarterDep = Annotated[ExecutionStarter, Depends(get_starter)]
