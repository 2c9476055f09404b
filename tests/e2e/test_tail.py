"""The live tail over two real `agent-ledger serve` processes on one PostgreSQL database."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from agent_ledger.application.executions import Executions
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.persistence import open_executions
from tests.support import tokens
from tests.support.server import Server, clean_environment
from tests.support.tail_clients import Message, SseStream, sse, websocket
from tests.support.tail_workload import append, positions_by_user
from tests.support.walking_skeleton import assert_problem

pytestmark = pytest.mark.postgres

SECRET = f"tail-e2e-{uuid.uuid4().hex}{uuid.uuid4().hex}"


def token(user: str, *roles: str, ttl: int = 600) -> str:
    return tokens.token(SECRET, user, *roles, ttl=ttl)


@dataclass
class Cluster:
    """Server A runs every role; B serves the API alone and polls only once a minute, so
    that only PostgreSQL notifications bring it other processes' events in time."""

    a: Server
    b: Server
    writer: Executions


@pytest.fixture(scope="module")
def cluster(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = clean_environment(
        AGENT_LEDGER_DATABASE_URL=postgres_url,
        AGENT_LEDGER_JWT_SECRET=SECRET,
        AGENT_LEDGER_TAIL_HEARTBEAT_INTERVAL="0.5",
        AGENT_LEDGER_TAIL_MAX_PER_USER="6",
        AGENT_LEDGER_REVOCATION_CHECK_INTERVAL="0.3",
    )
    servers: list[Server] = []
    for name, extra in (
        ("a", {}),
        ("b", {"AGENT_LEDGER_RUN_ENGINE": "false", "AGENT_LEDGER_POLL_INTERVAL": "60"}),
    ):
        data_dir: Path = tmp_path_factory.mktemp(f"tail-{name}")
        servers.append(
            Server(
                {**base, **extra, "AGENT_LEDGER_DATA_DIR": str(data_dir)}, data_dir / "server.log"
            )
        )
    writer: Executions | None = None
    try:
        for server in servers:
            server.start()
        writer = open_executions(Settings(database_url=postgres_url, jwt_secret=SECRET))
        yield Cluster(servers[0], servers[1], writer)
    finally:
        for server in servers:
            server.stop()
        if writer is not None:
            writer.close()


def ws_events(ws: ClientConnection, last: int) -> list[Message]:
    """Events (heartbeats skipped) until the one at position `last`."""
    found: list[Message] = []
    while not found or found[-1]["position"] < last:
        message = json.loads(ws.recv(timeout=10))
        if message["type"] != "heartbeat":
            found.append(message)
    return found


def sse_events(stream: SseStream, last: int) -> list[Message]:
    found: list[Message] = []
    while not found or found[-1]["position"] < last:
        event, ident, message = stream.next()
        if event == "message":
            assert ident == str(message["position"])
            found.append(message)
    return found


def read_forever(ws: ClientConnection, limit: float = 30.0) -> None:
    """Read (heartbeats included) until the connection closes, for at most `limit` seconds."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        ws.recv(timeout=10)
    raise AssertionError(f"the server did not close the connection within {limit} s")


def closed_code(ws: ClientConnection) -> int:
    """Read until the server closes the connection; its close code."""
    with pytest.raises(ConnectionClosed) as closed:
        read_forever(ws)
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd.code


def sse_close(stream: SseStream) -> Message:
    """Read until the server's `close` message."""
    while True:
        event, _, message = stream.next()
        if event == "close":
            return message


def test_an_event_written_through_one_api_process_reaches_a_subscriber_of_the_other(
    cluster: Cluster,
) -> None:
    alice = token("alice")
    head = cluster.b.store_position()
    received: list[Message] = []

    with websocket(cluster.b.url, alice, f"after={head}") as ws:
        with cluster.a.client(alice) as a:
            started = a.post("/v1/executions", json={"process": "echo", "input": {"hi": 1}})
        assert started.status_code == 201, started.text
        while not received or received[-1]["type"] != "execution_completed":
            message = json.loads(ws.recv(timeout=10))
            if message["type"] != "heartbeat":
                received.append(message)

    assert received[0]["type"] == "execution_started"
    assert {m["execution_id"] for m in received} == {started.json()["id"]}
    assert [m["position"] for m in received] == sorted({m["position"] for m in received})


def test_a_live_only_subscriber_sees_every_event_of_what_it_starts_once_connected(
    cluster: Cluster,
) -> None:
    for _ in range(15):  # a new user each time: nobody followed its events before
        user = token(f"live-{uuid.uuid4().hex[:8]}")
        with websocket(cluster.a.url, user) as ws, cluster.a.client(user) as a:
            started = a.post("/v1/executions", json={"process": "echo", "input": {"n": 1}})
            assert started.status_code == 201, started.text
            types: list[str] = []
            while not types or types[-1] != "execution_completed":
                message = json.loads(ws.recv(timeout=10))
                if message["type"] != "heartbeat":
                    assert message["execution_id"] == started.json()["id"]
                    types.append(message["type"])
        assert types[0] == "execution_started"


def test_sse_and_websocket_deliver_the_same_events_and_sse_resumes_by_last_event_id(
    cluster: Cluster,
) -> None:
    for _ in range(3):
        append(cluster.writer, ["sam", "someone-else"])
    expected = positions_by_user(cluster.writer, ["sam"])["sam"]
    middle = expected[len(expected) // 2]

    with websocket(cluster.a.url, token("sam"), "after=0") as ws:
        over_ws = ws_events(ws, expected[-1])
    with sse(cluster.b.url, token("sam"), "after=0") as stream:
        first = sse_events(stream, middle)
    with sse(cluster.b.url, token("sam"), "after=0", last_event_id=middle) as stream:
        rest = sse_events(stream, expected[-1])

    assert [m["position"] for m in over_ws] == expected
    assert first + rest == over_ws


def test_an_idle_subscription_gets_heartbeats_that_carry_a_resume_position(
    cluster: Cluster,
) -> None:
    head = append(cluster.writer, ["someone-else"])

    with websocket(cluster.b.url, token("idle")) as ws:
        over_ws = json.loads(ws.recv(timeout=10))
    with sse(cluster.a.url, token("idle")) as stream:
        event, ident, over_sse = stream.next()

    assert over_ws == {"type": "heartbeat", "position": over_ws["position"]}
    assert over_ws["position"] >= head
    assert (event, ident) == ("heartbeat", str(over_sse["position"]))
    assert over_sse["type"] == "heartbeat"
    assert over_sse["position"] >= head


def test_a_user_may_hold_only_so_many_subscriptions(cluster: Cluster) -> None:
    held = [websocket(cluster.a.url, token("greedy")) for _ in range(6)]
    for connection in held:
        # a first message (a heartbeat) shows the subscription is registered and serving
        connection.__enter__().recv(timeout=10)
    try:
        with websocket(cluster.a.url, token("greedy")) as ws:
            code = closed_code(ws)
        with cluster.a.client(token("greedy")) as client:
            refused = client.get("/v1/stream/sse")
    finally:
        for connection in held:
            connection.__exit__(None, None, None)

    assert code == 4429
    assert_problem(refused, 429, "too-many-subscriptions")


def test_a_subscription_ends_when_its_token_expires(cluster: Cluster) -> None:
    short = token("brief", ttl=2)

    with websocket(cluster.a.url, short) as ws, sse(cluster.b.url, short) as stream:
        code = closed_code(ws)
        closed = sse_close(stream)

    assert code == 4401
    assert closed["code"] == 4401
    assert "expired" in closed["reason"]


def test_revoking_a_subjects_tokens_ends_its_subscriptions_on_every_process(
    cluster: Cluster,
) -> None:
    revoked = token("leaver")
    with websocket(cluster.a.url, revoked) as ws, sse(cluster.b.url, revoked) as stream:
        with cluster.a.client(token("root", "admin")) as admin:
            answer = admin.post("/v1/auth/revocations", json={"sub": "leaver"})
            malformed = admin.post("/v1/auth/revocations", json={"sub": ""})
        code = closed_code(ws)
        closed = sse_close(stream)
    with cluster.a.client(token("bystander")) as user:  # not revoked, not an admin
        not_admin = user.post("/v1/auth/revocations", json={"sub": "root"})
    with websocket(cluster.b.url, revoked) as ws:
        reopened = closed_code(ws)

    assert answer.status_code == 201, answer.text
    assert answer.json()["sub"] == "leaver"
    assert code == 4403
    assert closed["code"] == 4403
    assert "revoked" in closed["reason"]
    assert reopened == 4403
    assert_problem(not_admin, 403, "forbidden")
    assert_problem(malformed, 422, "invalid-request")


USERS = [f"crowd-{n:02d}" for n in range(25)]
ROUNDS = 34  # x 25 users x 12 events: 10,200 events


@dataclass
class Client:
    """Follows one user's events, dropping the connection at random and resuming."""

    user: str
    transport: str
    servers: list[Server]
    seed: int
    received: list[Message]
    reconnects: int = 0
    resume: int = 0
    closes: list[int] = field(default_factory=list)

    def run(self, done: threading.Event, targets: dict[str, int], deadline: float) -> None:
        rng = random.Random(self.seed)
        while time.monotonic() < deadline:
            server = rng.choice(self.servers)
            try:
                if self._follow(server, rng.randint(1, 120), done, targets):
                    return
            except ConnectionClosed as closed:  # 4408 (too slow) and 4429 are resumable
                self.closes.append(closed.rcvd.code if closed.rcvd else 1006)
            except (EOFError, httpx.TransportError):
                pass
            self.reconnects += 1

    def _follow(
        self, server: Server, budget: int, done: threading.Event, targets: dict[str, int]
    ) -> bool:
        query = f"after={self.resume}"
        if self.transport == "ws":
            with websocket(server.url, token(self.user), query) as ws:
                return self._read(lambda: json.loads(ws.recv(timeout=10)), budget, done, targets)
        with sse(server.url, token(self.user), last_event_id=self.resume) as stream:
            return self._read(lambda: stream.next()[2], budget, done, targets)

    def _read(
        self,
        receive: Callable[[], Message],
        budget: int,
        done: threading.Event,
        targets: dict[str, int],
    ) -> bool:
        while budget > 0:
            message = receive()
            if message["type"] != "heartbeat":
                self.received.append(message)
                budget -= 1
            self.resume = max(self.resume, message["position"])
            if (
                done.is_set()
                and self.received
                and self.received[-1]["position"] >= targets[self.user]
            ):
                return True
            if done.is_set() and not self.received and targets[self.user] == 0:
                return True
        return False


def test_clients_that_reconnect_at_random_receive_each_of_their_events_exactly_once_in_order(
    cluster: Cluster,
) -> None:
    done = threading.Event()
    targets: dict[str, int] = {}
    deadline = time.monotonic() + 100
    clients = [
        Client(user, transport, [cluster.a, cluster.b], seed, [])
        for seed, (user, transport) in enumerate((u, t) for u in USERS for t in ("ws", "sse"))
    ]
    threads = [
        threading.Thread(target=c.run, args=(done, targets, deadline), daemon=True) for c in clients
    ]
    for thread in threads:
        thread.start()
    pace = threading.Event()
    for _ in range(ROUNDS):
        append(cluster.writer, USERS)
        pace.wait(0.1)  # spread the writes over a few seconds, so reconnects overlap them
    expected = positions_by_user(cluster.writer, USERS)
    targets.update({user: positions[-1] for user, positions in expected.items()})
    done.set()
    for thread in threads:
        thread.join(timeout=max(1.0, deadline - time.monotonic()))

    assert not [t for t in threads if t.is_alive()], "some clients never caught up"
    assert sum(len(p) for p in expected.values()) >= 10_000
    for client in clients:
        assert {m["user_id"] for m in client.received} == {client.user}, client
        assert [m["position"] for m in client.received] == expected[client.user], client.user
    assert sum(c.reconnects for c in clients) >= 3 * len(clients)
    assert {code for c in clients for code in c.closes} <= {4408, 4429}
    print(  # shown with -s: how hard the run was
        f"{sum(len(p) for p in expected.values())} events, "
        f"{sum(c.reconnects for c in clients)} reconnects, closes: "
        f"{sorted({code for c in clients for code in c.closes})}"
    )


def test_stopping_a_server_closes_its_subscribers_with_a_code_that_says_reconnect(
    cluster: Cluster,
) -> None:
    with (
        websocket(cluster.b.url, token("stayer")) as ws,
        sse(cluster.b.url, token("stayer")) as stream,
    ):
        assert json.loads(ws.recv(timeout=10))["type"] == "heartbeat"  # both are live now
        assert stream.next()[0] == "heartbeat"
        assert cluster.b.process is not None
        cluster.b.process.send_signal(signal.SIGTERM)
        code = closed_code(ws)
        closed = sse_close(stream)
    exit_code = cluster.b.stop()

    assert code == 1012
    assert closed["code"] == 1012
    assert exit_code in (0, -signal.SIGTERM), cluster.b.log()
