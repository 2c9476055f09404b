"""What a newcomer sees when something is missing: the real CLI (and pytest) refuse with one
actionable line, a non-zero status, no traceback and no password."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

AGENT_LEDGER = shutil.which("agent-ledger", path=os.path.dirname(sys.executable))
ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "s3cr3t"
NO_DATABASE = f"postgresql://u:{PASSWORD}@127.0.0.1:1/db"
MASKED = "postgresql://u:***@127.0.0.1:1/db"


def run(args: list[str], env: dict[str, str], timeout: float = 30) -> tuple[int, str]:
    """Exit status and everything printed (stdout and stderr together)."""
    assert AGENT_LEDGER, "the agent-ledger console script is not installed next to python"
    done = subprocess.run(
        [AGENT_LEDGER, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done.returncode, done.stdout


def refused(output: str) -> str:
    """The one line printed; nothing else, no traceback, no password."""
    assert "Traceback" not in output
    assert PASSWORD not in output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    return lines[0]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A clean environment: no AGENT_LEDGER_ setting but a scratch data directory."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_LEDGER_")}
    return {**clean, "AGENT_LEDGER_DATA_DIR": str(tmp_path / "data")}


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_serve_on_postgres_without_a_jwt_secret_is_refused_before_it_starts(
    env: dict[str, str],
) -> None:
    env["AGENT_LEDGER_DATABASE_URL"] = NO_DATABASE
    code, output = run(["serve", "--port", "0"], env)
    assert code == 1
    line = refused(output)
    assert line.startswith("agent-ledger: AGENT_LEDGER_JWT_SECRET is not set"), line
    assert MASKED in line
    assert "serving" not in output


def test_serve_on_a_busy_port_is_refused_before_any_role_starts(
    env: dict[str, str], busy_port: int, tmp_path: Path
) -> None:
    code, output = run(["serve", "--port", str(busy_port)], env)
    assert code == 1
    assert refused(output) == (
        f"agent-ledger: port {busy_port} on 127.0.0.1 is in use: stop what holds it or pass --port"
    )
    assert not (tmp_path / "data").exists()  # no store, no read model, no secret: nothing ran


def test_demo_without_a_server_says_how_to_start_one(env: dict[str, str]) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    code, output = run(["demo", "--url", url], env)
    assert code == 1
    assert refused(output) == f"agent-ledger: no server at {url}: start one with `make run`"


@pytest.mark.parametrize("command", ["serve", "worker", "projector"])
def test_a_role_with_an_unreachable_database_says_which_in_one_line(
    env: dict[str, str], command: str
) -> None:
    env.update(AGENT_LEDGER_DATABASE_URL=NO_DATABASE, AGENT_LEDGER_JWT_SECRET="x" * 40)
    code, output = run([command, *(["--port", "0"] if command == "serve" else [])], env)
    assert code == 1
    assert refused(output) == (
        f"agent-ledger: cannot use the database at {MASKED}: Connection refused; "
        "start PostgreSQL or fix AGENT_LEDGER_DATABASE_URL"
    )


TINY_SUITE = """
import pytest

def test_one(postgres_url):
    pass

def test_two(postgres_admin):
    pass

@pytest.fixture(params=["postgresql", "sqlite"])
def store(request):
    return request.getfixturevalue("postgres_url") if request.param == "postgresql" else None

def test_three(store):
    pass
"""


def test_tests_without_postgres_stop_with_one_message_and_no_password(tmp_path: Path) -> None:
    (tmp_path / "test_tiny.py").write_text(TINY_SUITE)
    environment = {**os.environ, "AGENT_LEDGER_TEST_DATABASE_URL": NO_DATABASE}
    plugins = ["-p", "tests.conftest", "-p", "no:cacheprovider"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *plugins, "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )
    output = done.stdout
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, output
    assert output.count("PostgreSQL is required") == 1, output
    assert f"none answers at {MASKED} (Connection refused)" in output
    assert "AGENT_LEDGER_TEST_DATABASE_URL" in output
    assert "(3 selected tests need it)" in output  # found before any test ran
    assert PASSWORD not in output
    assert "Traceback" not in output
