"""Checks a command makes before it starts anything: each failure is one actionable line."""

from __future__ import annotations

import errno
import socket

import psycopg
import sqlalchemy as sa

from agent_ledger.infrastructure.redact import mask_url, redact
from agent_ledger.infrastructure.settings import Settings

CONNECT_TIMEOUT = 5


class StartupError(Exception):
    """A command cannot start; the message says why and what to do (no traceback)."""


def require_jwt_secret(settings: Settings) -> str:
    """The JWT secret, or a StartupError naming the variable to set."""
    try:
        return settings.resolved_jwt_secret()
    except OSError as error:  # embedded mode keeps a generated secret in the data directory
        raise StartupError(
            f"cannot keep the JWT secret in {settings.data_dir}: {error.strerror or error}; "
            "set AGENT_LEDGER_DATA_DIR to a writable directory"
        ) from None
    except RuntimeError:
        raise StartupError(
            "AGENT_LEDGER_JWT_SECRET is not set: with PostgreSQL "
            f"({mask_url(settings.database_url)}) every process needs the same secret; "
            'set it, e.g. export AGENT_LEDGER_JWT_SECRET="$(openssl rand -base64 48)"'
        ) from None


def check_database(settings: Settings) -> None:
    """Connect once to the configured PostgreSQL (nothing to do for embedded SQLite)."""
    if not settings.uses_postgres:
        return
    from agent_ledger.infrastructure.store.persistence import libpq_dsn

    try:
        with psycopg.connect(libpq_dsn(settings), connect_timeout=CONNECT_TIMEOUT) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as error:
        raise StartupError(database_unreachable(settings.database_url, error)) from None


def database_unreachable(url: str | None, error: BaseException) -> str:
    """One line: which database (password masked), the driver's reason, what to do."""
    return (
        f"cannot use the database at {mask_url(url)}: {connection_failure(error)}; "
        "start PostgreSQL or fix AGENT_LEDGER_DATABASE_URL"
    )


def connection_failure(error: BaseException) -> str:
    """The driver's reason in a few words, e.g. `Connection refused`, credentials masked."""
    if isinstance(error, sa.exc.DBAPIError) and error.orig is not None:
        error = error.orig
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    failures = [line for line in lines if "failed: " in line]
    reason = (failures[-1] if failures else lines[0] if lines else type(error).__name__).rsplit(
        "failed: ", 1
    )[-1]
    return redact(reason.removeprefix("FATAL:").strip())


def bind_port(host: str, port: int) -> socket.socket:
    """A listening socket on host:port for uvicorn, or a StartupError if it cannot be had.

    Bound before any role starts, so a busy port stops `serve` before the worker and the
    projector run; the socket is handed to uvicorn, so nothing can take the port in between.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        sock.bind((host, port))
        sock.listen(2048)  # with SO_REUSEADDR a port in use may only show here
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise StartupError(
                f"port {port} on {host} is in use: stop what holds it or pass --port"
            ) from None
        if error.errno == errno.EACCES:
            raise StartupError(
                f"no permission to listen on port {port} on {host}: pass --port above 1023"
            ) from None
        raise StartupError(
            f"cannot listen on {host} port {port}: {error.strerror or error}; "
            "check --host and --port"
        ) from None
    return sock
