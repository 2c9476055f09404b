"""The process catalog in SQL: every registered version kept, the latest wins."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from agent_ledger.application.processes import (
    DefinitionCheck,
    RegisteredProcess,
    UnknownProcessError,
    run_checks,
)
from agent_ledger.domain.processes import ProcessDefinition
from agent_ledger.infrastructure.read_models.tables import process_definitions as table

_PARSED: dict[tuple[str, int, str], RegisteredProcess] = {}


def _registered(record: Any) -> RegisteredProcess:
    """A stored version, parsed once: versions never change once registered."""
    key = (record.name, record.version, record.content_hash)
    found = _PARSED.get(key)
    if found is None:
        definition = ProcessDefinition.from_document(record.document)
        found = RegisteredProcess(record.name, record.version, definition, record.content_hash)
        if len(_PARSED) > 1024:
            _PARSED.clear()
        _PARSED[key] = found
    return found


class SqlProcessCatalog:
    """Process definitions in the read-model database; `checks` run on each registration."""

    def __init__(
        self, engine: sa.Engine, latest_ttl: float = 1.0, checks: Sequence[DefinitionCheck] = ()
    ):
        self.engine = engine
        self.latest_ttl = latest_ttl
        self.checks = tuple(checks)
        # name → (when looked up, latest version): every start asks for the latest
        self._latest_seen: dict[str, tuple[float, RegisteredProcess]] = {}
        self._versions: dict[tuple[str, int], RegisteredProcess] = {}
        # when the latest expires, the many starts waiting on it share one lookup
        self._lookup = threading.Lock()

    def register(self, document: Mapping[str, Any]) -> tuple[RegisteredProcess, bool]:
        definition = ProcessDefinition.from_document(document)
        run_checks(definition, self.checks)
        digest = definition.content_hash()
        for _ in range(3):  # a concurrent registration of the same name takes the version
            with self.engine.begin() as connection:
                latest = self._latest(connection, definition.name)
                if latest is not None and latest.content_hash == digest:
                    return _registered(latest), False
                version = 1 if latest is None else latest.version + 1
                try:
                    connection.execute(
                        sa.insert(table).values(
                            name=definition.name,
                            version=version,
                            content_hash=digest,
                            document=definition.to_document(),
                            registered_at=datetime.now(UTC),
                        )
                    )
                except sa.exc.IntegrityError:
                    continue
            self._latest_seen.pop(definition.name, None)
            return RegisteredProcess(definition.name, version, definition, digest), True
        raise RuntimeError(f"could not register process {definition.name!r}: too much contention")

    def peek(self, name: str, version: int | None = None) -> RegisteredProcess | None:
        """`get` without a query: the version if already known (latest: seen recently)."""
        if version is not None:
            return self._versions.get((name, version))
        seen = self._latest_seen.get(name)
        if seen is not None and time.monotonic() - seen[0] < self.latest_ttl:
            return seen[1]
        return None

    def get(self, name: str, version: int | None = None) -> RegisteredProcess:
        """The given version, or the latest (as seen at most `latest_ttl` seconds ago)."""
        known = self.peek(name, version)
        if known is not None:
            return known
        with self._lookup:
            return self.peek(name, version) or self._look_up(name, version)

    def _look_up(self, name: str, version: int | None) -> RegisteredProcess:
        with self.engine.connect() as connection:
            if version is None:
                record = self._latest(connection, name)
            else:
                record = connection.execute(
                    sa.select(table).where(table.c.name == name, table.c.version == version)
                ).first()
        if record is None:
            raise UnknownProcessError(name, version)
        registered = _registered(record)
        if version is None:
            self._latest_seen[name] = (time.monotonic(), registered)
        if len(self._versions) > 1024:
            self._versions.clear()
        self._versions[(name, registered.version)] = registered  # versions never change
        return registered

    def list_latest(self) -> list[RegisteredProcess]:
        latest = (
            sa.select(table.c.name, sa.func.max(table.c.version).label("version"))
            .group_by(table.c.name)
            .subquery()
        )
        query = (
            sa.select(table)
            .join(
                latest, sa.and_(table.c.name == latest.c.name, table.c.version == latest.c.version)
            )
            .order_by(table.c.name)
        )
        with self.engine.connect() as connection:
            return [_registered(r) for r in connection.execute(query)]

    @staticmethod
    def _latest(connection: sa.Connection, name: str) -> Any:
        return connection.execute(
            sa.select(table).where(table.c.name == name).order_by(table.c.version.desc()).limit(1)
        ).first()
