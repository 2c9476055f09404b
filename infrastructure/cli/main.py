"""The `agent-ledger` command line: the command groups wired into one app, and the one-line
refusals every command shares (no traceback, passwords masked)."""

from __future__ import annotations

import re
import sys

import psycopg
import pydantic
import pydantic_settings
import sqlalchemy as sa
import typer

from agent_ledger.infrastructure.cli import run
from agent_ledger.infrastructure.cli.audit import audit_app
from agent_ledger.infrastructure.cli.db import db_app
from agent_ledger.infrastructure.cli.demo import demo
from agent_ledger.infrastructure.cli.preflight import StartupError, database_unreachable
from agent_ledger.infrastructure.cli.processes import processes_app
from agent_ledger.infrastructure.cli.projections import projections_app
from agent_ledger.infrastructure.cli.schedules import schedules_app
from agent_ledger.infrastructure.cli.tokens import token
from agent_ledger.infrastructure.redact import redact
from agent_ledger.infrastructure.settings import Settings

app = typer.Typer(
    help="Agent Ledger: event-sourced execution service for AI agents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals would print settings, secrets included
)
app.command()(run.serve)
app.command()(run.worker)
app.command()(run.projector)
app.add_typer(processes_app, name="processes")
app.command()(token)
app.command()(demo)
app.add_typer(audit_app, name="audit")
app.add_typer(db_app, name="db")
app.add_typer(projections_app, name="projections")
app.add_typer(schedules_app, name="schedules")


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
