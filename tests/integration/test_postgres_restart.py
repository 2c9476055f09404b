"""PostgreSQL restarted under load (fast stop, then immediate stop) on a server of the test's
own: the API, worker and projector processes and the live tail carry on by themselves.

Clients keep starting executions (with an Idempotency-Key, retrying on connection errors and
5xx) and WebSocket subscribers follow the tail. After both restarts: every start answered
with 2xx is in the store and completed exactly once, every subscriber received every event
of its selection once and in order, no process was restarted, the API answered 503 (never
500) while the store was away, and no log holds the database password. The recovery times
(from the database accepting connections again) are printed.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from websockets.exceptions import ConnectionClosed

from agent_ledger.domain.executions import Execution
from agent_ledger.infrastructure.read_models.tracking import active_position
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.persistence import open_executions, read_model_engine
from tests.support import tokens
from tests.support.private_postgres import PrivatePostgres
from tests.support.server import Server, clean_environment, free_port
from tests.support.tail_clients import Message, websocket
from tests.support.waiting import wait_until

pytestmark = pytest.mark.postgres

SECRET = f"restart-{uuid.uuid4().hex}{uuid.uuid4().hex}"
USERS = ("ana", "ben", "cai")
FOLLOWED = USERS[:2]  # each has a subscriber of its own; an auditor follows everyone
CLIENTS = 4
PACE = 0.04  # seconds between one client's starts: ~100 starts/s in all
COMPLETED = Execution.ExecutionCompleted.TOPIC
STARTED = Execution.ExecutionStarted.TOPIC
AGENT_LEDGER = str(Path(sys.executable).parent / "agent-ledger")


def moment_when(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `condition` until it holds; the moment it did (monotonic), or fail."""
    wait_until(condition, timeout, what)
    return time.monotonic()


def token(user: str, *roles: str) -> str:
    return tokens.token(SECRET, user, *roles)


@dataclass
class Load:
    """Client threads starting executions until told to stop, each start until acknowledged."""

    url: str
    acknowledged: dict[str, tuple[str, float]] = field(default_factory=dict)  # id: user, when
    refusals: Counter[str] = field(default_factory=Counter)  # what answered other than 2xx
    unacknowledged: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for n in range(CLIENTS):
            thread = threading.Thread(target=self._client, args=(USERS[n % len(USERS)],))
            thread.start()
            self.threads.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def acknowledged_since(self, moment: float) -> list[float]:
        with self.lock:
            return sorted(at for _, at in self.acknowledged.values() if at >= moment)

    @property
    def refused(self) -> int:
        with self.lock:
            return sum(self.refusals.values())

    def _client(self, user: str) -> None:
        headers = {"Authorization": f"Bearer {token(user)}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=15) as http:
            n = 0
            while not self.stop.is_set():
                n += 1
                self.start_one(http, user, {"client": user, "n": n})
                self.stop.wait(PACE)

    def start_one(self, http: httpx.Client, user: str, body: dict[str, Any]) -> str | None:
        """POST until a 2xx (the same key every time): the execution's id; None if refused."""
        key = uuid.uuid4().hex
        deadline = time.monotonic() + 40
        pause = 0.05
        while time.monotonic() < deadline:
            try:
                answer = http.post(
                    "/v1/executions",
                    json={"process": "echo", "input": body},
                    headers={"Idempotency-Key": key},
                )
            except httpx.TransportError as error:
                kind = type(error).__name__
            else:
                if answer.is_success:
                    execution_id = str(answer.json()["id"])
                    with self.lock:
                        self.acknowledged[execution_id] = (user, time.monotonic())
                    return execution_id
                kind = str(answer.status_code)
                if answer.status_code < 500:
                    with self.lock:
                        self.refusals[f"{kind}: {answer.text[:200]}"] += 1
                        self.unacknowledged.append(key)
                    return None
            with self.lock:
                self.refusals[kind] += 1
            time.sleep(pause)  # a client's back-off before it tries again
            pause = min(pause * 2, 0.5)
        with self.lock:
            self.unacknowledged.append(key)
        return None


class Follower(threading.Thread):
    """A WebSocket subscriber from the first event on; resumes after its last position if
    the connection ever closes (counted: the server is not expected to close it)."""

    def __init__(self, url: str, user: str, *roles: str, query: str = ""):
        super().__init__(daemon=True)
        self.url, self.user, self.query = url, user, query
        self.token = token(user, *roles)
        self.received: list[tuple[float, Message]] = []
        self.closes: list[str] = []
        self.connected = threading.Event()
        self.done = threading.Event()

    def positions(self) -> list[int]:
        return [message["position"] for _, message in list(self.received)]

    def run(self) -> None:
        last = 0
        while not self.done.is_set():
            try:
                with websocket(self.url, self.token, f"after={last}{self.query}") as ws:
                    self.connected.set()
                    while not self.done.is_set():
                        try:
                            message = json.loads(ws.recv(timeout=0.2))
                        except TimeoutError:
                            continue
                        if message["type"] != "heartbeat":
                            self.received.append((time.monotonic(), message))
                        last = message["position"]
            except (ConnectionClosed, OSError) as error:
                self.closes.append(repr(error))
                self.done.wait(0.2)


@dataclass
class Service:
    api: Server
    worker: subprocess.Popen[bytes]
    projector: subprocess.Popen[bytes]
    logs: list[Path]

    def processes(self) -> dict[str, subprocess.Popen[bytes] | None]:
        return {"api": self.api.process, "worker": self.worker, "projector": self.projector}


@pytest.fixture(scope="module")
def database() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres(free_port())
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def service(database: PrivatePostgres, tmp_path: Path) -> Iterator[Service]:
    """`serve` with the API alone, plus one `worker` and one `projector` process."""
    environment = clean_environment(
        AGENT_LEDGER_DATABASE_URL=database.url,
        AGENT_LEDGER_JWT_SECRET=SECRET,
        AGENT_LEDGER_DATA_DIR=str(tmp_path),
        AGENT_LEDGER_PER_USER_LIMIT="100",
        AGENT_LEDGER_TAIL_HEARTBEAT_INTERVAL="1",
    )
    api = Server(
        {**environment, "AGENT_LEDGER_RUN_ENGINE": "false", "AGENT_LEDGER_RUN_PROJECTOR": "false"},
        tmp_path / "api.log",
    )
    roles: list[subprocess.Popen[bytes]] = []
    try:
        api.start()  # creates the schema
        for role in ("worker", "projector"):
            with (tmp_path / f"{role}.log").open("wb") as log:
                roles.append(
                    subprocess.Popen(
                        [AGENT_LEDGER, role, "--log-level", "info"],
                        env=environment,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        logs = [tmp_path / name for name in ("api.log", "worker.log", "projector.log")]
        wait_until(
            lambda: all("running (worker" in p.read_text() for p in logs[1:]), 30, "the roles"
        )
        yield Service(api, roles[0], roles[1], logs)
    finally:
        api.stop()
        for process in roles:
            process.terminate()
        for process in roles:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


@dataclass
class Store:
    """Reads of the private database, for the test's checks."""

    database: PrivatePostgres
    engine: sa.Engine

    def completed_at(self, execution_id: str) -> int | None:
        """The position of the execution's `ExecutionCompleted`, if recorded."""
        with self.database.connect() as connection:
            row = connection.execute(
                "SELECT notification_id FROM executions_events "
                "WHERE originator_id = %s AND topic = %s",
                (execution_id, COMPLETED),
            ).fetchone()
        return None if row is None else int(str(row[0]))

    def projected(self, name: str = "execution_status") -> int:
        """How far the projector has applied the store to `name`."""
        with self.engine.connect() as connection:
            return active_position(connection, name)

    def counts(self, topic: str) -> Counter[str]:
        with self.database.connect() as connection:
            rows = connection.execute(
                "SELECT originator_id::text, count(*) FROM executions_events "
                "WHERE topic = %s GROUP BY originator_id",
                (topic,),
            ).fetchall()
        return Counter({str(execution_id): int(str(n)) for execution_id, n in rows})


def restart(
    database: PrivatePostgres, mode: str, load: Load, store: Store, auditor: Follower
) -> dict[str, float]:
    """Stop PostgreSQL (`mode`) under load and start it once a client was refused; seconds
    from the database accepting connections again until the API acknowledged a start, a
    start made then completed, the projector applied that completion and the tail sent it."""
    begun = time.monotonic()
    wait_until(lambda: len(load.acknowledged_since(begun)) >= 50, 30, "starts to flow")
    refused = load.refused
    database.stop(mode)
    wait_until(lambda: load.refused > refused, 20, "a client to be refused")
    database.start()
    up = time.monotonic()
    with httpx.Client(
        base_url=load.url, headers={"Authorization": f"Bearer {token('probe')}"}, timeout=15
    ) as http:
        probe = load.start_one(http, "probe", {"probe": mode})
    assert probe is not None, "the probe's start was refused"
    completed = moment_when(lambda: store.completed_at(probe) is not None, 30, "the probe")
    position = store.completed_at(probe)
    assert position is not None
    projected = moment_when(lambda: store.projected() >= position, 30, "the projector")
    wait_until(lambda: position in auditor.positions(), 30, "the tail")
    delivered = next(at for at, m in list(auditor.received) if m["position"] == position)
    wait_until(lambda: len(load.acknowledged_since(up)) >= 50, 30, "starts to flow again")
    return {
        "api": load.acknowledged_since(up)[0] - up,
        "execution": completed - up,
        "projector": projected - up,
        "tail": delivered - up,
    }


def test_the_service_recovers_by_itself_from_fast_and_immediate_restarts_of_postgres(
    database: PrivatePostgres, service: Service
) -> None:
    url = service.api.url
    followers = [Follower(url, user) for user in FOLLOWED]
    auditor = Follower(url, "auditor", "auditor", query="&all_users=true")
    for follower in (*followers, auditor):
        follower.start()
        assert follower.connected.wait(10), "a subscriber could not connect"
    settings = Settings(database_url=database.url, jwt_secret=SECRET)
    store = Store(database, read_model_engine(settings))
    load = Load(url)
    recoveries: dict[str, dict[str, float]] = {}
    try:
        load.start()
        for mode in ("fast", "immediate"):
            recoveries[mode] = restart(database, mode, load, store, auditor)
        load.finish()

        ids = set(load.acknowledged)
        completions = wait_until_completed(store, ids)
        started = store.counts(STARTED)
        assert not load.unacknowledged, f"starts never acknowledged: {load.refusals}"
        assert ids <= set(started), f"{len(ids - set(started))} acknowledged starts are missing"
        assert all(started[i] == 1 for i in ids)
        assert all(completions[i] == 1 for i in ids), "an execution completed twice"
        assert not [k for k in load.refusals if not k.startswith("503")], load.refusals

        expected = store_positions(settings)
        every = sorted(p for positions in expected.values() for p in positions)
        for follower, want in [(f, expected[f.user]) for f in followers] + [(auditor, every)]:
            wait_until(lambda f=follower, w=want: f.positions()[-1:] == w[-1:], 30, "the tail")
            assert follower.positions() == want, f"{follower.user} missed or repeated events"
            assert not follower.closes, f"the server closed {follower.user}'s subscription"

        for name, process in service.processes().items():
            assert process is not None, name
            assert process.poll() is None, f"the {name} process exited"
        for log in service.logs:
            assert database.password not in log.read_text(), f"{log.name} shows the password"
    finally:
        load.finish()
        for follower in (*followers, auditor):
            follower.done.set()
        store.engine.dispose()
        report(recoveries, load, service)


def wait_until_completed(store: Store, ids: set[str]) -> Counter[str]:
    """How many times each execution completed, once every one of `ids` has."""
    found: Counter[str] = Counter()

    def done() -> bool:
        found.clear()
        found.update(store.counts(COMPLETED))
        return ids <= set(found)

    with contextlib.suppress(AssertionError):
        wait_until(done, 40, "every execution to complete")
    assert ids <= set(found), f"{len(ids - set(found))} of {len(ids)} executions never completed"
    return found


def store_positions(settings: Settings) -> dict[str, list[int]]:
    """Every stored event's position, by user, read from the store."""
    executions = open_executions(settings)
    try:
        positions: dict[str, list[int]] = {}
        after = 0
        while events := executions.read_log(after=after):
            for logged in events:
                user = str(getattr(logged.event, "user_id", ""))
                positions.setdefault(user, []).append(logged.position)
            after = events[-1].position
        return positions
    finally:
        executions.close()


def report(recoveries: dict[str, dict[str, float]], load: Load, service: Service) -> None:
    """The recovery times, and what the clients and logs saw (shown with -s, or on failure)."""
    for mode, seconds in recoveries.items():
        print(
            f"\nrecovery after pg_ctl stop -m {mode}: "
            + ", ".join(f"{part} {value:.2f}s" for part, value in seconds.items())
        )
    print(f"starts acknowledged: {len(load.acknowledged)}; refused tries: {dict(load.refusals)}")
    for log in service.logs:
        noisy = [line for line in log.read_text().splitlines() if " WARNING " in line]
        print(f"{log.name}: {len(noisy)} warnings")
