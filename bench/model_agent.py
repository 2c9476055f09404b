"""Model-agent benchmark: the worker's overhead per model call, over the OpenAI stub.

    .venv/bin/python bench/model_agent.py [--executions 100] [--tokens 1000]
        [--concurrency 16] [--pace 500] [--paced-executions 16] [--paced-concurrency 4]
        [--cpu]

On a fresh PostgreSQL database (`AGENT_LEDGER_BENCH_DATABASE_URL`, or the local server) it
registers a one-step process whose step is a model agent (`{"llm": {"model": ...,
"prompt": "{{ input.q }}"}}`), runs the OpenAI-compatible stub of the tests
(tests/support/openai_stub.py) in this process and ONE real `agent-ledger worker`
subprocess pointed at it (`AGENT_LEDGER_LLM_BASE_URL`). It keeps `--concurrency`
executions in flight (started in place, by the API's start command; the worker drives up
to that many at once) until `--executions` have finished. Each model answer streams
`--tokens` tokens, one per SSE chunk (4 characters each), without delay: the model is
infinitely fast, so what is measured is the product's overhead (the official `openai`
client reading the stream, the coalescing into `AgentOutputDelta` events, recording
them). Completions are found by polling the store's log (no fixed sleeps), latencies
taken from the events' own timestamps (`ExecutionStarted` to `ExecutionCompleted`). A
warm-up batch runs first (the worker's start-up, its client's first request) and is not
counted.

The second row (`--pace`, tokens per second of each stream; 0 skips it) has the stub
stream at a realistic pace (a `delay` between chunks; the stub's sleeps overshoot, so
the pace it reaches is a little lower: see `tok/s/stream`), with fewer executions in
flight (`--paced-concurrency`) so that the worker keeps up. It shows the coalescing under
real pacing (a delta every 50 ms rather than every 64 pieces) and what a stream that
arrives chunk by chunk costs.

Columns: executions; tokens streamed (the sum of `LlmCallCompleted.completion_tokens`);
wall seconds; events recorded and events/s; `AgentOutputDelta` events per execution;
tokens per second of one stream as the worker received it (tokens over
`LlmCallCompleted.duration_ms`); worker CPU (user + system, psutil) in ms per 1,000
streamed tokens and per model call; p50/p95 execution latency. The stub, this
benchmark's polling and PostgreSQL share the machine with the worker, and so may other
work: the wall-clock figures are the machine's of the moment, the CPU ones the worker's
own (the steadier). `--cpu` adds a line under each row: CPU ms per 1,000 tokens of this
process (the stub and the polling) and of this database's PostgreSQL backends.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from uuid import UUID

import psutil
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.support

from machine import describe

from agent_ledger.application.agents import AgentRegistry
from agent_ledger.application.builtin_agents import register_builtin_agents
from agent_ledger.application.executions import Executions
from agent_ledger.application.processes import RegisteredProcess
from agent_ledger.application.starter import StartRequest, start_execution
from agent_ledger.infrastructure.catalog.sql import SqlProcessCatalog
from agent_ledger.infrastructure.runtime import registration_checks
from agent_ledger.infrastructure.schema import initialize_schema
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.persistence import open_executions, read_model_engine
from tests.support.openai_stub import OpenAiStub, Reply

ADMIN_URL = os.environ.get(
    "AGENT_LEDGER_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SECRET = "bench-model-" + "x" * 40
MODEL = "bench-model"
PIECE = 4
"""Characters per SSE chunk: one token each."""
WARM_UP_TOKENS = 64
STALL_SECONDS = 30.0
"""A batch fails when no execution finishes for this long."""
POLL_SECONDS = 0.01
WATCHED = frozenset(
    {"execution_started", "execution_completed", "execution_failed", "execution_cancelled"}
)
PROCESS = {
    "name": "model_bench",
    "steps": [
        {
            "id": "answer",
            "type": "agent_task",
            "agent": {"llm": {"model": MODEL, "prompt": "{{ input.q }}"}},
        }
    ],
    "output": "{{ steps.answer.output }}",
}
WORDS = ["idle", "gpu", "capacity", "is", "the", "first", "cost", "to", "cut", "then", "move"]
HEADER = (
    f"{'stream':>8} {'execs':>5} {'tokens':>7} {'wall s':>6} {'events':>6} {'events/s':>8} "
    f"{'deltas/x':>8} {'tok/s/stream':>12} {'CPU ms/1k tok':>13} {'CPU ms/call':>11} "
    f"{'p50 ms':>6} {'p95 ms':>6}"
)


def answer_text(tokens: int) -> str:
    """`tokens` pieces of `PIECE` characters, words as a model's answer has them."""
    pieces = [f"{word} "[:PIECE].ljust(PIECE) for word in WORDS]
    return "".join(pieces[n % len(pieces)] for n in range(tokens))


@dataclass
class Figures:
    """What one batch measured."""

    executions: int
    wall: float
    latencies: list[float]
    worker_cpu: float
    other_cpu: dict[str, float]
    events: Counter[str] = field(default_factory=Counter)
    tokens: int = 0
    streaming_seconds: float = 0.0

    def show(self, label: str, cpu: bool) -> None:
        latencies = sorted(self.latencies)
        p95 = latencies[max(0, math.ceil(len(latencies) * 0.95) - 1)]
        calls = self.events["llm_call_completed"]
        print(
            f"{label:>8} {self.executions:>5} {self.tokens:>7} {self.wall:>6.1f} "
            f"{self.events.total():>6} {self.events.total() / self.wall:>8.0f} "
            f"{self.events['agent_output_delta'] / self.executions:>8.1f} "
            f"{self.tokens / self.streaming_seconds:>12.0f} "
            f"{self.worker_cpu * 1e6 / self.tokens:>13.1f} "
            f"{self.worker_cpu * 1000 / calls:>11.1f} "
            f"{statistics.median(latencies) * 1000:>6.0f} {p95 * 1000:>6.0f}",
            flush=True,
        )
        if cpu:
            parts = "  ".join(
                f"{part} {seconds * 1e6 / self.tokens:.1f}"
                for part, seconds in self.other_cpu.items()
            )
            print(f"{'':>8} CPU ms/1k tok elsewhere: {parts}", flush=True)


class Deployment:
    """A fresh database with the process registered, and one worker on the stub."""

    def __init__(self, stub: OpenAiStub, concurrency: int, log_dir: Path):
        self.stub = stub
        self.database = f"agent_ledger_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{self.database}"'.encode())
        url = ADMIN_URL.rsplit("/", 1)[0] + f"/{self.database}"
        settings = Settings(
            database_url=url, jwt_secret=SECRET, data_dir=log_dir, llm_base_url=stub.base_url
        )
        initialize_schema(settings)
        agents = AgentRegistry()
        register_builtin_agents(agents)
        engine = read_model_engine(settings)
        catalog = SqlProcessCatalog(engine, checks=registration_checks(settings, agents))
        self.process: RegisteredProcess = catalog.register(PROCESS)[0]
        engine.dispose()
        self.executions: Executions = open_executions(settings)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_LEDGER_")}
        env.update(
            AGENT_LEDGER_DATABASE_URL=url,
            AGENT_LEDGER_JWT_SECRET=SECRET,
            AGENT_LEDGER_LLM_BASE_URL=stub.base_url,
            AGENT_LEDGER_PER_USER_LIMIT="100000",
            AGENT_LEDGER_ENGINE_CONCURRENCY=str(concurrency),
            AGENT_LEDGER_DATA_DIR=str(log_dir),
        )
        binary = str(Path(sys.executable).parent / "agent-ledger")
        self.log = log_dir / "worker.log"
        with self.log.open("wb") as out:
            self.worker = subprocess.Popen(
                [binary, "worker", "--log-level", "warning"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used so far by the worker, this process (the stub and the polling)
        and the PostgreSQL backends connected to this database (not the server's shared
        processes, nor other databases' backends: other work may share the machine)."""
        worker = psutil.Process(self.worker.pid).cpu_times()
        mine = psutil.Process().cpu_times()
        postgres = 0.0
        for process in psutil.process_iter(["name", "cmdline", "cpu_times"]):
            info = process.info
            ours = f" {self.database} " in " ".join(info["cmdline"] or ())
            if info["name"] == "postgres" and ours and info["cpu_times"] is not None:
                postgres += info["cpu_times"].user + info["cpu_times"].system
        return {
            "worker": worker.user + worker.system,
            "stub+bench": mine.user + mine.system,
            "postgres": postgres,
        }

    def close(self) -> None:
        self.executions.close()
        self.worker.terminate()
        try:
            self.worker.wait(20)
        except subprocess.TimeoutExpired:
            self.worker.kill()
            self.worker.wait(10)
        with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'.encode())


def run_batch(
    deployment: Deployment, count: int, tokens: int, concurrency: int, delay: float = 0.0
) -> Figures:
    """Keep `concurrency` executions in flight until `count` have finished."""
    executions = deployment.executions
    reply = Reply(text=answer_text(tokens), piece=PIECE, delay=delay, completion_tokens=tokens)
    deployment.stub.queue(MODEL, *([reply] * count))
    first = position = executions.last_position()
    started_at: dict[UUID, float] = {}
    latencies: list[float] = []
    failed: list[UUID] = []
    launched = 0

    def launch() -> None:
        nonlocal launched
        request = StartRequest(user_id="bench", process=deployment.process, input={"q": "go"})
        start_execution(executions, request)
        launched += 1

    cpu_before = deployment.cpu_seconds()
    began = time.perf_counter()
    for _ in range(min(concurrency, count)):
        launch()
    progress = time.monotonic()
    while len(latencies) < count:
        page = executions.read_log(after=position, types=WATCHED)
        for logged in page:
            event = logged.event
            when = event.timestamp.timestamp()  # type: ignore[attr-defined]
            if logged.type == "execution_started":
                started_at[event.originator_id] = when
                continue
            latencies.append(when - started_at.pop(event.originator_id))
            progress = time.monotonic()
            if logged.type != "execution_completed":
                failed.append(event.originator_id)
            if launched < count:
                launch()
        if page:
            position = page[-1].position
            continue
        if deployment.worker.poll() is not None:
            raise RuntimeError(f"the worker exited: {deployment.log.read_text()[-3000:]}")
        if time.monotonic() - progress > STALL_SECONDS:
            raise RuntimeError(f"{count - len(latencies)} executions stalled: see the worker log")
        time.sleep(POLL_SECONDS)  # the polling's pace, not a wait for something to happen
    wall = time.perf_counter() - began
    cpu_after = deployment.cpu_seconds()
    if failed:
        error = executions.get_execution(failed[0]).error
        raise RuntimeError(f"{len(failed)} executions did not complete, the first: {error}")
    cpu = {part: cpu_after[part] - cpu_before[part] for part in cpu_after}
    figures = Figures(count, wall, latencies, cpu.pop("worker"), cpu)
    tally(executions, first, figures)
    return figures


def tally(executions: Executions, after: int, figures: Figures) -> None:
    """Count the batch's events by type; sum its model calls' tokens and streaming time."""
    upto = executions.last_position()
    while page := executions.read_log(after=after, upto=upto):
        for logged in page:
            figures.events[logged.type] += 1
            if logged.type == "llm_call_completed":
                call = logged.event
                figures.tokens += call.completion_tokens or 0  # type: ignore[attr-defined]
                figures.streaming_seconds += call.duration_ms / 1000  # type: ignore[attr-defined]
        after = page[-1].position


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=1000, help="tokens per model answer")
    parser.add_argument("--concurrency", type=int, default=16, help="executions in flight")
    parser.add_argument(
        "--pace", type=float, default=500.0, help="tokens/s of each paced stream (0: no such row)"
    )
    parser.add_argument("--paced-executions", type=int, default=16)
    parser.add_argument("--paced-concurrency", type=int, default=4)
    parser.add_argument("--cpu", action="store_true", help="CPU of the stub and PostgreSQL too")
    arguments = parser.parse_args()
    print(describe())
    print(
        f"one model step, PostgreSQL, 1 worker, {arguments.tokens} tokens per answer "
        f"({PIECE} characters per SSE chunk); in flight: {arguments.concurrency} "
        f"(no wait), {arguments.paced_concurrency} (paced)"
    )
    print(HEADER, flush=True)
    in_flight = max(arguments.concurrency, arguments.paced_concurrency)
    with tempfile.TemporaryDirectory() as scratch, OpenAiStub.running() as stub:
        deployment = Deployment(stub, in_flight, Path(scratch))
        try:
            run_batch(deployment, in_flight, WARM_UP_TOKENS, in_flight)  # not shown
            figures = run_batch(
                deployment, arguments.executions, arguments.tokens, arguments.concurrency
            )
            figures.show("no wait", arguments.cpu)
            if arguments.pace > 0:
                figures = run_batch(
                    deployment,
                    arguments.paced_executions,
                    arguments.tokens,
                    arguments.paced_concurrency,
                    delay=1 / arguments.pace,
                )
                figures.show(f"{arguments.pace:g}/s", arguments.cpu)
        finally:
            deployment.close()
    print(f"after the runs: {describe()}")


if __name__ == "__main__":
    main()
