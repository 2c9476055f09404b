"""A PostgreSQL server of a test's own (`initdb` + `pg_ctl` in a temporary directory), which
the test may stop and start at will; the shared server on 5432 is never touched.

`initdb` refuses to run as root, so as root (CI) every server command runs as the `postgres`
system user, in a directory that user owns. Without the binaries the test fails loudly.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest

BIN_ENV = "AGENT_LEDGER_TEST_PG_BIN"
"""A directory holding `initdb` and `pg_ctl`, if not found by themselves."""

SERVER_USER = "postgres"


def find_bindir() -> Path:
    """Where `initdb` and `pg_ctl` are: $AGENT_LEDGER_TEST_PG_BIN, the PATH, or the newest
    /usr/lib/postgresql/*/bin (Debian and Ubuntu keep them off the PATH)."""
    candidates = [os.environ.get(BIN_ENV, "")]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda path: int(Path(path).parent.name) if Path(path).parent.name.isdigit() else 0,
        reverse=True,
    )
    for candidate in filter(None, candidates):
        if all((Path(candidate) / tool).is_file() for tool in ("initdb", "pg_ctl")):
            return Path(candidate)
    pytest.fail(
        "this test runs a PostgreSQL server of its own and found no initdb and pg_ctl "
        f"(looked in ${BIN_ENV}, the PATH and /usr/lib/postgresql/*/bin): install the "
        f"PostgreSQL server package or point {BIN_ENV} at its bin directory",
        pytrace=False,
    )


class PrivatePostgres:
    """One cluster in a temporary directory, on 127.0.0.1:`port`, with a password."""

    def __init__(self, port: int):
        self.bindir = find_bindir()
        self.port = port
        self.password = secrets.token_hex(16)
        self.root = Path(tempfile.mkdtemp(prefix="agent-ledger-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as_server_user = os.geteuid() == 0
        if self._as_server_user:
            try:
                account = pwd.getpwnam(SERVER_USER)
            except KeyError:
                pytest.fail(
                    f"running as root, this test needs the {SERVER_USER!r} system user to run "
                    "initdb (which refuses root)",
                    pytrace=False,
                )
            os.chown(self.root, account.pw_uid, account.pw_gid)

    @property
    def url(self) -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str, timeout: float = 60) -> None:
        prefix = ["runuser", "-u", SERVER_USER, "--"] if self._as_server_user else []
        done = subprocess.run(
            [*prefix, *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.root,
        )
        if done.returncode != 0:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            pytest.fail(
                f"{' '.join(command)} exited with {done.returncode}:\n{done.stdout}\n"
                f"{done.stderr}\n{tail}",
                pytrace=False,
            )

    def init(self) -> None:
        """Create the cluster: password logins over TCP, fsync off (a test's data)."""
        password_file = self.root / "password"
        password_file.write_text(self.password + "\n")
        if self._as_server_user:
            account = pwd.getpwnam(SERVER_USER)
            os.chown(password_file, account.pw_uid, account.pw_gid)
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={password_file}",
            "--no-sync",
        )
        password_file.unlink()
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\n"
                "max_connections = 100\n"
                "shared_buffers = 32MB\n"
                "fsync = off\n"  # an immediate stop still loses nothing: the OS keeps the WAL
            )

    def start(self) -> None:
        """Start and wait until the server accepts connections (after crash recovery)."""
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        """`pg_ctl stop -m fast` (sessions ended, clean shutdown) or `immediate` (a crash)."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url, autocommit=True, connect_timeout=5)

    def remove(self) -> None:
        """Stop (immediately, if still running) and delete the cluster."""
        try:
            if self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
