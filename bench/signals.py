"""Signals benchmark: signal → step-completed latency over the real API, and what waiting costs.

A process of one `wait_for_signal` step, on PostgreSQL, driven over the real API: one
`agent-ledger serve` process (the API only), one `agent-ledger projector` process and one
`agent-ledger worker` process. One user starts `--waiting` executions, which park at the
wait step; the benchmark prints how long parking them took, how many waited at once, and
what the deployment spends while they wait (leases held, CPU of each process). Then, one
signal at a time and with a window of signals in flight, it POSTs a waiting execution's
signal and times:

- POST → `step_completed` (the wait step's) seen on the WebSocket tail, the client's view;
- POST → its 202 answer (the API's write of `SignalReceived`);
- `signal_received` → `step_completed`, from the events' own timestamps: the wake-up, the
  worker's claim, load and write, without the HTTP hop and the tail.

    python bench/signals.py [--waiting 1000] [--signals 200] [--windows 1 8]
        [--per-user-limit 3] [--concurrency 32] [--idle 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psutil
import psycopg
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import describe

from agent_ledger.infrastructure.auth.tokens import issue_token
from agent_ledger.infrastructure.catalog.sql import SqlProcessCatalog
from agent_ledger.infrastructure.schema import initialize_schema
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.persistence import read_model_engine
from agent_ledger.infrastructure.store.work_queue import WORK_TABLE

ADMIN_URL = os.environ.get(
    "AGENT_LEDGER_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SECRET = "bench-secret-" + "x" * 40
USER = "bench-waiter"
WAIT1 = {
    "name": "wait1",
    "steps": [{"id": "review", "type": "wait_for_signal", "signal": "approval"}],
    "output": "{{ steps.review.output }}",
}
TAIL_TYPES = "signal_received,step_completed"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Deployment:
    """A fresh database, an API process, a projector process and a worker process."""

    def __init__(self, per_user_limit: int, concurrency: int, log_dir: Path):
        self.database = f"agent_ledger_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{self.database}"')
        self.url = ADMIN_URL.rsplit("/", 1)[0] + f"/{self.database}"
        self.port = free_port()
        env = {
            **os.environ,
            "AGENT_LEDGER_DATABASE_URL": self.url,
            "AGENT_LEDGER_JWT_SECRET": SECRET,
            "AGENT_LEDGER_PER_USER_LIMIT": str(per_user_limit),
            "AGENT_LEDGER_ENGINE_CONCURRENCY": str(concurrency),
            "AGENT_LEDGER_DATA_DIR": str(log_dir),
        }
        settings = Settings(database_url=self.url, jwt_secret=SECRET, data_dir=log_dir)
        initialize_schema(settings)
        engine = read_model_engine(settings)
        SqlProcessCatalog(engine).register(WAIT1)
        engine.dispose()
        binary = str(Path(sys.executable).parent / "agent-ledger")
        self.processes: list[subprocess.Popen[bytes]] = []
        self.names: list[str] = []
        api_env = {**env, "AGENT_LEDGER_RUN_ENGINE": "false", "AGENT_LEDGER_RUN_PROJECTOR": "false"}
        roles = [
            ("api", ["serve", "--port", str(self.port)], api_env),
            ("projector", ["projector"], env),
            ("worker", ["worker"], env),
        ]
        for name, arguments, environment in roles:
            self.names.append(name)
            with (log_dir / f"{name}.log").open("wb") as log:
                self.processes.append(
                    subprocess.Popen(
                        [binary, *arguments, "--log-level", "warning"],
                        env=environment,
                        stdout=log,
                        stderr=log,
                    )
                )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("the API did not start")

    def queue(self) -> dict[str, int]:
        """The work queue, counted: rows, waiting ones, leased ones (what workers drive)."""
        with psycopg.connect(self.url) as connection:
            row = connection.execute(
                f"SELECT count(*), count(*) FILTER (WHERE waiting), "
                f"count(*) FILTER (WHERE lease_owner IS NOT NULL) FROM {WORK_TABLE}"
            ).fetchone()
        assert row is not None
        return {"rows": row[0], "waiting": row[1], "leased": row[2]}

    def close(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


def cpu_seconds(deployment: Deployment) -> dict[str, float]:
    """CPU seconds used so far by each process of the deployment, the PostgreSQL backends
    serving its database (not the server's others: tests may share it) and this client."""
    used = {}
    for name, process in zip(deployment.names, deployment.processes, strict=True):
        times = psutil.Process(process.pid).cpu_times()
        used[name] = times.user + times.system
    postgres = 0.0
    for process in psutil.process_iter(["name", "cmdline", "cpu_times"]):
        info = process.info
        if info["name"] != "postgres" or info["cpu_times"] is None:
            continue
        if deployment.database in " ".join(info["cmdline"] or ()).split():
            postgres += info["cpu_times"].user + info["cpu_times"].system
    used["postgres"] = postgres
    mine = psutil.Process().cpu_times()
    used["client"] = mine.user + mine.system
    return used


def headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(SECRET, USER)}"}


async def start_all(base: str, count: int, in_flight: int = 16) -> list[str]:
    """Start `count` executions of the waiting process, `in_flight` POSTs at a time."""
    ids: list[str] = []
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(base, headers=headers(), timeout=timeout) as http:

        async def starter(share: int) -> None:
            for _ in range(share):
                async with http.post(
                    "/v1/executions", json={"process": "wait1", "input": {}}
                ) as response:
                    response.raise_for_status()
                    ids.append((await response.json())["id"])

        shares = [count // in_flight + (n < count % in_flight) for n in range(in_flight)]
        await asyncio.gather(*(starter(share) for share in shares))
    return ids


def park(deployment: Deployment, count: int) -> tuple[list[str], float, float]:
    """Start `count` executions and wait until all wait; returns their ids, the seconds
    the starts took and the seconds until the last one parked."""
    began = time.perf_counter()
    ids = asyncio.run(start_all(deployment.base, count))
    started = time.perf_counter() - began
    waiting, progress = 0, time.perf_counter()
    while waiting < count:
        time.sleep(0.05)
        now_waiting = deployment.queue()["waiting"]
        if now_waiting > waiting:
            waiting, progress = now_waiting, time.perf_counter()
        elif time.perf_counter() - progress > 30:
            raise RuntimeError(f"only {waiting} of {count} executions parked; stuck for 30 s")
    return ids, started, time.perf_counter() - began


def idle_cost(deployment: Deployment, seconds: float) -> tuple[dict[str, int], dict[str, float]]:
    """The queue and each process's CPU (% of one core) over `seconds` of nothing but waiting."""
    before, began = cpu_seconds(deployment), time.perf_counter()
    time.sleep(seconds)
    after, elapsed = cpu_seconds(deployment), time.perf_counter() - began
    queue = deployment.queue()
    percent = {part: (after[part] - before[part]) * 100 / elapsed for part in after}
    return queue, percent


@dataclass
class Timing:
    """One signal's moments: when it was POSTed and answered, and its events."""

    sent: float
    answered: float | None = None
    signal_at: datetime | None = None
    step_at: datetime | None = None
    step_seen: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


async def signal_all(base: str, ids: list[str], window: int) -> tuple[list[Timing], float]:
    """Signal every execution of `ids`, `window` at a time; each slot POSTs the next one when
    the tail shows its previous one's wait step completed. Returns the timings and seconds."""
    timings: dict[str, Timing] = {}
    ws_url = base.replace("http", "ws", 1) + f"/v1/stream?types={TAIL_TYPES}"
    timeout = aiohttp.ClientTimeout(total=30)
    async with (
        aiohttp.ClientSession(base, headers=headers(), timeout=timeout) as http,
        websockets.connect(ws_url, additional_headers=headers(), max_queue=None) as ws,
    ):

        async def read() -> None:
            async for raw in ws:
                message: dict[str, Any] = json.loads(raw)
                timing = timings.get(message.get("execution_id", ""))
                if timing is None:
                    continue
                kind = message["type"]
                if kind == "signal_received":
                    timing.signal_at = datetime.fromisoformat(message["timestamp"])
                elif kind == "step_completed" and message["data"].get("step_id") == "review":
                    timing.step_at = datetime.fromisoformat(message["timestamp"])
                    timing.step_seen = time.perf_counter()
                    timing.done.set()

        async def slot(mine: list[str]) -> None:
            for execution_id in mine:
                timing = timings[execution_id] = Timing(time.perf_counter())
                async with http.post(
                    f"/v1/executions/{execution_id}/signals/approval",
                    json={"payload": {"approved": True}},
                ) as response:
                    response.raise_for_status()
                    timing.answered = time.perf_counter()
                await asyncio.wait_for(timing.done.wait(), 30)

        reader = asyncio.create_task(read())
        began = time.perf_counter()
        try:
            await asyncio.gather(*(slot(ids[n::window]) for n in range(window)))
        finally:
            reader.cancel()
        elapsed = time.perf_counter() - began
    return list(timings.values()), elapsed


def percentiles(values: list[float]) -> str:
    values = sorted(values)
    p99 = values[max(0, int(len(values) * 0.99) - 1)]
    return f"{statistics.median(values) * 1000:.1f} / {p99 * 1000:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waiting", type=int, default=1000, help="executions parked at once")
    parser.add_argument(
        "--signals", type=int, default=200, help="signals timed per window (≤ --waiting)"
    )
    parser.add_argument(
        "--windows", type=int, nargs="+", default=[1, 8], help="signals in flight (1 8)"
    )
    parser.add_argument("--per-user-limit", type=int, default=3, help="the user's running limit")
    parser.add_argument("--concurrency", type=int, default=32, help="the worker's slots")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds to watch the waiting")
    arguments = parser.parse_args()
    needed = arguments.signals * len(arguments.windows)
    if needed > arguments.waiting:
        parser.error(f"--waiting must be at least --signals times the windows ({needed})")
    print(describe())
    print(
        f"1-step wait_for_signal process, PostgreSQL, API + projector + 1 worker process "
        f"(engine concurrency {arguments.concurrency}), one user (limit "
        f"{arguments.per_user_limit})"
    )
    with tempfile.TemporaryDirectory() as scratch:
        deployment = Deployment(arguments.per_user_limit, arguments.concurrency, Path(scratch))
        try:
            ids, started, parked = park(deployment, arguments.waiting)
            print(
                f"parked {len(ids)} executions: started over the API in {started:.1f} s, "
                f"all waiting after {parked:.1f} s ({len(ids) / parked:.0f}/s)",
                flush=True,
            )
            queue, percent = idle_cost(deployment, arguments.idle)
            print(
                f"while {queue['waiting']} wait ({arguments.idle:g} s): queue rows "
                f"{queue['rows']}, leases held {queue['leased']}; CPU % of a core: "
                + "  ".join(f"{part} {value:.1f}" for part, value in percent.items()),
                flush=True,
            )
            print(
                f"{'window':>6} {'signals':>7} {'sig/s':>6}   p50 / p99 ms: "
                f"{'POST→step seen':>15} {'POST→202':>15} {'received→step':>15}"
            )
            for n, window in enumerate(arguments.windows):
                chosen = ids[n * arguments.signals : (n + 1) * arguments.signals]
                before = cpu_seconds(deployment)
                timings, elapsed = asyncio.run(signal_all(deployment.base, chosen, window))
                after = cpu_seconds(deployment)
                seen = [t.step_seen - t.sent for t in timings if t.step_seen is not None]
                answered = [t.answered - t.sent for t in timings if t.answered is not None]
                inside = [
                    (t.step_at - t.signal_at).total_seconds()
                    for t in timings
                    if t.step_at is not None and t.signal_at is not None
                ]
                print(
                    f"{window:>6} {len(timings):>7} {len(timings) / elapsed:>6.0f} {'':>14}"
                    f"{percentiles(seen):>15} {percentiles(answered):>15} "
                    f"{percentiles(inside):>15}",
                    flush=True,
                )
                per = {part: (after[part] - before[part]) * 1000 / len(timings) for part in after}
                print(
                    f"{'':>6} CPU ms/signal: "
                    + "  ".join(f"{part} {ms:.2f}" for part, ms in per.items())
                    + f"  total {sum(per.values()):.2f}",
                    flush=True,
                )
            left = deployment.queue()
            print(f"afterwards: {left['waiting']} still waiting (never signalled)")
        except Exception:
            for name in deployment.names:
                log = (Path(scratch) / f"{name}.log").read_text()[-2000:]
                print(f"--- {name}.log\n{log}", file=sys.stderr)
            raise
        finally:
            deployment.close()
    print(f"after the runs: {describe()}")


if __name__ == "__main__":
    main()
