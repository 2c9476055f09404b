"""Bulk resume benchmark: how fast `POST /v1/executions/resume` puts failed work back.

One user starts `--executions` executions of a process that times out as a whole after
ten seconds while it waits for a signal nobody sends (so every one ends `timed_out`), on
PostgreSQL with an API, a projector and a worker process (bench/signals.py's deployment).
Then an admin resumes them all with one bulk call; the benchmark prints how long the call
took (resumes/s) and how long until every one was running again (parked at its wait step,
seen on the work queue), and the CPU each process spent on it.

    python bench/resume.py [--executions 1000] [--per-user-limit 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from machine import describe
from signals import SECRET, Deployment, cpu_seconds, start_all

from agent_ledger.infrastructure.auth.tokens import issue_token
from agent_ledger.infrastructure.catalog.sql import SqlProcessCatalog
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.persistence import read_model_engine

EXPIRING = {
    "name": "wait1",  # the deployment's starter starts `wait1`: this version times out
    "config": {"timeout_seconds": 10},
    "steps": [{"id": "review", "type": "wait_for_signal", "signal": "approval"}],
    "output": "{{ steps.review.output }}",
}


def until(condition: object, what: str, timeout: float = 120.0) -> float:
    """Seconds until `condition()` holds (polled every 20 ms; this is a benchmark's clock)."""
    began = time.perf_counter()
    while not condition():  # type: ignore[operator]
        if time.perf_counter() - began > timeout:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return time.perf_counter() - began


def caught_up(deployment: Deployment) -> bool:
    body = httpx.get(f"{deployment.base}/readyz", timeout=10).json()
    head = body["store_position"]
    return all(p["position"] >= head for p in body["projections"].values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=1000, help="executions to resume")
    parser.add_argument("--per-user-limit", type=int, default=1000, help="the user's limit")
    parser.add_argument("--concurrency", type=int, default=32, help="the worker's slots")
    arguments = parser.parse_args()
    count = arguments.executions
    print(describe())
    with tempfile.TemporaryDirectory() as scratch:
        deployment = Deployment(arguments.per_user_limit, arguments.concurrency, Path(scratch))
        try:
            settings = Settings(database_url=deployment.url, jwt_secret=SECRET)
            engine = read_model_engine(settings)
            SqlProcessCatalog(engine).register(EXPIRING)
            engine.dispose()
            asyncio.run(start_all(deployment.base, count))
            until(lambda: deployment.queue()["rows"] == 0, "every execution to time out")
            until(lambda: caught_up(deployment), "the status view to catch up")
            admin = {"Authorization": f"Bearer {issue_token(SECRET, 'ops', ['admin'])}"}
            before = cpu_seconds(deployment)
            began = time.perf_counter()
            answer = httpx.post(
                f"{deployment.base}/v1/executions/resume",
                json={"status": ["timed_out"], "limit": count, "reason": "bench"},
                headers=admin,
                timeout=300,
            )
            called = time.perf_counter() - began
            answer.raise_for_status()
            resumed = len(answer.json()["resumed"])
            back = called + until(
                lambda: deployment.queue()["waiting"] >= resumed, "every one to run again"
            )
            after = cpu_seconds(deployment)
            per = {part: (after[part] - before[part]) * 1000 / resumed for part in after}
            print(
                f"bulk resume of {resumed} timed-out executions (of {count}): the call took "
                f"{called:.2f} s ({resumed / called:.0f} resumes/s); all running again "
                f"(parked at their wait step) after {back:.2f} s ({resumed / back:.0f}/s)"
            )
            print(
                "CPU ms per resumed execution: "
                + "  ".join(f"{part} {ms:.2f}" for part, ms in per.items())
                + f"  total {sum(per.values()):.2f}"
            )
        except Exception:
            for name in deployment.names:
                log = (Path(scratch) / f"{name}.log").read_text()[-2000:]
                print(f"--- {name}.log\n{log}", file=sys.stderr)
            raise
        finally:
            deployment.close()
    print(f"after the run: {describe()}")


if __name__ == "__main__":
    main()
