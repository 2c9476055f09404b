"""Read-model benchmark on PostgreSQL: rebuild throughput over stored events, projection lag.

    .venv/bin/python bench/read_models.py [--events 1000000] [--rate 1000] [--seconds 20]

Creates a scratch database (dropped at the end), stores `--events` real execution events
(18 per execution: start, two agent steps with a tool call each, completion; 64 executions per
save), rebuilds `execution_status` and `metrics` from scratch (`projections rebuild`), then runs
one `agent-ledger projector` process and appends `--rate` events/s for `--seconds`, measuring
per save the time until every projection has applied it. Targets: rebuild >= 20,000 events/s,
lag p99 <= 100 ms.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
import sqlalchemy as sa

from agent_ledger.application.executions import Executions
from agent_ledger.domain.executions import Execution
from agent_ledger.infrastructure.read_models.rebuild import Rebuild, RebuildProgress
from agent_ledger.infrastructure.read_models.registry import (
    VERSIONED_PROJECTIONS,
    all_projection_names,
)
from agent_ledger.infrastructure.read_models.table_sets import active_tables
from agent_ledger.infrastructure.read_models.tables import projection_tracking
from agent_ledger.infrastructure.schema import initialize_schema
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.persistence import open_executions, read_model_engine

ADMIN_URL = os.environ.get(
    "AGENT_LEDGER_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1/postgres"
)
STEPS = ["triage", "data"]
EVENTS_PER_EXECUTION = 18


def an_execution(index: int) -> Execution:
    """A finished two-step execution with one tool call per step (18 events)."""
    execution = Execution.start(
        user_id=f"user-{index % 50}",
        process_name="bench",
        process_version=1,
        definition={"name": "bench"},
        step_ids=STEPS,
        input={"n": index},
    )
    for step in STEPS:
        execution.schedule_step(step, 1)
        execution.start_step(step, 1)
        execution.start_agent(step, 1, step, {"n": index})
        execution.record_thinking(step, 1, "thinking")
        execution.start_tool(step, 1, "c1", "lookup", {"k": index})
        execution.complete_tool(step, 1, "c1", {"v": index}, 1.5)
        execution.complete_agent(step, 1, {"ok": True}, 12.5 + index % 7)
        execution.complete_step(step, 1, {"ok": True})
    execution.complete({"done": index})
    return execution


def store_events(settings: Settings, total: int) -> float:
    executions = open_executions(settings)
    count = total // EVENTS_PER_EXECUTION
    started = time.perf_counter()
    for start in range(0, count, 64):
        executions.save(*(an_execution(i) for i in range(start, min(start + 64, count))))
        if start % 6400 == 0:
            print(f"  stored {start * EVENTS_PER_EXECUTION:,} events", end="\r", file=sys.stderr)
    seconds = time.perf_counter() - started
    stored = executions.last_position()
    executions.close()
    print(f"stored {stored:,} events in {seconds:.1f}s ({stored / seconds:,.0f} events/s)")
    return stored


def rebuild(settings: Settings, name: str) -> float:
    executions = open_executions(settings)
    engine = read_model_engine(settings)

    def report(progress: RebuildProgress) -> None:
        print(f"  {name}: {progress.position:,}/{progress.head:,}", end="\r", file=sys.stderr)

    try:
        final = Rebuild(executions, engine, name, report=report).run(grace_seconds=0)
    finally:
        executions.close()
        engine.dispose()
    print(
        f"rebuild {name}: {final.events:,} events in {final.seconds:.1f}s "
        f"= {final.rate:,.0f} events/s (target >= 20,000)"
    )
    return final.rate


def append_at_rate(
    executions: Executions, rate: int, seconds: float, saved: list[tuple[int, float]]
) -> None:
    """Save 3 executions (54 events) at a time, paced to `rate` events/s; note each save."""
    per_save = 3
    interval = per_save * EVENTS_PER_EXECUTION / rate
    next_at = time.perf_counter()
    end = next_at + seconds
    index = 10**7
    while time.perf_counter() < end:
        batch = [an_execution(index + i) for i in range(per_save)]
        index += per_save
        recordings = executions.save(*batch)
        saved.append((recordings[-1].notification.id, time.perf_counter()))
        next_at += interval
        time.sleep(max(0.0, next_at - time.perf_counter()))


def measure_lag(settings: Settings, rate: int, seconds: float) -> list[float]:
    executions = open_executions(settings)
    engine = read_model_engine(settings)
    env = {
        **os.environ,
        "AGENT_LEDGER_DATABASE_URL": str(settings.database_url),
        "AGENT_LEDGER_JWT_SECRET": "bench" * 10,
        "AGENT_LEDGER_POLL_INTERVAL": "0.5",
    }
    binary = shutil.which("agent-ledger", path=os.path.dirname(sys.executable))
    assert binary, "agent-ledger is not installed next to python"
    projector = subprocess.Popen([binary, "projector", "--log-level", "warning"], env=env)
    saved: list[tuple[int, float]] = []
    lags: list[float] = []
    done = threading.Event()

    with engine.connect() as connection:
        tracking = [
            active_tables(connection, n).tracking_name if n in VERSIONED_PROJECTIONS else n
            for n in all_projection_names()
        ]
    least = sa.select(sa.func.min(projection_tracking.c.position), sa.func.count()).where(
        projection_tracking.c.name.in_(tracking)
    )

    def applied() -> int:
        """The position every projection has reached (0 until each has a tracking row)."""
        with engine.connect() as connection:
            position, rows = connection.execute(least).one()
        return int(position or 0) if rows == len(tracking) else 0

    def watch() -> None:
        index = 0
        while not done.is_set() or index < len(saved):
            position = applied()
            now = time.perf_counter()
            while index < len(saved) and saved[index][0] <= position:
                lags.append(now - saved[index][1])
                index += 1
            time.sleep(0.001)

    try:
        head = executions.last_position()
        deadline = time.monotonic() + 600
        while applied() < head:  # the event index catches up on the stored events first
            assert time.monotonic() < deadline, "the projector did not catch up"
            time.sleep(0.2)
        watcher = threading.Thread(target=watch)
        watcher.start()
        append_at_rate(executions, rate, seconds, saved)
        done.set()
        watcher.join(timeout=60)
    finally:
        projector.terminate()
        projector.wait(timeout=30)
        executions.close()
        engine.dispose()
    return lags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=1000, help="events/s appended for the lag")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    name = f"agent_ledger_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"'.encode())
    url = sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    data_dir = Path(f"/tmp/{name}")
    settings = Settings(database_url=url, jwt_secret="bench" * 10, data_dir=data_dir)
    try:
        initialize_schema(settings)
        store_events(settings, args.events)
        rebuild(settings, "execution_status")
        rebuild(settings, "metrics")
        lags = sorted(measure_lag(settings, args.rate, args.seconds))
        p50 = statistics.median(lags) * 1000
        p99 = lags[max(int(len(lags) * 0.99) - 1, 0)] * 1000
        print(
            f"lag over {len(lags)} saves at ~{args.rate} events/s: p50 {p50:.1f} ms, "
            f"p99 {p99:.1f} ms, max {lags[-1] * 1000:.1f} ms (target p99 <= 100 ms)"
        )
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
