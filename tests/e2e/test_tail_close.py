"""A client's close of the WebSocket tail is answered at once and frees its subscription.

One real `agent-ledger serve` on PostgreSQL allows one subscription per user, so whether a
user may subscribe again shows whether the server still counts a closed subscription.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from agent_ledger.application.executions import Executions
from agent_ledger.domain.executions import Execution
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.persistence import open_executions
from tests.support import tokens
from tests.support.server import Server, running_server
from tests.support.tail_clients import ws_url
from tests.support.tail_workload import finished_execution

pytestmark = pytest.mark.postgres

SECRET = f"tail-close-e2e-{uuid.uuid4().hex}{uuid.uuid4().hex}"
PROMPT = 1.0  # seconds: "at once", with room for a busy machine


def token(user: str) -> str:
    return tokens.token(SECRET, user)


@pytest.fixture(scope="module")
def server(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(
        tmp_path_factory.mktemp("tail-close"),
        AGENT_LEDGER_DATABASE_URL=postgres_url,
        AGENT_LEDGER_JWT_SECRET=SECRET,
        AGENT_LEDGER_RUN_ENGINE="false",  # the tests write their events straight to the store
        AGENT_LEDGER_TAIL_HEARTBEAT_INTERVAL="0.5",
        AGENT_LEDGER_TAIL_MAX_PER_USER="1",
    ) as running:
        yield running


@pytest.fixture(scope="module")
def writer(server: Server, postgres_url: str) -> Iterator[Executions]:
    executions = open_executions(Settings(database_url=postgres_url, jwt_secret=SECRET))
    try:
        yield executions
    finally:
        executions.close()


def tail(server: Server, user: str, query: str = "", close_timeout: float = 10) -> ClientConnection:
    """The `websockets` client with its default settings (10 s is its `close_timeout`)."""
    headers = {"Authorization": f"Bearer {token(user)}"}
    url = ws_url(server.url, query)
    return connect(url, additional_headers=headers, close_timeout=close_timeout)


def timed_close(ws: ClientConnection) -> float:
    started = time.monotonic()
    ws.close()
    return time.monotonic() - started


def seconds_until_released(server: Server, user: str, since: float, limit: float = 15.0) -> float:
    """Seconds from `since` until `user` may subscribe again (the server allows one each).

    A subscription the server still counts refuses the next with 4429 at once; one that is
    served gets a message (a heartbeat, or the user's live events). The time is the start
    of the first attempt that was served.
    """
    while time.monotonic() - since < limit:
        attempt = time.monotonic()
        with tail(server, user) as probe:
            try:
                message = json.loads(probe.recv(timeout=10))
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
            else:
                assert "position" in message, message
                return attempt - since
        assert code == 4429, f"refused with {code}, not for holding too many"
    raise AssertionError(f"{user}'s closed subscription still counted after {limit} s")


def test_a_client_closing_an_idle_subscription_is_answered_at_once(server: Server) -> None:
    with tail(server, "idle") as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "heartbeat"  # served, idle
        started = time.monotonic()
        closing = timed_close(ws)

    assert closing < PROMPT, f"close took {closing:.3f} s"
    assert seconds_until_released(server, "idle", started) < PROMPT


def test_a_client_closing_while_events_flow_is_answered_at_once(
    server: Server, writer: Executions
) -> None:
    flowing, stop = threading.Event(), threading.Event()

    def write() -> None:  # an execution's events every 50 ms until the client has gone
        while not stop.is_set():
            writer.save_and_position(finished_execution("flow", thoughts=1))
            flowing.set()
            stop.wait(0.05)

    thread = threading.Thread(target=write, daemon=True)
    try:
        with tail(server, "flow") as ws:
            thread.start()
            assert flowing.wait(10)
            received = 0
            while received < 40:  # several executions' events: the stream is under way
                if json.loads(ws.recv(timeout=10))["type"] != "heartbeat":
                    received += 1
            started = time.monotonic()
            closing = timed_close(ws)
        released = seconds_until_released(server, "flow", started)
    finally:
        stop.set()
        thread.join(timeout=10)

    assert closing < PROMPT, f"close took {closing:.3f} s"
    assert released < PROMPT, f"the subscription was counted {released:.3f} s after the close"


def large_execution(user: str, thoughts: int = 60, size: int = 24_000) -> Execution:
    """An execution whose thoughts are large and incompressible (the tail deflates)."""
    execution = Execution.start(
        user_id=user,
        process_name="echo",
        process_version=1,
        definition={},
        step_ids=["echo"],
        input={},
    )
    execution.schedule_step("echo", 1)
    execution.start_step("echo", 1)
    execution.start_agent("echo", 1, "echo", {})
    for _ in range(thoughts):
        execution.record_thinking("echo", 1, base64.b64encode(os.urandom(size)).decode())
    execution.complete_agent("echo", 1, {}, 1.0)
    execution.complete_step("echo", 1, {})
    execution.complete({})
    return execution


def server_send_queue(server_port: int, client_port: int) -> int:
    """Bytes the server's kernel holds unsent on this connection (Linux's /proc/net/tcp)."""
    local, remote = f":{server_port:04X}", f":{client_port:04X}"
    with open("/proc/net/tcp") as table:
        for line in table:
            fields = line.split()
            if fields[1].endswith(local) and fields[2].endswith(remote):
                return int(fields[4].split(":")[0], 16)
    raise AssertionError(f"no connection from {client_port} to {server_port}")


def wait_until_the_server_stalls(server: Server, ws: ClientConnection) -> None:
    """Until the server's send queue has stopped growing: the client's window is full and
    the server is stuck in a send (the catch-up has far more than both buffers hold)."""
    server_port = urlsplit(server.url).port
    assert server_port is not None
    client_port = ws.socket.getsockname()[1]
    pause, deadline = threading.Event(), time.monotonic() + 30
    readings = [server_send_queue(server_port, client_port)]
    while len(readings) < 4 or len(set(readings[-4:])) > 1 or readings[-1] == 0:
        assert time.monotonic() < deadline, f"the server kept sending: {readings[-5:]}"
        pause.wait(0.05)  # the interval between readings of the queue
        readings.append(server_send_queue(server_port, client_port))


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc/net/tcp")
def test_a_client_closing_while_the_server_is_stuck_sending_frees_its_subscription_at_once(
    server: Server, writer: Executions
) -> None:
    """The client stops reading mid-catch-up, so the server blocks on a full socket, then
    closes. The server has its close frame at once and must let the subscription go then.

    The client's own `close()` waits out its `close_timeout` here whatever the server does:
    `websockets` stops reading the socket once `max_queue` (16) messages wait unread, so it
    never reads the server's answer queued behind them (2 s here, to keep the test short).
    """
    writer.save_and_position(*(large_execution("flood") for _ in range(12)))  # ~25 MB
    closed: list[float] = []
    with tail(server, "flood", "after=0", close_timeout=2) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "execution_started"
        wait_until_the_server_stalls(server, ws)
        closer = threading.Thread(target=lambda: closed.append(timed_close(ws)), daemon=True)
        started = time.monotonic()
        closer.start()
        released = seconds_until_released(server, "flood", started)
        closer.join(timeout=30)

    assert released < PROMPT, f"the subscription was counted {released:.3f} s after the close"
    assert not closer.is_alive()
    assert closed[0] < 2 + PROMPT, f"close took {closed[0]:.3f} s"
