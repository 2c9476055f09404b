"""Audit benchmark: chain verification throughput and point-in-time load time on PostgreSQL.

    .venv/bin/python bench/audit.py [--events 1000000] [--admin-url postgresql://...]

Creates a scratch database, fills it with executions of 1,000 events each (built by the
domain, encoded by the application's mapper, bulk-copied), then prints events/s verified
from the store (the whole store in parallel processes, as `verify_store` does it, and one
execution at a time, as `GET /v1/executions/{id}/verify` does it) and milliseconds per
state-at-version and state-at-time load.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
import uuid

import psycopg
import sqlalchemy as sa

from agent_ledger.application.executions import Executions
from agent_ledger.domain.executions import Execution
from agent_ledger.infrastructure.audit.service import open_audit, verify_store
from agent_ledger.infrastructure.schema import initialize_schema
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.persistence import (
    EVENTS_TABLE,
    open_executions,
    read_model_engine,
)

PER_EXECUTION = 1000


def long_execution(index: int) -> Execution:
    execution = Execution.start(
        user_id=f"user-{index % 50}",
        process_name="bench",
        process_version=1,
        definition={"steps": [{"id": "think", "type": "agent_task", "agent": "echo"}]},
        step_ids=["think"],
        input={"question": f"question {index}"},
        caused_by="user:bench",
        correlation_id=f"req-{index}",
    )
    execution.act_as("worker:bench", f"req-{index}")
    execution.schedule_step("think", 1)
    execution.start_step("think", 1)
    execution.start_agent("think", 1, "echo", {"question": index})
    while execution.version < PER_EXECUTION:
        execution.record_thinking("think", 1, f"thought {execution.version} of {index}")
    return execution


def fill(executions: Executions, url: str, count: int) -> list[uuid.UUID]:
    ids = []
    with psycopg.connect(url) as connection, connection.cursor() as cursor:
        columns = "originator_id, originator_version, topic, state"
        with cursor.copy(f"COPY {EVENTS_TABLE} ({columns}) FROM STDIN") as copy:
            for index in range(count):
                execution = long_execution(index)
                ids.append(execution.id)
                for event in execution.collect_events():
                    stored = executions.mapper.to_stored_event(event)
                    copy.write_row(
                        (
                            stored.originator_id,
                            stored.originator_version,
                            stored.topic,
                            stored.state,
                        )
                    )
        connection.commit()
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--loads", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2, help="processes verifying the store")
    parser.add_argument(
        "--one-by-one", type=int, default=100, help="executions verified one at a time"
    )
    args = parser.parse_args()
    name = f"agent_ledger_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"'.encode())
    url = sa.make_url(args.admin_url).set(database=name).render_as_string(hide_password=False)
    settings = Settings(database_url=url, jwt_secret="bench" * 8)
    try:
        run(settings, url, args.events // PER_EXECUTION, args)
    finally:
        with psycopg.connect(args.admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())


def run(settings: Settings, url: str, count: int, args: argparse.Namespace) -> None:
    loads = args.loads
    initialize_schema(settings)
    executions = open_executions(settings)
    engine = read_model_engine(settings)
    audit = open_audit(settings, executions, engine)
    try:
        started = time.perf_counter()
        ids = fill(executions, url, count)
        print(f"filled {count * PER_EXECUTION:,} events in {time.perf_counter() - started:.1f} s")

        started, cpu = time.perf_counter(), _cpu()
        verifications = verify_store(settings, workers=args.workers)
        elapsed, cpu = time.perf_counter() - started, _cpu() - cpu
        assert len(verifications) == count, len(verifications)
        assert all(v.ok for v in verifications), [v for v in verifications if not v.ok][:3]
        verified = sum(v.verdict.events for v in verifications)
        print(
            f"verified {verified:,} events of {count:,} executions from the store in "
            f"{elapsed:.2f} s ({args.workers} processes): {verified / elapsed:,.0f} events/s "
            f"wall, {verified / cpu:,.0f} events/s per CPU second used by the benchmark and "
            "its workers (target >= 100,000)"
        )

        started, cpu = time.perf_counter(), _cpu()
        verified = 0
        for execution_id in ids[: args.one_by_one]:
            verification = audit.verify(execution_id, owner=None)
            assert verification.ok, verification
            verified += verification.verdict.events
        elapsed, cpu = time.perf_counter() - started, _cpu() - cpu
        print(
            f"one execution at a time (the API's verify), {verified:,} events: "
            f"{verified / elapsed:,.0f} events/s wall, {verified / cpu:,.0f} events/s of CPU"
        )

        long = long_execution(count + 1)
        pending = long.collect_events()
        for start in range(0, len(pending), 100):  # saved in batches: snapshots every 100
            executions.events.put(pending[start : start + 100])
            executions.take_snapshot(long.id, version=pending[start + 99].originator_version)
        timestamps = [e.timestamp for e in pending]  # type: ignore[attr-defined]
        measure(
            "state at version",
            loads,
            lambda: audit.get_state(long.id, owner=None, version=random.randint(1, 999)),
        )
        measure(
            "state at time",
            loads,
            lambda: audit.get_state(long.id, owner=None, at=random.choice(timestamps[:-1])),
        )
        measure(
            "state at version, no snapshot (full replay of up to 1,000)",
            max(loads // 10, 5),
            lambda: audit.get_state(ids[0], owner=None, version=random.randint(900, 999)),
        )
    finally:
        executions.close()
        engine.dispose()


def _cpu() -> float:
    """CPU seconds of this process and of its finished children (the verifying workers)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def measure(label: str, times: int, load: object) -> None:
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        load()  # type: ignore[operator]
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    print(
        f"{label}: median {statistics.median(samples):.2f} ms, "
        f"p95 {samples[int(len(samples) * 0.95) - 1]:.2f} ms over {times} loads "
        f"(target <= 20 ms)"
    )


if __name__ == "__main__":
    main()
