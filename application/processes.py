"""The catalog of registered process definitions (a port, with an in-memory twin)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

from domain.errors import DomainError
from domain.processes import ProcessDefinition


class UnknownProcessError(DomainError):
    """No process is registered under this name (and version)."""

    def __init__(self, name: str, version: int | None = None):
        which = f"{name!r} version {version}" if version is not None else repr(name)
        super().__init__(f"no process {which} is registered")
        self.name = name
        self.version = version


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
        """Validate and register; a changed definition becomes a new version.

        Returns the registered version and whether it is new.
        """

    def get(self, name: str, version: int | None = None) -> RegisteredProcess:
        """The latest version, or the given one; raises `UnknownProcessError`."""

    def peek(self, name: str, version: int | None = None) -> RegisteredProcess | None:
        """What `get` would return, if it is known without I/O; else None."""

    def list_latest(self) -> list[RegisteredProcess]:
        """The latest version of every process, by name."""


class InMemoryProcessCatalog:
    """A process catalog held in memory (tests and the in-memory mode)."""

    def __init__(self) -> None:
        self._versions: dict[str, list[RegisteredProcess]] = {}
        self._lock = threading.Lock()

    def register(self, document: Mapping[str, Any]) -> tuple[RegisteredProcess, bool]:
        definition = ProcessDefinition.from_document(document)
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
