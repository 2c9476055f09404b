"""Memory soak: does any process's resident memory keep growing under a long, steady load?

    .venv/bin/python bench/soak.py [--executions 20000] [--reconnects 1000] [--every 2000]
        [--clients 4] [--window 8] [--single] [--admin-url postgresql://...]

On a scratch PostgreSQL database (`AGENT_LEDGER_BENCH_DATABASE_URL`, `--admin-url`, or the
local server), starts the production shape: an API process (`agent-ledger serve` with
`RUN_ENGINE=false RUN_PROJECTOR=false`), one `agent-ledger worker` and one
`agent-ledger projector` (`--single`: one `agent-ledger serve` running all three). Then:

- `--clients` users each keep `--window` executions of the one-step `echo` process in
  flight over the API (POST /v1/executions), each waiting for its `execution_completed`
  on a WebSocket tail of its own, until `--executions` have completed;
- meanwhile one more client reconnects the tail `--reconnects` times, spread evenly over the
  run: it connects to /v1/stream as the first user with `after=<last position it
  received>`, reads that user's events up to the newest completion known when it connected,
  and closes. It checks that each event arrives once, in order, across the reconnects, and
  that none stalls (10 s without the events it expects).

It prints every process's RSS (psutil) at the start and after each `--every` executions.
The first checkpoint after the start is the warm-up baseline (caches filled, pools opened,
allocator arenas grown); the target is that no process grows 10 % or more beyond it by the
end. The last line is the verdict.
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
from pathlib import Path

import aiohttp
import httpx
import psutil
import psycopg
import sqlalchemy as sa
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import describe

from agent_ledger.infrastructure.auth.tokens import issue_token
from agent_ledger.infrastructure.redact import mask_url

ADMIN_URL = os.environ.get(
    "AGENT_LEDGER_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SECRET = "bench-soak-" + "x" * 40
TARGET_GROWTH = 0.10
STALL_SECONDS = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Deployment:
    """A scratch database and the service's processes on it."""

    def __init__(self, admin_url: str, log_dir: Path, *, single: bool):
        self.admin_url = admin_url
        self.database = f"agent_ledger_soak_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{self.database}"'.encode())
        url = sa.make_url(admin_url).set(database=self.database)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_LEDGER_")}
        env.update(
            AGENT_LEDGER_DATABASE_URL=url.render_as_string(hide_password=False),
            AGENT_LEDGER_JWT_SECRET=SECRET,
            AGENT_LEDGER_PER_USER_LIMIT="10000",
            AGENT_LEDGER_ENGINE_CONCURRENCY="256",
            AGENT_LEDGER_DATA_DIR=str(log_dir),
        )
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        serve = ["serve", "--port", str(self.port)]
        if single:
            roles = [("serve", serve, env)]
        else:
            api_env = {
                **env,
                "AGENT_LEDGER_RUN_ENGINE": "false",
                "AGENT_LEDGER_RUN_PROJECTOR": "false",
            }
            roles = [("api", serve, api_env), ("worker", ["worker"], env)]
            roles.append(("projector", ["projector"], env))
        binary = str(Path(sys.executable).parent / "agent-ledger")
        self.names = [name for name, _, _ in roles]
        self.logs = [log_dir / f"{name}.log" for name in self.names]
        self.processes: list[subprocess.Popen[bytes]] = []
        for (_, arguments, environment), log_path in zip(roles, self.logs, strict=True):
            with log_path.open("wb") as log:
                self.processes.append(
                    subprocess.Popen(
                        [binary, *arguments, "--log-level", "warning"],
                        env=environment,
                        stdout=log,
                        stderr=log,
                    )
                )
        self._wait_until_serving()

    def _wait_until_serving(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for name, process, log in zip(self.names, self.processes, self.logs, strict=True):
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("the API did not answer /healthz within 60 s")

    def rss_mib(self) -> list[float]:
        return [psutil.Process(p.pid).memory_info().rss / 2**20 for p in self.processes]

    def close(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'.encode())


@dataclass
class Progress:
    """Completions so far, shared by the clients, the reconnector and the sampler."""

    target: int
    completed: int = 0
    started: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    heads: dict[str, int] = field(default_factory=dict)  # each user's newest completion

    def complete(self) -> None:
        self.completed += 1
        self.changed.set()

    async def reached(self, count: int) -> None:
        while self.completed < count:
            self.changed.clear()
            await self.changed.wait()


def headers(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(SECRET, user, ttl_seconds=24 * 3600)}"}


async def client(base: str, user: str, window: int, progress: Progress) -> None:
    """`window` slots, each starting an echo execution and waiting for its completion (on
    this user's tail), until the run's target has been started."""
    auth = headers(user)
    loop = asyncio.get_running_loop()
    waiters: dict[str, asyncio.Future[None]] = {}
    early: set[str] = set()  # completed before its POST answered
    ws_url = base.replace("http", "ws", 1) + "/v1/stream?types=execution_completed"
    async with (
        aiohttp.ClientSession(base, headers=auth, timeout=aiohttp.ClientTimeout(total=30)) as http,
        websockets.connect(ws_url, additional_headers=auth, max_queue=None) as ws,
    ):

        async def read() -> None:
            async for text in ws:
                message = json.loads(text)
                if message.get("type") != "execution_completed":
                    continue
                progress.heads[user] = max(progress.heads.get(user, 0), message["position"])
                waiter = waiters.pop(message["execution_id"], None)
                if waiter is None:
                    early.add(message["execution_id"])
                else:
                    waiter.set_result(None)

        async def slot() -> None:
            while progress.started < progress.target:
                progress.started += 1
                body = {"process": "echo", "input": {"user": user, "n": progress.started}}
                async with http.post("/v1/executions", json=body) as response:
                    response.raise_for_status()
                    execution_id = (await response.json())["id"]
                if execution_id in early:
                    early.discard(execution_id)
                else:
                    waiters[execution_id] = loop.create_future()
                    await asyncio.wait_for(waiters[execution_id], 60)
                progress.complete()

        reader = asyncio.create_task(read())
        try:
            await asyncio.gather(*(slot() for _ in range(window)))
        finally:
            reader.cancel()


@dataclass
class Reconnects:
    """The reconnecting client's record: how long each took, what it read, order errors."""

    durations: list[float] = field(default_factory=list)
    events: int = 0
    out_of_order: int = 0
    stalled: int = 0
    last_position: int = 0


async def reconnector(
    base: str, user: str, count: int, progress: Progress, close_timeout: float, record: Reconnects
) -> None:
    """`count` tail reconnects as `user`, each resuming after the last position received and
    reading up to the user's newest completion known when it connected."""
    auth = headers(user)
    for n in range(count):
        await progress.reached(progress.target * n // count)
        began = time.perf_counter()
        url = base.replace("http", "ws", 1) + f"/v1/stream?after={record.last_position}"
        head = progress.heads.get(user, 0)
        async with websockets.connect(
            url, additional_headers=auth, close_timeout=close_timeout, max_queue=None
        ) as ws:
            while record.last_position < head:
                try:
                    message = json.loads(await asyncio.wait_for(ws.recv(), STALL_SECONDS))
                except TimeoutError:
                    record.stalled += 1
                    break
                if message.get("type") == "heartbeat":
                    continue
                if message["position"] <= record.last_position:
                    record.out_of_order += 1
                record.last_position = max(record.last_position, message["position"])
                record.events += 1
        record.durations.append(time.perf_counter() - began)


class Table:
    """The RSS samples, printed as they are taken."""

    def __init__(self, deployment: Deployment, progress: Progress, record: Reconnects):
        self.deployment, self.progress, self.record = deployment, progress, record
        self.samples: list[tuple[str, list[float]]] = []
        self.began = self.last_time = time.perf_counter()
        self.last_count = 0
        names = "".join(f"{name + ' MiB':>15}" for name in deployment.names)
        print(f"{'executions':>10} {'reconnects':>10} {'elapsed s':>9} {'exec/s':>7}{names}")

    def sample(self, label: str = "") -> None:
        rss = self.deployment.rss_mib()
        now, count = time.perf_counter(), self.progress.completed
        self.samples.append((label or f"{count:,} executions", rss))
        rate = (count - self.last_count) / (now - self.last_time) if count > self.last_count else 0
        self.last_time, self.last_count = now, count
        print(
            f"{count:>10,} {len(self.record.durations):>10,} {now - self.began:>9.1f} "
            f"{rate:>7.0f}" + "".join(f"{value:>15.1f}" for value in rss) + f"  {label}",
            flush=True,
        )

    async def every(self, step: int) -> None:
        """A sample after each `step` completions, up to the target."""
        for mark in range(step, self.progress.target + 1, step):
            await self.progress.reached(mark)
            self.sample()


async def soak(deployment: Deployment, args: argparse.Namespace) -> int:
    progress = Progress(target=args.executions)
    record = Reconnects()
    table = Table(deployment, progress, record)
    table.sample("start")
    users = [f"soak-{n}" for n in range(args.clients)]
    reconnects = asyncio.create_task(
        reconnector(
            deployment.base, users[0], args.reconnects, progress, args.close_timeout, record
        )
    )
    await asyncio.gather(
        table.every(args.every),
        *(client(deployment.base, user, args.window, progress) for user in users),
    )
    await reconnects
    table.sample("end: executions and reconnects done")
    durations = sorted(record.durations)
    print(
        f"tail reconnects: {len(durations):,}, {record.events:,} events read, "
        f"{record.out_of_order} out of order or repeated, {record.stalled} stalled; "
        "per reconnect median "
        f"{statistics.median(durations) * 1000:.0f} ms, max {durations[-1] * 1000:.0f} ms "
        f"(close_timeout {args.close_timeout:g} s)"
    )
    if len(table.samples) < 3:
        print("verdict: too short to judge (needs the baseline and a later sample)")
        return 1
    (base_label, baseline), later = table.samples[1], table.samples[2:]
    parts = []
    flat = record.out_of_order == 0 and record.stalled == 0
    for n, name in enumerate(deployment.names):
        peak = max(rss[n] for _, rss in later)
        end = later[-1][1][n]
        growth = (peak - baseline[n]) / baseline[n]
        flat = flat and growth < TARGET_GROWTH
        parts.append(
            f"{name} {baseline[n]:.1f} -> end {end:.1f}, peak {peak:.1f} MiB ({growth:+.1%})"
        )
    print(f"growth after warm-up (baseline: the sample at {base_label}): " + "; ".join(parts))
    print(
        f"verdict: {'PASS' if flat else 'FAIL'}: RSS {'flat' if flat else 'NOT flat'} after "
        f"warm-up (target: every process's peak under +{TARGET_GROWTH:.0%} of the baseline; "
        f"{record.out_of_order + record.stalled} tail errors)"
    )
    return 0 if flat else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=20_000)
    parser.add_argument("--reconnects", type=int, default=1_000)
    parser.add_argument("--every", type=int, default=2_000, help="executions per RSS sample")
    parser.add_argument("--clients", type=int, default=4, help="concurrent users")
    parser.add_argument("--window", type=int, default=8, help="executions in flight per user")
    parser.add_argument("--close-timeout", type=float, default=10.0, help="tail client's, s")
    parser.add_argument("--single", action="store_true", help="one `serve` with every role")
    parser.add_argument("--admin-url", default=ADMIN_URL)
    args = parser.parse_args()
    shape = "one serve process" if args.single else "API, worker and projector processes"
    print(describe())
    print(
        f"soak: {args.executions:,} echo executions ({args.clients} clients x {args.window} in "
        f"flight), {args.reconnects:,} tail reconnects; {shape} on PostgreSQL at "
        f"{mask_url(args.admin_url)}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as scratch:
        deployment = Deployment(args.admin_url, Path(scratch), single=args.single)
        try:
            code = asyncio.run(soak(deployment, args))
        except Exception:
            for name, log in zip(deployment.names, deployment.logs, strict=True):
                print(f"--- {name}.log\n{log.read_text()[-2000:]}", file=sys.stderr)
            raise
        finally:
            deployment.close()
    print(f"after the run: {describe()}")
    raise SystemExit(code)


if __name__ == "__main__":
    main()
