"""`agent-ledger processes apply FILE`: register a definition straight into the store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from agent_ledger.application.storable_text import UnstorableTextError, check_storable
from agent_ledger.domain.errors import InvalidProcessDefinitionError
from agent_ledger.infrastructure.settings import Settings

processes_app = typer.Typer(help="Process definitions.", no_args_is_help=True)


@processes_app.command("apply")
def apply_process(
    file: Annotated[Path, typer.Argument(help="a definition in YAML or JSON", exists=True)],
) -> None:
    """Register a process definition from a file (a changed one becomes a new version)."""
    try:
        typer.echo(apply_file(Settings(), file))
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="FILE") from None


def load_document(path: Path) -> dict[str, Any]:
    """A definition document from YAML (.yaml/.yml) or JSON."""
    import yaml  # imported here: every other command starts without it

    text = path.read_text()
    try:
        document = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{path} is not valid {path.suffix.lstrip('.') or 'JSON'}: {error}"
        ) from None
    if not isinstance(document, dict):
        raise ValueError(f"{path} must hold one mapping (the process definition)")
    try:
        check_storable(document, "definition")
    except UnstorableTextError as error:
        raise ValueError(f"{path}: {error}") from None
    return document


def apply_file(settings: Settings, path: Path) -> str:
    """Validate, check as the API does (built-in agents, the egress rule) and register;
    returns a line saying which version is now registered."""
    # imported here: every other command starts without the runtime's modules
    from agent_ledger.application.agents import AgentRegistry
    from agent_ledger.application.builtin_agents import register_builtin_agents
    from agent_ledger.infrastructure.catalog.sql import SqlProcessCatalog
    from agent_ledger.infrastructure.runtime import registration_checks
    from agent_ledger.infrastructure.schema import initialize_schema
    from agent_ledger.infrastructure.store.persistence import read_model_engine

    document = load_document(path)
    agents = AgentRegistry()
    register_builtin_agents(agents)
    initialize_schema(settings)
    engine = read_model_engine(settings)
    checks = registration_checks(settings, agents, engine)  # HTTP tools are in its tables
    try:
        registered, created = SqlProcessCatalog(engine, checks=checks).register(document)
    except InvalidProcessDefinitionError as error:
        raise ValueError(str(error)) from None
    finally:
        engine.dispose()
    state = "registered as" if created else "unchanged at"
    return f"{registered.name} {state} version {registered.version}"
