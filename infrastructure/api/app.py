"""The FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from agent_ledger.application import path_timing
from agent_ledger.application.group_commit import GroupCommitter
from agent_ledger.application.starter import ExecutionStarter
from agent_ledger.infrastructure.api import errors, problem_responses
from agent_ledger.infrastructure.api.body_limit import BodyLimit
from agent_ledger.infrastructure.api.input_boundary import InputBoundary
from agent_ledger.infrastructure.api.routes import (
    admin,
    audit,
    dashboard,
    executions,
    health,
    lineage,
    processes,
    revocations,
    schedules,
    signals,
    stream,
    stream_sse,
    tools,
    webhooks,
)
from agent_ledger.infrastructure.api.routes import metrics as metrics_routes
from agent_ledger.infrastructure.api.tail_session import TailService
from agent_ledger.infrastructure.runtime import Runtime
from agent_ledger.infrastructure.settings import Settings


def create_app(settings: Settings, runtime: Runtime | None = None) -> FastAPI:
    """Build the API; without a runtime, the lifespan starts every role in-process."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = runtime is None
        app.state.runtime = (
            await run_in_threadpool(
                Runtime.start,
                settings,
                engine=settings.run_engine,
                projector=settings.run_projector,
            )
            if runtime is None
            else runtime
        )
        app.state.jwt_secret = settings.resolved_jwt_secret()
        executions = app.state.runtime.executions
        local = app.state.runtime.worker_thread  # serve with the engine: hand starts over
        store = app.state.runtime.loop_store()
        app.state.starter = ExecutionStarter(
            executions,
            GroupCommitter(executions, store=store),
            on_started=None if local is None else local.worker.offer,
        )
        tail = TailService.start(app.state.runtime, settings, app.state.jwt_secret)
        app.state.tail, app.state.tail_hub = tail, tail.hub
        try:
            yield
        finally:
            await tail.stop()
            if store is not None:
                await store.close()
            if own:
                await run_in_threadpool(app.state.runtime.stop)
            path_timing.save()  # uvicorn ends the process by its signal: no atexit

    app = FastAPI(
        title="Agent Ledger",
        version="0.1.0",
        description="Event-sourced execution service for AI agents.",
        lifespan=lifespan,
        # off, FastAPI skips its per-request look for OpenTelemetry providers (which reads the
        # environment on every request: ~5% of a start's CPU); Prometheus metrics stay on
        telemetry=None
        if settings.opentelemetry
        else {"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    errors.install(app)
    problem_responses.install(app)

    # plain ASGI middlewares: the decorator form costs every request a task and a copy;
    # the last added runs first, so an oversized body is refused before it is read
    app.add_middleware(InputBoundary)
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)

    app.include_router(health.router)
    app.include_router(processes.router)
    app.include_router(executions.router)
    app.include_router(metrics_routes.router)
    app.include_router(stream.router)
    app.include_router(stream_sse.router)
    app.include_router(revocations.router)
    app.include_router(audit.router)
    app.include_router(admin.router)
    app.include_router(tools.router)
    app.include_router(signals.router)
    app.include_router(lineage.router)
    app.include_router(schedules.router)
    app.include_router(webhooks.router)
    app.include_router(dashboard.router)
    return app
