"""Liveness, readiness and the Prometheus scrape."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent_ledger.infrastructure.api.dependencies import ExecutionsDep, ReadEngineDep, SettingsDep
from agent_ledger.infrastructure.api.problem_responses import problems
from agent_ledger.infrastructure.api.prometheus import metrics_registry
from agent_ledger.infrastructure.read_models.health import projection_lags

router = APIRouter(tags=["health"])


@router.get("/healthz", responses=problems(422))
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        200: {
            "description": "the databases answer and every projection is close to the store",
            "content": {
                "application/json": {
                    "example": {
                        "status": "ready",
                        "store_position": 1042,
                        "projections": {
                            "execution_status": {
                                "version": 1,
                                "position": 1042,
                                "lag": 0,
                                "lag_seconds": 0.0,
                                "parked": 0,
                            }
                        },
                        "parked_events": 0,
                    }
                }
            },
        },
        503: {"description": "a database does not answer, or a projection is too far behind"},
        **problems(422),
    },
)
def readyz(
    executions: ExecutionsDep, read_engine: ReadEngineDep, settings: SettingsDep
) -> JSONResponse:
    """The databases answer; reports every projection's position and lag behind the store."""
    try:
        with read_engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
        lags = projection_lags(executions, read_engine)
        head = lags[0].head if lags else executions.last_position()
    except Exception as error:
        body: dict[str, Any] = {"status": "unavailable", "detail": str(error)[:200]}
        return JSONResponse(body, status_code=503)
    limit = settings.ready_max_lag_seconds
    lagging = [lag.name for lag in lags if lag.seconds > limit]
    return JSONResponse(
        {
            "status": "lagging" if lagging else "ready",
            "store_position": head,
            "projections": {
                lag.name: {
                    "version": lag.version,
                    "position": lag.position,
                    "lag": lag.events,
                    "lag_seconds": round(lag.seconds, 3),
                    "parked": lag.parked,
                }
                for lag in lags
            },
            # events passed by: the views lack them, but they do not stop the service
            "parked_events": sum(lag.parked for lag in lags),
            **({"detail": f"more than {limit}s behind: {', '.join(lagging)}"} if lagging else {}),
        },
        status_code=503 if lagging else 200,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"},
        **problems(422, 503),
    },
)
def prometheus_metrics(executions: ExecutionsDep, read_engine: ReadEngineDep) -> Response:
    """Prometheus text format: events, executions by status, projection lag, step latency."""
    registry = metrics_registry(executions, read_engine)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
