"""`agent-ledger serve | worker | projector`: run the service's roles in this process."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from agent_ledger.infrastructure.cli.preflight import bind_port, check_database, require_jwt_secret
from agent_ledger.infrastructure.redact import redact_logging
from agent_ledger.infrastructure.settings import Settings

LogLevel = Annotated[str, typer.Option(help="debug, info, warning")]


def configure_logging(log_level: str) -> None:
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    redact_logging()


def time_path(settings: Settings, role: str) -> None:
    """Keep latency marks when `AGENT_LEDGER_PATH_TIMING` names a directory."""
    if settings.path_timing is not None:
        from agent_ledger.application.path_timing import record_to

        record_to(settings.path_timing, role)


def serve(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    log_level: LogLevel = "info",
) -> None:
    """Run the API, the engine and the projector in one process."""
    import uvicorn

    from agent_ledger.infrastructure.api.app import create_app

    configure_logging(log_level)
    settings = Settings()
    time_path(settings, "serve")
    # refused before any role starts or anything is written: a busy port, no secret, no database
    listening = bind_port(host, port)
    try:
        require_jwt_secret(settings)
        check_database(settings)
        where = "PostgreSQL" if settings.uses_postgres else f"SQLite in {settings.data_dir}"
        port = listening.getsockname()[1]  # the one chosen, for --port 0
        typer.echo(f"agent-ledger: serving on http://{host}:{port} (store: {where})", err=True)
        config = uvicorn.Config(
            create_app(settings),
            log_level=log_level,
            ws_ping_interval=20,
            ws_ping_timeout=20,
        )
        redact_logging("uvicorn", "uvicorn.error", "uvicorn.access")
        server = uvicorn.Server(config)
        server.run(sockets=[listening])
    finally:
        listening.close()
    if not server.started:
        raise typer.Exit(3)  # uvicorn's startup failure; it has logged why


def worker(log_level: LogLevel = "info") -> None:
    """Run only the engine: claim executions from the shared store and drive them."""
    from agent_ledger.infrastructure.cli.roles import run_until_signalled

    configure_logging(log_level)
    settings = Settings()
    time_path(settings, "worker")
    check_database(settings)
    run_until_signalled(settings, engine=True, projector=False)


def projector(log_level: LogLevel = "info") -> None:
    """Run only the projections; several may run, one is active per projection."""
    from agent_ledger.infrastructure.cli.roles import run_until_signalled

    configure_logging(log_level)
    settings = Settings()
    time_path(settings, "projector")
    check_database(settings)
    run_until_signalled(settings, engine=False, projector=True)
