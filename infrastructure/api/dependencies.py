"""FastAPI dependencies: the process's runtime and the authenticated caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from infrastructure.auth import Caller, authenticate, bearer_token
from infrastructure.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_caller(request: Request, authorization: Annotated[str | None, Header()] = None) -> Caller:
    return authenticate(bearer_token(authorization), request.app.state.jwt_secret)


CallerDep = Annotated[Caller, Depends(get_caller)]
