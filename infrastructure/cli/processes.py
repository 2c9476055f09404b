"""`agent-ledger processes apply FILE`: register a definition straight into the store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from application.agents import AgentRegistry
from application.builtin_agents import register_builtin_agents
from application.storable_text import UnstorableTextError, check_storable
from domain.errors import InvalidProcessDefinitionError
from infrastructure.catalog.sql import SqlProcessCatalog
from infrastructure.runtime import registration_checks
from infrastructure.schema import initialize_schema
from infrastructure.settings import Settings
from infrastructure.store.persistence import read_model_engine


def load_document(path: Path) -> dict[str, Any]:
    """A definition document from YAML (.yaml/.yml) or JSON."""
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
    document = load_document(path)
    agents = AgentRegistry()
    register_builtin_agents(agents)
    checks = registration_checks(settings, agents)
    initialize_schema(settings)
    engine = read_model_engine(settings)
    try:
        registered, created = SqlProcessCatalog(engine, checks=checks).register(document)
    except InvalidProcessDefinitionError as error:
        raise ValueError(str(error)) from None
    finally:
        engine.dispose()
    state = "registered as" if created else "unchanged at"
    return f"{registered.name} {state} version {registered.version}"
