"""A real `agent-ledger serve` process, started and stopped by a test, and its environment."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import httpx
import pytest
from websockets.sync.client import connect

from tests.support.walking_skeleton import Message, ends

AGENT_LEDGER = shutil.which("agent-ledger", path=os.path.dirname(sys.executable))
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Server:
    """One `agent-ledger serve` process at a time, on a fixed data directory or database."""

    def __init__(self, env: dict[str, str], log_path: Path):
        assert AGENT_LEDGER, "the agent-ledger console script is not installed next to python"
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self._log: TextIO | None = None

    def start(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._log = self.log_path.open("a")
        self.process = subprocess.Popen(
            [AGENT_LEDGER, "serve", "--port", str(port)],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            try:  # the pause between polls doubles as the check that it is still running
                code = self.process.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                continue
            pytest.fail(f"the server exited with {code}:\n{self.log()}")
        pytest.fail(f"the server did not answer /healthz within {START_TIMEOUT}s:\n{self.log()}")

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time; returns the exit code."""
        if self.process is None:
            return None
        process, self.process = self.process, None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)
        if self._log is not None:
            self._log.close()
            self._log = None
        return process.returncode

    def restart(self) -> int | None:
        code = self.stop()
        self.start()
        return code

    def log(self) -> str:
        return self.log_path.read_text()[-4000:] if self.log_path.exists() else ""

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        assert AGENT_LEDGER
        return subprocess.run(
            [AGENT_LEDGER, *args],
            env=self.env,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=timeout,
            check=False,
        )

    def token(self, user: str, *extra: str) -> str:
        minted = self.cli("token", "--sub", user, *extra)
        assert minted.returncode == 0, minted.stderr
        return minted.stdout.strip()

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def store_position(self) -> int:
        body = httpx.get(f"{self.url}/readyz", timeout=10).json()
        assert body["status"] == "ready", body
        position: int = body["store_position"]
        return position

    def follow(
        self, execution_id: str, *, token: str, query: str = "after=0", in_query: bool = False
    ) -> list[Message]:
        """Read the live tail until `execution_id` ends."""
        url = self.url.replace("http", "ws", 1) + f"/v1/stream?{query}"
        headers = {}
        if in_query:
            url += f"&access_token={token}"
        else:
            headers["Authorization"] = f"Bearer {token}"
        messages: list[Message] = []
        with connect(url, additional_headers=headers, open_timeout=10, close_timeout=5) as ws:
            while not messages or not ends(messages[-1], execution_id):
                messages.append(json.loads(ws.recv(timeout=10)))
        return messages


def clean_environment(**settings: str) -> dict[str, str]:
    """This process's environment without any `AGENT_LEDGER_` setting, plus `settings`
    (`AGENT_LEDGER_...` names) and UTF-8 output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_LEDGER_")}
    env.update(PYTHONIOENCODING="utf-8", **settings)
    return env


@contextmanager
def running_server(data_dir: Path, **settings: str) -> Iterator[Server]:
    """A started server on `data_dir` (its log is `server.log` there), stopped afterwards."""
    running = Server(
        clean_environment(AGENT_LEDGER_DATA_DIR=str(data_dir), **settings),
        data_dir / "server.log",
    )
    try:
        running.start()
        yield running
    finally:
        running.stop()


def start(server: Server, token: str, body: dict[str, Any], **headers: str) -> str:
    """Start an execution through the API; its id."""
    with server.client(token) as client:
        response = client.post("/v1/executions", json=body, headers=headers)
    assert response.status_code == 201, response.text
    execution_id: str = response.json()["id"]
    return execution_id
