"""Reference point: the same 3-step no-op workflow on LangGraph, measured on this machine.

A `StateGraph` of three nodes (one -> two -> three, each returning its input) compiled
with LangGraph's PostgreSQL checkpointer and invoked with durability "sync": each node's
checkpoint is committed before the next node runs. A fresh thread_id per run. Two modes:
`threads` (N threads, each with its own `PostgresSaver` and connection, one run at a
time) and `async` (N asyncio tasks, each with its own `AsyncPostgresSaver`); N is the
number in flight. Latency is from invoke to result.

LangGraph is not a dependency of Agent Ledger; this script makes a venv of its own on
first use (see peer_venv.py) and re-runs itself in it:

    python bench/peer_langgraph.py [--seconds 10] [--windows 1 4 16] [--modes threads async]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import threading
import time
import uuid
from contextlib import AsyncExitStack, ExitStack
from typing import Any, TypedDict

from peer_venv import run_in_venv

REQUIREMENTS = [
    "langgraph>=1.0,<2",
    "langgraph-checkpoint-postgres>=3,<4",
    "psycopg[binary]>=3.2,<4",
    "psycopg-pool>=3.2,<4",
    "psutil",
]
if __name__ == "__main__":
    run_in_venv("langgraph", REQUIREMENTS)

import psycopg  # noqa: E402
from langgraph.checkpoint.postgres import PostgresSaver  # noqa: E402
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver  # noqa: E402
from langgraph.graph import END, START, StateGraph  # noqa: E402
from machine import describe  # noqa: E402

ADMIN_URL = os.environ.get(
    "AGENT_LEDGER_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


class State(TypedDict):
    n: int


def echo(state: State) -> State:
    return state


def builder() -> StateGraph[State]:
    graph = StateGraph(State)
    graph.add_node("one", echo)
    graph.add_node("two", echo)
    graph.add_node("three", echo)
    graph.add_edge(START, "one")
    graph.add_edge("one", "two")
    graph.add_edge("two", "three")
    graph.add_edge("three", END)
    return graph


def config() -> Any:
    return {"configurable": {"thread_id": uuid.uuid4().hex}}


def figures(latencies: list[float], elapsed: float) -> dict[str, float]:
    latencies.sort()
    return {
        "runs": len(latencies),
        "per_second": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


def measure_threads(url: str, in_flight: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    lock = threading.Lock()
    with ExitStack() as stack:
        graphs = [
            builder().compile(checkpointer=stack.enter_context(PostgresSaver.from_conn_string(url)))
            for _ in range(in_flight)
        ]

        def runner(graph: Any, until: float) -> None:
            while time.perf_counter() < until:
                sent = time.perf_counter()
                graph.invoke({"n": 1}, config(), durability="sync")
                with lock:
                    latencies.append(time.perf_counter() - sent)

        began = time.perf_counter()
        threads = [
            threading.Thread(target=runner, args=(graph, began + seconds)) for graph in graphs
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
    return figures(latencies, elapsed)


async def measure_async(url: str, in_flight: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    async with AsyncExitStack() as stack:
        graphs = [
            builder().compile(
                checkpointer=await stack.enter_async_context(
                    AsyncPostgresSaver.from_conn_string(url)
                )
            )
            for _ in range(in_flight)
        ]

        async def runner(graph: Any, until: float) -> None:
            while time.perf_counter() < until:
                sent = time.perf_counter()
                await graph.ainvoke({"n": 1}, config(), durability="sync")
                latencies.append(time.perf_counter() - sent)

        began = time.perf_counter()
        await asyncio.gather(*(runner(graph, began + seconds) for graph in graphs))
        elapsed = time.perf_counter() - began
    return figures(latencies, elapsed)


def measure(mode: str, url: str, in_flight: int, seconds: float) -> dict[str, float]:
    if mode == "threads":
        return measure_threads(url, in_flight, seconds)
    return asyncio.run(measure_async(url, in_flight, seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--windows", type=int, nargs="+", default=[1, 4, 16], help="in flight")
    parser.add_argument("--modes", nargs="+", choices=["threads", "async"], default=None)
    parser.add_argument("--json", action="store_true", help="one JSON object per row")
    parser.add_argument("--setup", action="store_true", help="only make the venv")
    arguments = parser.parse_args()
    if arguments.setup:
        return
    modes = arguments.modes or ["threads", "async"]
    notes = sys.stderr if arguments.json else sys.stdout
    database = f"langgraph_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{database}"')
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{database}"
    try:
        with PostgresSaver.from_conn_string(url) as saver:
            saver.setup()
        for mode in modes:
            measure(mode, url, 4, 1.5)  # warm up
        print(describe(), file=notes)
        if not arguments.json:
            print(
                f"LangGraph 3-node no-op graph, PostgreSQL checkpointer, durability sync, "
                f"{arguments.seconds:g} s per run"
            )
            print(
                f"{'mode':>7} {'in flight':>9} {'runs':>7} {'wf/s':>8} {'p50 ms':>8} {'p99 ms':>8}"
            )
        best: dict[int, tuple[str, float]] = {}
        for window in arguments.windows:
            for mode in modes:
                row = measure(mode, url, window, arguments.seconds)
                if row["per_second"] > best.get(window, ("", 0.0))[1]:
                    best[window] = (mode, row["per_second"])
                if arguments.json:
                    print(
                        json.dumps(
                            {"system": "langgraph", "mode": mode, "in_flight": window, **row}
                        ),
                        flush=True,
                    )
                else:
                    print(
                        f"{mode:>7} {window:>9} {row['runs']:>7.0f} {row['per_second']:>8.1f} "
                        f"{row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f}",
                        flush=True,
                    )
        if not arguments.json:
            print(
                "best mode: "
                + ", ".join(
                    f"{window} in flight {mode} {rate:.1f}/s"
                    for window, (mode, rate) in best.items()
                )
            )
        print(f"after the runs: {describe()}", file=notes)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


if __name__ == "__main__":
    main()
