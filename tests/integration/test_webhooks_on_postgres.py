"""Webhooks on PostgreSQL: a real receiver in the test that fails (500), times out and
recovers gets every one of its user's events at least once, in position order, signed; an
`agent-ledger projector` process (the deliverer) SIGKILLed mid-delivery and replaced loses
none and sends again none already acknowledged (but the one in flight); retries run out
into `failing`, and redeliver resumes; the API's refusals and owners.

The API and a worker run in-process; the projector role, which delivers, is a process of
its own, so that it can be killed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from agent_ledger.infrastructure.read_models.tables import event_index
from agent_ledger.infrastructure.read_models.tracking import tracked_position
from agent_ledger.infrastructure.runtime import Runtime
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.projections.event_index import EventIndexProjection
from tests.support.asgi_client import TestClient, serving
from tests.support.tokens import bearer
from tests.support.waiting import wait_until

pytestmark = pytest.mark.postgres

SECRET = "webhooks-secret-" + "s" * 32
ANN, BOB = bearer(SECRET, "ann"), bearer(SECRET, "bob")
HOOK_SECRET = "ann-signs-with-this-secret"
AGENT_LEDGER = shutil.which("agent-ledger", path=os.path.dirname(sys.executable))
WINDOW = 2.0
"""Seconds a failing delivery is retried before the webhook is marked failing."""


class Receiver:
    """An HTTP receiver on 127.0.0.1 that answers as scripted: `fail` (500), `slow` (answers
    after the deliverer's timeout), else 200 after `delay` seconds."""

    def __init__(self) -> None:
        self.script: deque[str] = deque()
        self.always_fail = False
        self.delay = 0.0
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.acked: list[int] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.received.append((dict(self.headers.items()), body))
                    mode = receiver.script.popleft() if receiver.script else "ok"
                    if receiver.always_fail:
                        mode = "fail"
                if mode == "fail":
                    self.send_response(500)
                    self.end_headers()
                    return
                time.sleep(1.5 if mode == "slow" else receiver.delay)
                try:
                    self.send_response(200)
                    self.end_headers()
                except OSError:
                    return
                if mode == "ok":
                    with receiver.lock:
                        receiver.acked.append(int(self.headers["X-Agent-Ledger-Position"]))

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def acknowledged(self) -> list[int]:
        with self.lock:
            return list(self.acked)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def settings(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=postgres_url,
        jwt_secret=SECRET,
        data_dir=tmp_path_factory.mktemp("data"),
        poll_interval=0.1,
        per_user_limit=100,
        agent_url_allow="127.0.0.0/8",
    )


class Projectors:
    """`agent-ledger projector` processes, the deliverers; the test kills and replaces them."""

    def __init__(self, settings: Settings, log_dir: Path):
        assert AGENT_LEDGER, "the agent-ledger console script is not installed next to python"
        self.env = {
            **os.environ,
            "AGENT_LEDGER_DATABASE_URL": str(settings.database_url),
            "AGENT_LEDGER_JWT_SECRET": SECRET,
            "AGENT_LEDGER_POLL_INTERVAL": "0.1",
            "AGENT_LEDGER_AGENT_URL_ALLOW": "127.0.0.0/8",
            "AGENT_LEDGER_WEBHOOK_RETRY_FIRST": "0.05",
            "AGENT_LEDGER_WEBHOOK_RETRY_CAP": "0.2",
            "AGENT_LEDGER_WEBHOOK_RETRY_WINDOW": str(WINDOW),
            "AGENT_LEDGER_WEBHOOK_TIMEOUT": "0.5",
        }
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        with (self.log_dir / f"projector-{len(self.processes)}.log").open("ab") as log:
            process = subprocess.Popen(
                [AGENT_LEDGER, "projector", "--log-level", "warning"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def served(settings: Settings) -> Iterator[tuple[Runtime, TestClient]]:
    with serving(settings, engine=True, projector=False) as running:
        yield running


@pytest.fixture(scope="module")
def projectors(
    settings: Settings, served: tuple[Runtime, TestClient], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Projectors]:
    running = Projectors(settings, tmp_path_factory.mktemp("logs"))
    running.start()
    try:
        yield running
    finally:
        running.stop_all()


@pytest.fixture
def runtime(served: tuple[Runtime, TestClient], projectors: Projectors) -> Runtime:
    return served[0]


@pytest.fixture
def client(served: tuple[Runtime, TestClient], projectors: Projectors) -> TestClient:
    return served[1]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    try:
        yield running
    finally:
        running.close()


def put_hook(client: TestClient, name: str, url: str, **extra: Any) -> dict[str, Any]:
    body = {"url": url, "types": [], "secret": HOOK_SECRET, **extra}
    response = client.put(f"/v1/webhooks/{name}", json=body, headers=ANN)
    assert response.status_code == 201, response.text
    view: dict[str, Any] = response.json()
    return view


def run_echoes(client: TestClient, runtime: Runtime, headers: dict[str, str], n: int) -> None:
    """Start `n` echo executions and wait until they completed and the index has them."""
    ids = []
    for i in range(n):
        response = client.post(
            "/v1/executions", json={"process": "echo", "input": {"n": i}}, headers=headers
        )
        assert response.status_code in (200, 201, 202), response.text
        ids.append(response.json()["id"])

    def completed() -> bool:
        return all(
            client.get(f"/v1/executions/{i}", headers=headers).json().get("status") == "completed"
            for i in ids
        )

    wait_until(completed, 30, "the executions to complete", interval=0.05)
    head = runtime.executions.last_position()

    def indexed() -> bool:
        with runtime.read_engine.connect() as connection:
            return tracked_position(connection, EventIndexProjection.name) >= head

    wait_until(indexed, 30, "the event index to catch up", interval=0.05)


def positions_of(runtime: Runtime, user: str, after: int) -> list[int]:
    with runtime.read_engine.connect() as connection:
        return [
            int(p)
            for p in connection.execute(
                sa.select(event_index.c.position)
                .where(event_index.c.user_id == user, event_index.c.position > after)
                .order_by(event_index.c.position)
            ).scalars()
        ]


def test_a_receiver_that_fails_times_out_and_recovers_gets_every_event_in_order_signed(
    client: TestClient, runtime: Runtime, receiver: Receiver
) -> None:
    hook = put_hook(client, "ops", receiver.url)
    assert "secret" not in hook
    assert hook["state"] == "active"
    receiver.script.extend(["fail", "slow", "fail"])
    run_echoes(client, runtime, ANN, 2)
    run_echoes(client, runtime, BOB, 1)
    expected = positions_of(runtime, "ann", hook["position"])
    assert expected

    wait_until(lambda: receiver.acknowledged() == expected, 30, "every event of ann's")

    bobs = set(positions_of(runtime, "bob", hook["position"]))
    for headers, body in receiver.received:
        digest = hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Agent-Ledger-Signature"] == f"sha256={digest}"
        message = json.loads(body)
        assert int(headers["X-Agent-Ledger-Position"]) == message["position"]
        assert abs(int(headers["X-Agent-Ledger-Timestamp"]) - time.time()) < 60
        assert message["position"] not in bobs
    first = [json.loads(body)["position"] for _, body in receiver.received[:4]]
    assert first == [expected[0]] * 4  # three failed tries of the first event, then it

    log = client.get("/v1/webhooks/ops/deliveries?limit=1000", headers=ANN).json()
    tries = [(d["position"], d["attempt"], d["status_code"]) for d in reversed(log)][:4]
    assert tries == [
        (expected[0], 1, 500),
        (expected[0], 2, None),
        (expected[0], 3, 500),
        (expected[0], 4, 200),
    ]
    assert "no answer within" in log[-2]["error"]
    view = client.get("/v1/webhooks/ops", headers=ANN).json()
    assert view["position"] == expected[-1]
    assert view["attempt"] == 0
    assert client.delete("/v1/webhooks/ops", headers=ANN).status_code == 204


def test_a_deliverer_killed_mid_delivery_and_replaced_loses_none_and_floods_none(
    client: TestClient, runtime: Runtime, receiver: Receiver, projectors: Projectors
) -> None:
    receiver.delay = 0.05
    hook = put_hook(client, "restart", receiver.url)
    run_echoes(client, runtime, ANN, 4)
    expected = positions_of(runtime, "ann", hook["position"])
    assert len(expected) > 12

    wait_until(lambda: len(receiver.acknowledged()) >= 6, 30, "six deliveries")
    for process in projectors.processes:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
    killed_at = len(receiver.acknowledged())
    assert killed_at < len(expected)
    projectors.start()

    wait_until(lambda: set(receiver.acknowledged()) >= set(expected), 30, "the rest")
    acked = receiver.acknowledged()
    assert len(acked) - len(set(acked)) <= 1  # at most the one in flight, sent again
    assert sorted(set(acked)) == expected
    assert acked == sorted(acked)  # in position order, the one in flight repeated at most
    assert client.delete("/v1/webhooks/restart", headers=ANN).status_code == 204


def test_retries_run_out_into_failing_and_redeliver_resumes_from_where_asked(
    client: TestClient, runtime: Runtime, receiver: Receiver
) -> None:
    receiver.always_fail = True
    hook = put_hook(client, "flaky", receiver.url, types=["execution_completed"])
    run_echoes(client, runtime, ANN, 2)
    with runtime.read_engine.connect() as connection:
        completions = [
            int(p)
            for p in connection.execute(
                sa.select(event_index.c.position).where(
                    event_index.c.user_id == "ann",
                    event_index.c.position > hook["position"],
                    event_index.c.type == "execution_completed",
                )
            ).scalars()
        ]
    assert len(completions) == 2

    def failing() -> dict[str, Any] | None:
        view: dict[str, Any] = client.get("/v1/webhooks/flaky", headers=ANN).json()
        return view if view["state"] == "failing" else None

    view = wait_until(failing, WINDOW + 15, "the webhook to be marked failing", interval=0.05)
    assert view["position"] == hook["position"]
    assert view["last_error"] == "HTTP 500"
    tries = len(receiver.received)
    assert tries >= 3
    assert {json.loads(body)["position"] for _, body in receiver.received} == {completions[0]}

    receiver.always_fail = False
    response = client.post("/v1/webhooks/flaky/redeliver", headers=ANN)
    assert response.status_code == 202
    assert response.json()["state"] == "active"
    wait_until(lambda: receiver.acknowledged() == completions, 15, "both completions")

    response = client.post(
        "/v1/webhooks/flaky/redeliver", json={"from_position": completions[1]}, headers=ANN
    )
    assert response.status_code == 202
    assert response.json()["position"] == completions[1] - 1
    wait_until(lambda: receiver.acknowledged() == [*completions, completions[1]], 15, "again")
    assert client.delete("/v1/webhooks/flaky", headers=ANN).status_code == 204


BAD_BODIES = {
    "not http": {"url": "ftp://127.0.0.1/hook", "secret": HOOK_SECRET},
    "unknown type": {"url": "http://127.0.0.1/h", "types": ["nope"], "secret": HOOK_SECRET},
    "short secret": {"url": "http://127.0.0.1/hook", "secret": "short"},
    "no secret": {"url": "http://127.0.0.1/hook"},
    "extra field": {"url": "http://127.0.0.1/hook", "secret": HOOK_SECRET, "x": 1},
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_a_bad_webhook_is_a_422_and_nothing_is_stored(
    client: TestClient, body: dict[str, Any]
) -> None:
    response = client.put("/v1/webhooks/bad", json=body, headers=ANN)
    assert response.status_code == 422, response.text
    assert client.get("/v1/webhooks/bad", headers=ANN).status_code == 404


def test_a_url_the_egress_rule_refuses_is_a_422_naming_the_url(client: TestClient) -> None:
    body = {"url": "http://10.1.2.3/hook", "secret": HOOK_SECRET}
    response = client.put("/v1/webhooks/private", json=body, headers=ANN)
    assert response.status_code == 422
    problem = response.json()
    assert problem["type"].endswith("/webhook-url-refused")
    assert problem["field"] == "url"
    assert client.get("/v1/webhooks/private", headers=ANN).status_code == 404


def test_another_users_webhook_is_404_and_no_secret_is_ever_shown(client: TestClient) -> None:
    put_hook(client, "mine", "http://127.0.0.1:9/hook")
    response = client.put(
        "/v1/webhooks/mine",
        json={"url": "http://127.0.0.1:9/other", "secret": HOOK_SECRET},
        headers=ANN,
    )
    assert response.status_code == 200
    assert response.json()["url"].endswith("/other")
    for path in ("/v1/webhooks/mine", "/v1/webhooks/mine/deliveries"):
        assert client.get(path, headers=BOB).status_code == 404
    assert client.post("/v1/webhooks/mine/redeliver", headers=BOB).status_code == 404
    assert client.delete("/v1/webhooks/mine", headers=BOB).status_code == 404
    listed = client.get("/v1/webhooks", headers=ANN)
    assert HOOK_SECRET not in listed.text
    assert "secret" not in listed.text
    assert [hook["name"] for hook in listed.json()] == ["mine"]
    assert client.get("/v1/webhooks", headers=BOB).json() == []
    assert client.delete("/v1/webhooks/mine", headers=ANN).status_code == 204
