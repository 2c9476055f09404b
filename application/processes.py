"""The catalog of registered process definitions (a port, with an in-memory twin)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

from agent_ledger.application.agents import AgentRegistry
from agent_ledger.domain.errors import DomainError, InvalidProcessDefinitionError
from agent_ledger.domain.processes import LlmAgent, ProcessDefinition, StepType

DefinitionCheck = Callable[[ProcessDefinition], None]
"""A rule of this deployment a definition must pass to be registered.

It raises `InvalidProcessDefinitionError` naming the step. Checks run at registration only:
a stored definition (and the copy each execution records) is never re-checked on reading.
"""


class UnknownProcessError(DomainError):
    """No process is registered under this name (and version)."""

    def __init__(self, name: str, version: int | None = None):
        which = f"{name!r} version {version}" if version is not None else repr(name)
        super().__init__(f"no process {which} is registered")
        self.name = name
        self.version = version


class UnknownBuiltinAgentError(InvalidProcessDefinitionError):
    """A step names a built-in agent that is not registered."""

    def __init__(self, step_id: str, agent: str, known: Sequence[str]):
        super().__init__(
            f"no built-in agent is registered as {agent!r} (known: {', '.join(known)}); "
            "an agent reached over HTTP is written {url: ...}",
            step_id,
        )
        self.agent = agent
        self.known = tuple(known)


class AgentUrlRefusedError(InvalidProcessDefinitionError):
    """A step's agent URL is refused by the egress rule (the message never holds credentials)."""


def known_agents_check(agents: AgentRegistry) -> DefinitionCheck:
    """A check that every agent named by a step is registered in `agents` (as it is then)."""

    def check(definition: ProcessDefinition) -> None:
        for step in definition.steps:
            name = step.agent
            if step.type is not StepType.AGENT_TASK or not isinstance(name, str):
                continue  # an HTTP agent: the egress rule judges its URL
            if not agents.has_agent(name):
                raise UnknownBuiltinAgentError(step.id, name, agents.agent_names)

    return check


def model_agents_check(
    has_provider: Callable[[str | None], bool], has_tool: Callable[[str], bool]
) -> DefinitionCheck:
    """A check that every model agent names a configured provider and known tools."""

    def check(definition: ProcessDefinition) -> None:
        for step in definition.steps:
            agent = step.agent
            if not isinstance(agent, LlmAgent):
                continue
            if not has_provider(agent.provider):
                which = f"named {agent.provider!r}" if agent.provider else "(the default)"
                raise InvalidProcessDefinitionError(
                    f"no model provider {which} is configured: set AGENT_LEDGER_LLM_BASE_URL "
                    "(and AGENT_LEDGER_LLM_API_KEY), or AGENT_LEDGER_LLM_PROVIDERS",
                    step.id,
                )
            for tool in agent.tools:
                if not has_tool(tool):
                    raise InvalidProcessDefinitionError(
                        f"agent.llm.tools: no tool is registered as {tool!r} "
                        "(built-in, or PUT /v1/tools/{name})",
                        step.id,
                    )

    return check


def run_checks(definition: ProcessDefinition, checks: Iterable[DefinitionCheck]) -> None:
    """Run every registration check on `definition`; the first failure is raised."""
    for check in checks:
        check(definition)


@dataclass(frozen=True)
class RegisteredProcess:
    """One version of a process definition as it was registered."""

    name: str
    version: int
    definition: ProcessDefinition
    content_hash: str

    @cached_property
    def document(self) -> dict[str, Any]:
        """The canonical document, recorded in each execution's first event."""
        return self.definition.to_document()


class ProcessCatalog(Protocol):
    """Where process definitions are registered and looked up."""

    def register(self, document: Mapping[str, Any]) -> tuple[RegisteredProcess, bool]:
        """Validate, run the catalog's checks and register; a changed definition becomes a
        new version.

        Returns the registered version and whether it is new.
        """

    def get(self, name: str, version: int | None = None) -> RegisteredProcess:
        """The latest version, or the given one; raises `UnknownProcessError`."""

    def peek(self, name: str, version: int | None = None) -> RegisteredProcess | None:
        """What `get` would return, if it is known without I/O; else None."""

    def list_latest(self) -> list[RegisteredProcess]:
        """The latest version of every process, by name."""


async def resolve_process(
    catalog: ProcessCatalog, name: str, version: int | None = None
) -> RegisteredProcess:
    """`catalog.get` on an event loop: from what the catalog knows without I/O, else in a
    thread (a process not looked up lately)."""
    process = catalog.peek(name, version)
    if process is None:
        process = await asyncio.to_thread(catalog.get, name, version)
    return process


class InMemoryProcessCatalog:
    """A process catalog held in memory (tests and the in-memory mode)."""

    def __init__(self, checks: Sequence[DefinitionCheck] = ()) -> None:
        self._versions: dict[str, list[RegisteredProcess]] = {}
        self._lock = threading.Lock()
        self.checks = tuple(checks)

    def register(self, document: Mapping[str, Any]) -> tuple[RegisteredProcess, bool]:
        definition = ProcessDefinition.from_document(document)
        run_checks(definition, self.checks)
        digest = definition.content_hash()
        with self._lock:
            versions = self._versions.setdefault(definition.name, [])
            if versions and versions[-1].content_hash == digest:
                return versions[-1], False
            registered = RegisteredProcess(definition.name, len(versions) + 1, definition, digest)
            versions.append(registered)
            return registered, True

    def peek(self, name: str, version: int | None = None) -> RegisteredProcess | None:
        try:
            return self.get(name, version)
        except UnknownProcessError:
            return None

    def get(self, name: str, version: int | None = None) -> RegisteredProcess:
        versions = self._versions.get(name, [])
        if version is None and versions:
            return versions[-1]
        if version is not None and 1 <= version <= len(versions):
            return versions[version - 1]
        raise UnknownProcessError(name, version)

    def list_latest(self) -> list[RegisteredProcess]:
        return [versions[-1] for _, versions in sorted(self._versions.items()) if versions]
