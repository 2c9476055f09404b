"""One active projector per projection: a PostgreSQL advisory lock, or a file lock (SQLite)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
import zlib
from pathlib import Path
from typing import IO, Protocol

import psycopg

from agent_ledger.application.backoff import describe
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.persistence import libpq_dsn

log = logging.getLogger(__name__)


class ProjectionLocks(Protocol):
    """Which projections this process may run; held until the process (or lock) dies."""

    def try_acquire(self, name: str) -> bool: ...

    def release_all(self) -> None: ...


def lock_key(name: str) -> int:
    return zlib.crc32(f"agent-ledger:projection:{name}".encode())


class AdvisoryLocks:
    """Session advisory locks on one dedicated connection: a dead holder's locks vanish with it."""

    def __init__(self, dsn: str, check_interval: float = 1.0):
        self.dsn = dsn
        self.check_interval = check_interval
        self._connection: psycopg.Connection[tuple[object, ...]] | None = None
        self._held: set[str] = set()
        self._checked = 0.0

    def try_acquire(self, name: str) -> bool:
        """True if this process holds (or just took) the projection's lock."""
        try:
            connection = self._connect()
            if name in self._held:
                return True
            row = connection.execute(
                "SELECT pg_try_advisory_lock(%s)", (lock_key(name),)
            ).fetchone()
        except psycopg.Error as error:
            if self._held:  # once per loss, not on every try to reconnect
                log.warning(
                    "lost the projection locks (%s); taking them again once connected",
                    describe(error),
                )
            self._drop()
            return False
        if row is not None and row[0]:
            self._held.add(name)
            log.info("projector is active for %s", name)
            return True
        return False

    def release_all(self) -> None:
        self._drop()

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._connection is None or self._connection.closed:
            self._held.clear()
            self._connection = psycopg.connect(
                self.dsn, autocommit=True, application_name=f"agent-ledger projector {os.getpid()}"
            )
            self._checked = time.monotonic()
        elif self._held and time.monotonic() - self._checked > self.check_interval:
            self._connection.execute("SELECT 1")  # a broken connection means the locks are gone
            self._checked = time.monotonic()
        return self._connection

    def _drop(self) -> None:
        self._held.clear()
        if self._connection is not None:
            with contextlib.suppress(psycopg.Error):
                self._connection.close()
            self._connection = None


class FileLocks:
    """`flock` on a file per projection in the data directory (embedded mode)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._files: dict[str, IO[bytes]] = {}

    def try_acquire(self, name: str) -> bool:
        if name in self._files:
            return True
        self.directory.mkdir(parents=True, exist_ok=True)
        handle = (self.directory / f"projector-{name}.lock").open("ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        handle.write(f"{os.getpid()}\n".encode())
        handle.flush()
        self._files[name] = handle
        return True

    def release_all(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()


def projection_locks(settings: Settings) -> ProjectionLocks:
    """Advisory locks on PostgreSQL; file locks in the data directory otherwise."""
    if settings.uses_postgres:
        return AdvisoryLocks(libpq_dsn(settings))
    return FileLocks(settings.data_dir)
