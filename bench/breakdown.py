"""Where one execution's time goes: its path through the processes, measured by timestamps.

Runs the 3-step no-op process of `engine_throughput.py` with `AGENT_LEDGER_PATH_TIMING`
set, so that every process marks the points an execution passes (`application/path_timing.py`),
and this client marks its POST, the response and the `execution_completed` frame. The marks
of all processes (one wall clock) are joined by execution id and position, and each leg's
median and p90 over the run is printed, for 1 and 4 in flight and each deployment shape.

    python bench/breakdown.py [--seconds 8] [--windows 1 4] [--shapes split single embedded]

At 4 in flight the legs overlap other executions' work (the notices are not per execution,
so a leg that starts at a notice is matched to the first notice after the write).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

import aiohttp
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_throughput import SECRET, Deployment
from machine import describe

from agent_ledger.infrastructure.auth.tokens import issue_token

Marks = dict[str, list[tuple[int, str]]]  # point → [(ns, key)], sorted by time

LEGS = [
    # (leg, from point, to point, how `to` is found); the path a client waits on, in order
    ("HTTP request in, auth, body validation", "client.post", "api.route", "next"),
    ("process lookup, new aggregate + ExecutionStarted", "api.route", "api.created", "id"),
    ("to the commit thread", "api.created", "api.commit.begin", "id"),
    ("API commit (encode, append, enqueue, NOTIFY)", "api.commit.begin", "worker.notice", "next"),
    ("worker wake-up, to its thread", "worker.notice", "worker.claiming", "next"),
    ("claim (admission, lease, commit)", "worker.claiming", "worker.claimed", "id"),
    ("load the execution", "worker.claimed", "worker.loaded", "id"),
    ("back to the event loop, driver", "worker.loaded", "worker.driving", "id"),
    ("3 steps (16 events, hashes)", "worker.driving", "worker.finishing", "id"),
    ("ExecutionCompleted, to the commit thread", "worker.finishing", "worker.commit.begin", "id"),
    ("engine commit (encode, append, NOTIFY)", "worker.commit.begin", "feed.notice", "position"),
    ("feed wake-up and read", "feed.notice", "feed.read", "position"),
    ("to the event loop, fan-out", "feed.read", "tail.fan_out", "position"),
    ("queued for the socket", "tail.fan_out", "tail.send", "position"),
    ("sent, WebSocket frame read by the client", "tail.send", "client.completed", "id"),
]
SIDE = [
    # the 201 meanwhile
    ("API commit as its thread sees it", "api.commit.begin", "api.commit.end", "id"),
    ("back to the event loop", "api.commit.end", "api.commit.resolved", "id"),
    ("201 built, sent, read by the client", "api.commit.resolved", "client.response", "id"),
    ("POST → 201 read by the client", "client.post", "client.response", "id"),
]


async def drive(base: str, window: int, seconds: float, marks: list[tuple[str, str, int]]) -> int:
    """Keep `window` executions in flight for `seconds`, marking the client's points."""
    headers = {
        "Authorization": f"Bearer {issue_token(SECRET, 'breakdown-' + uuid.uuid4().hex[:6])}"
    }
    ws_url = base.replace("http", "ws", 1) + "/v1/stream?types=execution_completed"
    pending: set[str] = set()
    done = 0
    until = time.monotonic() + seconds
    async with (
        aiohttp.ClientSession(base, headers=headers) as http,
        websockets.connect(ws_url, additional_headers=headers, max_queue=None) as ws,
    ):

        async def start() -> None:
            sent = time.time_ns()
            async with http.post(
                "/v1/executions", json={"process": "noop3", "input": {"n": 1}}
            ) as response:
                response.raise_for_status()
                body = await response.json()
            received = time.time_ns()
            marks.append(("client.post", body["id"], sent))
            marks.append(("client.response", body["id"], received))
            pending.add(body["id"])

        await asyncio.gather(*(start() for _ in range(window)))
        while pending:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if message.get("type") != "execution_completed":
                continue
            key = message["execution_id"]
            marks.append(("client.completed", key, time.time_ns()))
            marks.append(("client.position", key, message["position"]))
            pending.discard(key)
            done += 1
            if time.monotonic() < until:
                await start()
    return done


def load_marks(directory: Path, client: list[tuple[str, str, int]]) -> Marks:
    """Every process's marks by point; commits are told apart by role (api or worker)."""
    marks: Marks = defaultdict(list)
    for point, key, ns in client:
        marks[point].append((ns, key))
    for path in directory.glob("*.tsv"):
        role = path.name.split("-")[0]
        for line in path.read_text().splitlines():
            point, key, ns = line.split("\t")
            marks[_named(point, key, role)].append((int(ns), key.split(" ")[0]))
    for entries in marks.values():
        entries.sort()
    return marks


def _named(point: str, key: str, role: str) -> str:
    if not point.startswith("commit."):
        return point
    return f"{'worker' if role == 'worker' else 'api'}.{point}"


def split_single_commits(marks: Marks) -> None:
    """With every role in one process, an execution's first commit is the API's, the rest
    the worker's."""
    for point in ("commit.begin", "commit.end", "commit.resolved"):
        seen: set[str] = set()
        api, worker = [], []
        for ns, key in marks.pop(f"api.{point}", []):
            (worker if key in seen else api).append((ns, key))
            seen.add(key)
        marks[f"api.{point}"], marks[f"worker.{point}"] = api, worker


def legs(marks: Marks) -> dict[str, list[float]]:
    """Each leg's durations (ms) over the executions the client completed."""
    by_id: dict[str, dict[str, int]] = defaultdict(dict)
    for point, entries in marks.items():
        for ns, key in entries:
            by_id[key].setdefault(point, ns)  # the first time the point was reached for it
    final_position = {key: int(pos) for pos, key in marks.get("client.position", [])}
    times = {point: [ns for ns, _ in entries] for point, entries in marks.items()}
    by_position: dict[str, dict[int, int]] = defaultdict(dict)
    for point in ("feed.notice", "feed.read", "tail.fan_out", "tail.send"):
        for ns, key in marks.get(point, []):
            if key.isdigit():
                by_position[point].setdefault(int(key), ns)
    durations: dict[str, list[float]] = defaultdict(list)
    for key, position in final_position.items():
        points = by_id[key]
        if "client.post" not in points:
            continue
        reached = dict(points)
        for leg, start, end, how in LEGS + SIDE:
            began = reached.get(start)
            if began is None:
                continue
            ended: int | None = None
            if how == "id":
                ended = points.get(end)
            elif how == "next":
                found = times.get(end, [])
                index = bisect.bisect_left(found, began)
                ended = found[index] if index < len(found) else None
            else:  # the first mark whose position covers the execution's last event
                ended = min(
                    (ns for pos, ns in by_position[end].items() if pos >= position and ns >= began),
                    default=None,
                )
            if ended is None:
                continue
            reached[end] = ended
            durations[leg].append((ended - began) / 1e6)
        if "client.completed" in points:
            durations["total (POST sent → execution_completed read)"].append(
                (points["client.completed"] - points["client.post"]) / 1e6
            )
    return durations


def report(title: str, durations: dict[str, list[float]]) -> None:
    print(f"\n{title}")
    print(f"{'leg':<52} {'p50 ms':>7} {'p90 ms':>7} {'n':>5}")
    total = "total (POST sent → execution_completed read)"
    for leg in [leg for leg, *_ in LEGS] + [total, ""] + [leg for leg, *_ in SIDE]:
        if not leg:
            print("meanwhile:")
            continue
        values = sorted(durations.get(leg, []))
        if not values:
            print(f"{leg:<52} {'—':>7} {'—':>7} {0:>5}")
            continue
        p90 = values[min(len(values) - 1, int(len(values) * 0.9))]
        print(f"{leg:<52} {statistics.median(values):>7.2f} {p90:>7.2f} {len(values):>5}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--windows", type=int, nargs="+", default=[1, 4])
    parser.add_argument(
        "--shapes", nargs="+", default=["split", "single"], choices=["split", "single", "embedded"]
    )
    arguments = parser.parse_args()
    print(describe())
    for shape in arguments.shapes:
        for window in arguments.windows:
            with tempfile.TemporaryDirectory() as scratch:
                directory = Path(scratch) / "marks"
                deployment = Deployment(
                    1, Path(scratch), shape, {"AGENT_LEDGER_PATH_TIMING": str(directory)}
                )
                client: list[tuple[str, str, int]] = []
                try:
                    asyncio.run(drive(deployment.base, window, 2.0, []))  # warm up
                    done = asyncio.run(drive(deployment.base, window, arguments.seconds, client))
                finally:
                    deployment.close()
                marks = load_marks(directory, client)
                if shape != "split":
                    split_single_commits(marks)
                report(
                    f"{shape}, {window} in flight: {done / arguments.seconds:.0f} executions/s",
                    legs(marks),
                )
    print(f"\nafter the runs: {describe()}")


if __name__ == "__main__":
    main()
