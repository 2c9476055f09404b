"""The `agent-ledger` command line."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Annotated

import psycopg
import pydantic
import pydantic_settings
import sqlalchemy as sa
import typer

from infrastructure.auth.tokens import issue_token
from infrastructure.cli.audit import audit_app
from infrastructure.cli.preflight import (
    StartupError,
    bind_port,
    check_database,
    database_unreachable,
    require_jwt_secret,
)
from infrastructure.cli.projections import projections_app
from infrastructure.redact import redact, redact_logging
from infrastructure.settings import Settings

app = typer.Typer(
    help="Agent Ledger: event-sourced execution service for AI agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals would print settings, secrets included
)


def _configure_logging(log_level: str) -> None:
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    redact_logging()


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    log_level: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
) -> None:
    """Run the API, the engine and the projector in one process."""
    import uvicorn

    from infrastructure.api.app import create_app

    _configure_logging(log_level)
    settings = Settings()
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


@app.command()
def worker(
    log_level: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
) -> None:
    """Run only the engine: claim executions from the shared store and drive them."""
    from infrastructure.cli.roles import run_until_signalled

    _configure_logging(log_level)
    settings = Settings()
    check_database(settings)
    run_until_signalled(settings, engine=True, projector=False)


@app.command()
def projector(
    log_level: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
) -> None:
    """Run only the projections; several may run, one is active per projection."""
    from infrastructure.cli.roles import run_until_signalled

    _configure_logging(log_level)
    settings = Settings()
    check_database(settings)
    run_until_signalled(settings, engine=False, projector=True)


processes_app = typer.Typer(help="Process definitions.", no_args_is_help=True)


@processes_app.command("apply")
def apply_process(
    file: Annotated[Path, typer.Argument(help="a definition in YAML or JSON", exists=True)],
) -> None:
    """Register a process definition from a file (a changed one becomes a new version)."""
    from infrastructure.cli.processes import apply_file

    try:
        typer.echo(apply_file(Settings(), file))
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="FILE") from None


app.add_typer(processes_app, name="processes")


@app.command()
def token(
    sub: Annotated[str, typer.Option(help="the user id (JWT subject)")],
    roles: Annotated[str, typer.Option(help="comma-separated: user,auditor,admin")] = "user",
    ttl: Annotated[int, typer.Option(help="lifetime in seconds")] = 3600,
) -> None:
    """Print a bearer token signed with the configured secret."""
    settings = Settings()
    try:
        chosen = [r.strip() for r in roles.split(",") if r.strip()]
        typer.echo(issue_token(settings.resolved_jwt_secret(), sub, chosen, ttl))
    except (ValueError, RuntimeError) as error:
        raise typer.BadParameter(str(error)) from None


@app.command()
def demo(
    url: Annotated[
        str, typer.Option(help="base URL of a running server")
    ] = "http://127.0.0.1:8000",
    question: Annotated[
        str, typer.Option(help="the question to ask")
    ] = "Where can we cut our LLM spend?",
    sub: Annotated[str, typer.Option(help="user to run as")] = "demo-user",
) -> None:
    """Run the sample process against a running server, printing its events live."""
    from infrastructure.cli.demo import run_demo

    settings = Settings()
    raise typer.Exit(run_demo(url, question, issue_token(require_jwt_secret(settings), sub)))


db_app = typer.Typer(help="The read-model schema: alembic migrations.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create the store's tables and migrate the read model to the newest revision."""
    from infrastructure.schema import initialize_schema

    initialize_schema(Settings())
    db_current()


@db_app.command("current")
def db_current() -> None:
    """Print the read model's revision and the newest one this code knows."""
    from infrastructure.read_models import migrations
    from infrastructure.store.persistence import read_model_engine

    engine = read_model_engine(Settings())
    try:
        current = migrations.current_revision(engine)
    finally:
        engine.dispose()
    typer.echo(f"{current or 'none'} (head: {migrations.head_revision()})")


@db_app.command("revision")
def db_revision(
    message: Annotated[str, typer.Option("--message", "-m", help="what the revision changes")],
) -> None:
    """Write the next revision: tables.py compared with the database (which must be at head)."""
    from alembic.util import CommandError

    from infrastructure.read_models import migrations
    from infrastructure.store.persistence import read_model_engine

    engine = read_model_engine(Settings())
    try:
        typer.echo(migrations.new_revision(engine, message))
    except CommandError as error:
        raise typer.BadParameter(str(error)) from None
    finally:
        engine.dispose()


app.add_typer(audit_app, name="audit")
app.add_typer(db_app, name="db")
app.add_typer(projections_app, name="projections")


def main() -> None:
    # Threads waiting on the database re-take the GIL sooner: shorter stalls behind
    # threads busy decoding events (the default interval is 5 ms).
    sys.setswitchinterval(0.0005)
    try:
        app()
    except StartupError as error:
        _refuse(str(error))
    except (psycopg.OperationalError, sa.exc.OperationalError) as error:
        _refuse(database_unreachable(_configured_database_url(), error))
    except pydantic.ValidationError as error:
        problems = "; ".join(
            f"AGENT_LEDGER_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}"
            for e in error.errors()
        )
        _refuse(f"invalid setting: {problems}")
    except pydantic_settings.SettingsError as error:
        field = re.search(r'field "(\w+)"', str(error))
        name = f"AGENT_LEDGER_{field[1].upper()}" if field else "a setting"
        _refuse(f"invalid setting: {name} is not valid JSON ({error.__cause__ or error})")


def _refuse(message: str) -> None:
    """One line on stderr, passwords masked, and exit status 1: no traceback."""
    typer.echo(f"agent-ledger: {redact(message)}", err=True)
    raise SystemExit(1)


def _configured_database_url() -> str | None:
    try:
        return Settings().database_url
    except (pydantic.ValidationError, pydantic_settings.SettingsError):
        return None
