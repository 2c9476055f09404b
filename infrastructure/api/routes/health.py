"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from infrastructure.api.dependencies import RuntimeDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(runtime: RuntimeDep) -> JSONResponse:
    """The databases answer; reports how far the projection is behind the store."""
    try:
        head = runtime.executions.last_position()
        with runtime.read_engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        position = runtime.projection_position()
    except Exception as error:
        body: dict[str, Any] = {"status": "unavailable", "detail": str(error)[:200]}
        return JSONResponse(body, status_code=503)
    return JSONResponse(
        {
            "status": "ready",
            "store_position": head,
            "projections": {"execution_status": {"position": position, "lag": head - position}},
        }
    )
