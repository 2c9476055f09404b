"""Engine benchmark: executions per second and POST-to-`execution_completed` latency.

A 3-step process of no-op (echo) agents, driven over the real API. The default shape
(`--shape split`) is PostgreSQL with one `agent-ledger serve` process (the API only), one
`agent-ledger projector` process and 1 or 2 `agent-ledger worker` processes; `single` is
one `serve` doing everything on PostgreSQL, `embedded` one `serve` on SQLite. Each client
is one user with its own WebSocket subscription (for `execution_completed` events); it
keeps a window of executions in flight, POSTing a new one as each completes.

    python bench/engine_throughput.py [--seconds 10] [--window 16] [--cpu]
        [--workers 1 2] [--clients 1 4] [--shape split|single|embedded]

With `--cpu` it also prints the CPU time each part spends per execution (the API, the
projector, the workers, every PostgreSQL process and this benchmark's own client).
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
from pathlib import Path

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

ADMIN_URL = os.environ.get(
    "AGENT_LEDGER_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SECRET = "bench-secret-" + "x" * 40
NOOP3 = {
    "name": "noop3",
    "config": {"parallel_execution": False},
    "steps": [
        {"id": "one", "type": "agent_task", "agent": "echo", "input": {"n": "{{ input.n }}"}},
        {
            "id": "two",
            "type": "agent_task",
            "agent": "echo",
            "input": "{{ steps.one.output }}",
            "depends_on": ["one"],
        },
        {
            "id": "three",
            "type": "agent_task",
            "agent": "echo",
            "input": "{{ steps.two.output }}",
            "depends_on": ["two"],
        },
    ],
    "output": "{{ steps.three.output }}",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Deployment:
    """A fresh store and the service's processes in one of three shapes: `split` (an API
    process, a projector process and `workers` worker processes, on PostgreSQL), `single`
    (one `serve` process running every role, on PostgreSQL) or `embedded` (one `serve`
    on SQLite, no database server)."""

    def __init__(
        self,
        workers: int,
        log_dir: Path,
        shape: str = "split",
        extra_env: dict[str, str] | None = None,
    ):
        self.shape = shape
        self.database: str | None = None
        self.port = free_port()
        env = {
            **os.environ,
            "AGENT_LEDGER_JWT_SECRET": SECRET,
            "AGENT_LEDGER_PER_USER_LIMIT": "10000",
            "AGENT_LEDGER_ENGINE_CONCURRENCY": "256",
            "AGENT_LEDGER_DATA_DIR": str(log_dir),
            **(extra_env or {}),
        }
        env.pop("AGENT_LEDGER_DATABASE_URL", None)
        if shape != "embedded":
            self.database = f"agent_ledger_bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
                connection.execute(f'CREATE DATABASE "{self.database}"')
            env["AGENT_LEDGER_DATABASE_URL"] = ADMIN_URL.rsplit("/", 1)[0] + f"/{self.database}"
        self.url = env.get("AGENT_LEDGER_DATABASE_URL")
        settings = Settings(database_url=self.url, jwt_secret=SECRET, data_dir=log_dir)
        initialize_schema(settings)
        engine = read_model_engine(settings)
        SqlProcessCatalog(engine).register(NOOP3)
        engine.dispose()
        binary = str(Path(sys.executable).parent / "agent-ledger")
        self.processes = []
        self.names = []
        serve = ["serve", "--port", str(self.port)]
        if shape == "split":
            api_env = {
                **env,
                "AGENT_LEDGER_RUN_ENGINE": "false",
                "AGENT_LEDGER_RUN_PROJECTOR": "false",
            }
            roles = [("api", serve, api_env), ("projector", ["projector"], env)]
            roles += [(f"worker-{n}", ["worker"], env) for n in range(workers)]
        else:
            roles = [("serve", serve, env)]
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

    def close(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        if self.database is not None:
            with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


async def client(base: str, user: str, window: int, until: float, latencies: list[float]) -> int:
    """Keep `window` executions in flight until `until`; returns how many completed."""
    token = issue_token(SECRET, user)
    headers = {"Authorization": f"Bearer {token}"}
    pending: dict[str, float] = {}
    done = 0
    # the client waits for completions only, as a client of this kind would subscribe
    ws_url = base.replace("http", "ws", 1) + "/v1/stream?types=execution_completed"
    # aiohttp: a lean client, so that the machine's CPU goes to the service measured
    async with (
        aiohttp.ClientSession(
            base, headers=headers, timeout=aiohttp.ClientTimeout(total=30)
        ) as http,
        websockets.connect(ws_url, additional_headers=headers, max_queue=None) as ws,
    ):

        async def start() -> None:
            sent = time.perf_counter()
            async with http.post(
                "/v1/executions", json={"process": "noop3", "input": {"n": 1}}
            ) as response:
                response.raise_for_status()
                pending[(await response.json())["id"]] = sent

        await asyncio.gather(*(start() for _ in range(window)))
        progress = time.perf_counter()
        while pending:
            if time.perf_counter() - progress > 30:  # heartbeats alone do not count
                raise RuntimeError(f"{len(pending)} executions did not complete in 30 s")
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if message.get("type") != "execution_completed":
                continue
            sent = pending.pop(message["execution_id"], None)
            if sent is None:
                continue
            progress = time.perf_counter()
            latencies.append(time.perf_counter() - sent)
            done += 1
            if time.perf_counter() < until:
                await start()
    return done


def cpu_seconds(deployment: Deployment) -> dict[str, float]:
    """CPU seconds used so far by each part of the deployment, PostgreSQL and this client."""
    used: dict[str, float] = {}
    for name, process in zip(deployment.names, deployment.processes, strict=True):
        times = psutil.Process(process.pid).cpu_times()
        used[name.split("-")[0]] = used.get(name.split("-")[0], 0.0) + times.user + times.system
    postgres = 0.0
    for process in psutil.process_iter(["name", "cpu_times"]):
        if process.info["name"] == "postgres" and process.info["cpu_times"] is not None:
            postgres += process.info["cpu_times"].user + process.info["cpu_times"].system
    used["postgres"] = postgres
    mine = psutil.Process().cpu_times()
    used["client"] = mine.user + mine.system
    return used


async def measure(base: str, clients: int, window: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    began = time.perf_counter()
    until = began + seconds
    counts = await asyncio.gather(
        *(
            client(base, f"bench-{uuid.uuid4().hex[:6]}", window, until, latencies)
            for _ in range(clients)
        )
    )
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "executions": sum(counts),
        "per_second": sum(counts) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--window", type=int, default=16, help="executions in flight per client")
    parser.add_argument("--cpu", action="store_true", help="print CPU ms per execution per part")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2], help="worker counts to run (1 2)"
    )
    parser.add_argument(
        "--clients", type=int, nargs="+", default=[1, 4], help="client counts to run (1 4)"
    )
    parser.add_argument(
        "--shape",
        choices=["split", "single", "embedded"],
        default="split",
        help="processes: split (API, projector, workers), single (one serve on PostgreSQL), "
        "embedded (one serve on SQLite)",
    )
    arguments = parser.parse_args()
    print(describe())
    print(
        f"3-step no-op process, {arguments.shape} deployment, {arguments.seconds:g} s per run, "
        f"window {arguments.window} per client"
    )
    print(
        f"{'workers':>7} {'clients':>7} {'executions':>10} {'exec/s':>8} {'p50 ms':>8} "
        f"{'p99 ms':>8}"
    )
    for workers in arguments.workers:
        with tempfile.TemporaryDirectory() as scratch:
            deployment = Deployment(workers, Path(scratch), arguments.shape)
            try:
                asyncio.run(measure(deployment.base, 1, 4, 2.0))  # warm up
                for clients in arguments.clients:
                    before = cpu_seconds(deployment)
                    figures = asyncio.run(
                        measure(deployment.base, clients, arguments.window, arguments.seconds)
                    )
                    after = cpu_seconds(deployment)
                    print(
                        f"{workers:>7} {clients:>7} {figures['executions']:>10.0f} "
                        f"{figures['per_second']:>8.1f} {figures['p50_ms']:>8.1f} "
                        f"{figures['p99_ms']:>8.1f}",
                        flush=True,
                    )
                    if arguments.cpu:
                        per = {
                            part: (after[part] - before[part]) * 1000 / figures["executions"]
                            for part in after
                        }
                        parts = "  ".join(f"{part} {ms:.2f}" for part, ms in per.items())
                        print(f"{'':>16} CPU ms/execution: {parts}  total {sum(per.values()):.2f}")
            except Exception:
                print((Path(scratch) / "api.log").read_text()[-3000:], file=sys.stderr)
                raise
            finally:
                deployment.close()
    print(f"after the runs: {describe()}")


if __name__ == "__main__":
    main()
