"""`agent-ledger db upgrade | current | revision`: the read-model schema's migrations."""

from __future__ import annotations

from typing import Annotated

import typer

from agent_ledger.infrastructure.settings import Settings

db_app = typer.Typer(help="The read-model schema: alembic migrations.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create the store's tables and migrate the read model to the newest revision."""
    from agent_ledger.infrastructure.schema import initialize_schema

    initialize_schema(Settings())
    db_current()


@db_app.command("current")
def db_current() -> None:
    """Print the read model's revision and the newest one this code knows."""
    from agent_ledger.infrastructure.read_models import migrations
    from agent_ledger.infrastructure.store.persistence import read_model_engine

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

    from agent_ledger.infrastructure.read_models import migrations
    from agent_ledger.infrastructure.store.persistence import read_model_engine

    engine = read_model_engine(Settings())
    try:
        typer.echo(migrations.new_revision(engine, message))
    except CommandError as error:
        raise typer.BadParameter(str(error)) from None
    finally:
        engine.dispose()
