"""Reference point: the same 3-step no-op workflow on DBOS, measured on this machine.

The engine's throughput target was set against durable-workflow libraries measured on
one machine; the machines these benchmarks run on differ in speed by 2x and more from
day to day. Running a peer next to `engine_throughput.py` tells which is which.

DBOS is not a dependency of Agent Ledger; this script makes a venv of its own on first
use (see peer_venv.py) and re-runs itself in it:

    python bench/peer_dbos.py [--seconds 10] [--windows 1 4 16] [--json]

One client thread keeps W workflows in flight (`DBOS.start_workflow`, a new one as each
completes; DBOS's thread API gave it its best figures here). Every step is checkpointed
in PostgreSQL, DBOS's default. Latency is from start to result.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any

from peer_venv import run_in_venv

REQUIREMENTS = ["dbos>=3,<4", "psycopg[binary]>=3.2,<4", "psutil"]
if __name__ == "__main__":
    run_in_venv("dbos", REQUIREMENTS)

import psycopg  # noqa: E402
from dbos import DBOS  # noqa: E402
from machine import describe  # noqa: E402

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


def measure(window: int, seconds: float) -> dict[str, float]:
    """One client thread (this one) keeping `window` workflows in flight for `seconds`."""
    latencies: list[float] = []
    in_flight: dict[Future[Any], tuple[Any, float]] = {}

    def start() -> None:
        handle = DBOS.start_workflow(noop3, {"n": 1})
        in_flight[handle.future] = (handle, time.perf_counter())  # type: ignore[attr-defined]

    began = time.perf_counter()
    for _ in range(window):
        start()
    while in_flight:
        done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
        for future in done:
            handle, sent = in_flight.pop(future)
            handle.get_result()
            latencies.append(time.perf_counter() - sent)
            if time.perf_counter() < began + seconds:
                start()
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "runs": len(latencies),
        "per_second": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--windows", type=int, nargs="+", default=[1, 4, 16], help="in flight")
    parser.add_argument("--json", action="store_true", help="one JSON object per row")
    parser.add_argument("--setup", action="store_true", help="only make the venv")
    arguments = parser.parse_args()
    if arguments.setup:
        return
    notes = sys.stderr if arguments.json else sys.stdout
    database = f"dbos_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{database}"')
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{database}"
    DBOS(config={"name": "peer_bench", "system_database_url": url, "log_level": "WARNING"})
    DBOS.launch()
    try:
        measure(4, 2.0)  # warm up
        print(describe(), file=notes)
        if not arguments.json:
            print(f"DBOS 3-step no-op workflow, PostgreSQL, {arguments.seconds:g} s per run")
            print(f"{'in flight':>9} {'workflows':>9} {'wf/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
        for window in arguments.windows:
            row = measure(window, arguments.seconds)
            if arguments.json:
                print(
                    json.dumps({"system": "dbos", "mode": "threads", "in_flight": window, **row}),
                    flush=True,
                )
            else:
                print(
                    f"{window:>9} {row['runs']:>9.0f} {row['per_second']:>8.1f} "
                    f"{row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f}",
                    flush=True,
                )
        print(f"after the runs: {describe()}", file=notes)
    finally:
        DBOS.destroy()
        with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


if __name__ == "__main__":
    main()
