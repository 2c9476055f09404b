"""Reference point: the same 3-step no-op workflow on DBOS, measured on this machine.

The engine's throughput target was set against durable-workflow libraries measured on
one machine; the machines these benchmarks run on differ in speed by 2x and more from
day to day. Running a peer next to `engine_throughput.py` tells which is which.

DBOS is not a dependency of Agent Ledger; give it a virtual environment of its own:

    python3 -m venv /tmp/dbos && /tmp/dbos/bin/pip install dbos psutil
    /tmp/dbos/bin/python bench/peer_dbos.py [--seconds 10] [--window 16]

Each client is a thread keeping `window` workflows in flight (DBOS's thread API gave it
its best figures here). Every step is checkpointed in PostgreSQL, DBOS's default.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any

import psycopg
from dbos import DBOS
from machine import describe

ADMIN_URL = os.environ.get(
    "AGENT_LEDGER_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@DBOS.step()
def one(value: Any) -> Any:
    return value


@DBOS.step()
def two(value: Any) -> Any:
    return value


@DBOS.step()
def three(value: Any) -> Any:
    return value


@DBOS.workflow()
def noop3(value: Any) -> Any:
    return three(two(one(value)))


def client(window: int, until: float, latencies: list[float], lock: threading.Lock) -> None:
    in_flight: dict[Future[Any], tuple[Any, float]] = {}

    def start() -> None:
        handle = DBOS.start_workflow(noop3, {"n": 1})
        in_flight[handle.future] = (handle, time.perf_counter())  # type: ignore[attr-defined]

    for _ in range(window):
        start()
    while in_flight:
        done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
        for future in done:
            handle, sent = in_flight.pop(future)
            handle.get_result()
            with lock:
                latencies.append(time.perf_counter() - sent)
            if time.perf_counter() < until:
                start()


def measure(clients: int, window: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    lock = threading.Lock()
    began = time.perf_counter()
    threads = [
        threading.Thread(target=client, args=(window, began + seconds, latencies, lock))
        for _ in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "workflows": len(latencies),
        "per_second": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--window", type=int, default=16, help="workflows in flight per client")
    arguments = parser.parse_args()
    database = f"dbos_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{database}"')
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{database}"
    DBOS(config={"name": "peer_bench", "system_database_url": url, "log_level": "WARNING"})
    DBOS.launch()
    try:
        measure(1, 4, 2.0)  # warm up
        print(describe())
        print(f"DBOS 3-step no-op workflow, PostgreSQL, {arguments.seconds:g} s per run")
        print(f"{'clients':>7} {'workflows':>9} {'wf/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
        for clients in (1, 4):
            figures = measure(clients, arguments.window, arguments.seconds)
            print(
                f"{clients:>7} {figures['workflows']:>9.0f} {figures['per_second']:>8.1f} "
                f"{figures['p50_ms']:>8.1f} {figures['p99_ms']:>8.1f}",
                flush=True,
            )
        print(f"after the runs: {describe()}")
    finally:
        DBOS.destroy()
        with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


if __name__ == "__main__":
    main()
