"""Tail benchmark: commit-to-client latency and memory per idle subscriber, on PostgreSQL.

    .venv/bin/python bench/tail.py [--rate 1000] [--seconds 10] [--admin-url postgresql://...]

Creates a scratch database and starts one real `agent-ledger serve` (API and projector, no
engine). Opens 100, then 1,000 WebSocket subscribers spread over 100 users, appends about
`--rate` events a second from this process (group commits of finished echo executions),
and prints p50/p99 of the time from a save's commit to each subscriber receiving its events.
Then opens 1,000 idle subscribers and prints the server's resident memory per subscriber.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import sqlalchemy as sa
from websockets.asyncio.client import ClientConnection, connect

from agent_ledger.infrastructure.auth.tokens import issue_token
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.persistence import open_executions

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the workload lives in tests/
from tests.support.tail_workload import EVENTS_PER_EXECUTION, finished_execution

SECRET = "bench-" + "s" * 40
USERS = [f"bench-{n:03d}" for n in range(100)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(
    database_url: str, data_dir: Path, extra: list[str]
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_LEDGER_")}
    env.update(
        AGENT_LEDGER_DATABASE_URL=database_url,
        AGENT_LEDGER_JWT_SECRET=SECRET,
        AGENT_LEDGER_DATA_DIR=str(data_dir),
        AGENT_LEDGER_RUN_ENGINE="false",
        AGENT_LEDGER_TAIL_MAX_PER_USER="1000",
        AGENT_LEDGER_TAIL_HEARTBEAT_INTERVAL="1",
    )
    env.update(item.split("=", 1) for item in extra)
    script = shutil.which("agent-ledger", path=os.path.dirname(sys.executable))
    assert script, "agent-ledger is not installed next to this python"
    process = subprocess.Popen(
        [script, "serve", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(os.environ.get("BENCH_SERVER_LOG", os.devnull), "w"),  # noqa: SIM115
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"the server did not start: {(data_dir / 'server.log').read_text()[-2000:]}")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Writer(threading.Thread):
    """Appends about `rate` events a second; remembers when each position was committed."""

    def __init__(self, settings: Settings, rate: int, seconds: float):
        super().__init__(daemon=True)
        self.executions = open_executions(settings)
        self.rate, self.seconds = rate, seconds
        self.committed: dict[int, float] = {}
        self.appended = 0

    def run(self) -> None:
        tick = 0.05
        per_tick = max(1, round(self.rate * tick / EVENTS_PER_EXECUTION))
        start = time.monotonic()
        n = 0
        while (now := time.monotonic()) - start < self.seconds:
            users = [USERS[(n + i) % len(USERS)] for i in range(per_tick)]
            n += per_tick
            recordings = self.executions.save(*(finished_execution(u) for u in users))
            done = time.monotonic()
            if done - start >= 1.0:  # the first second warms up; it is not measured
                for recording in recordings:
                    self.committed[recording.notification.id] = done
            self.appended += len(recordings)
            time.sleep(max(0.0, tick - (time.monotonic() - now)))


async def subscribe(url: str, user: str, query: str = "") -> ClientConnection:
    token = issue_token(SECRET, user)
    ws_url = url.replace("http", "ws", 1) + f"/v1/stream?{query}"
    return await connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"})


async def latency(url: str, settings: Settings, subscribers: int, args: argparse.Namespace) -> None:
    connections = [await subscribe(url, USERS[i % len(USERS)]) for i in range(subscribers)]
    for ws in connections:  # each is live once it has seen its first heartbeat
        while json.loads(await ws.recv())["type"] != "heartbeat":
            pass
    received: list[tuple[int, float]] = []

    async def read(ws: ClientConnection) -> None:
        async for text in ws:
            message = json.loads(text)
            if message["type"] != "heartbeat":
                received.append((message["position"], time.monotonic()))

    readers = [asyncio.create_task(read(ws)) for ws in connections]
    writer = Writer(settings, args.rate, args.seconds)
    writer.start()
    await asyncio.to_thread(writer.join)
    expected = writer.appended * subscribers // len(USERS) if subscribers >= len(USERS) else 0
    deadline = time.monotonic() + 60
    while len(received) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # let the last events arrive
    for task in readers:
        task.cancel()
    for ws in connections:
        await ws.close()
    delays = sorted(t - writer.committed[p] for p, t in received if p in writer.committed)
    p50 = statistics.median(delays) * 1000
    p99 = delays[int(len(delays) * 0.99) - 1] * 1000
    print(
        f"{subscribers:>5} subscribers: {writer.appended / args.seconds:,.0f} events/s appended, "
        f"{len(received):,} of {expected:,} deliveries; "
        f"commit-to-client p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {delays[-1] * 1000:.1f} ms"
    )


async def idle_memory(url: str, pid: int, count: int) -> None:
    await asyncio.sleep(1.0)
    before = rss_kib(pid)
    connections = []
    for n in range(count):
        connections.append(await subscribe(url, f"idle-{n % 500}"))
    for ws in connections:
        while json.loads(await ws.recv())["type"] != "heartbeat":
            pass
    after = rss_kib(pid)
    print(
        f"{count:>5} idle subscribers: server RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB, "
        f"{(after - before) / count:.1f} KiB per idle subscriber"
    )
    for ws in connections:
        await ws.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000, help="events appended per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of appending")
    parser.add_argument("--subscribers", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--server-env", nargs="*", default=[], help="KEY=VALUE for the server")
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    name = f"agent_ledger_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"'.encode())
    database_url = sa.make_url(args.admin_url).set(database=name).render_as_string(False)
    settings = Settings(database_url=database_url, jwt_secret=SECRET)
    process = None
    try:
        with tempfile.TemporaryDirectory(prefix="bench-tail-") as data_dir:
            process, url = start_server(database_url, Path(data_dir), args.server_env)
            for subscribers in args.subscribers:
                asyncio.run(latency(url, settings, subscribers, args))
            asyncio.run(idle_memory(url, process.pid, 1000))
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        with psycopg.connect(args.admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


if __name__ == "__main__":
    main()
