"""Agent Ledger next to DBOS and LangGraph: the same 3-step no-op workflow, taken in turns.

The 2-core machines these run on drift by 2x within the hour, so figures compare only
when taken side by side: each round runs every system once (at every in-flight level),
the order reversed from one round to the next so that none is always first. The product
runs in this process as `engine_throughput.py` does (API, projector and 1 worker process
on a fresh PostgreSQL database); each peer runs its own script with `--json`, in the
venv it makes for itself (made before the rounds, untimed).

    .venv/bin/python bench/compare.py [--seconds 8] [--rounds 2] [--windows 1 4 16]
        [--systems product dbos langgraph] [--shapes split]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from engine_throughput import Deployment, measure  # noqa: E402
from machine import describe  # noqa: E402

PEERS = {"langgraph": "peer_langgraph.py", "dbos": "peer_dbos.py"}
DASH = "\u2013"  # en dash, for ranges
Row = dict[str, Any]  # per_second, p50_ms, p99_ms (and mode, for LangGraph's best)


def run_product(shape: str, windows: list[int], seconds: float) -> dict[int, Row]:
    with tempfile.TemporaryDirectory() as scratch:
        # shape= only when asked for: Deployment has it only in newer revisions
        options: dict[str, Any] = {} if shape == "split" else {"shape": shape}
        deployment = Deployment(1, Path(scratch), **options)
        try:
            asyncio.run(measure(deployment.base, 1, 4, 2.0))  # warm up
            rows = {}
            for window in windows:
                figures = asyncio.run(measure(deployment.base, 1, window, seconds))
                rows[window] = {**figures, "mode": shape}
            return rows
        except Exception:
            for log in sorted(Path(scratch).glob("*.log")):
                print(f"--- {log.name}\n{log.read_text()[-3000:]}", file=sys.stderr)
            raise
        finally:
            deployment.close()


def run_peer(system: str, windows: list[int], seconds: float) -> dict[int, Row]:
    """The peer's best mode at each in-flight level."""
    arguments = ["--json", "--seconds", str(seconds), "--windows", *map(str, windows)]
    done = subprocess.run(
        [sys.executable, str(BENCH / PEERS[system]), *arguments],
        check=False,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        sys.exit(f"{PEERS[system]} exited with {done.returncode}")
    rows: dict[int, Row] = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            best = rows.get(row["in_flight"])
            if best is None or row["per_second"] > best["per_second"]:
                rows[row["in_flight"]] = row
    return rows


def label(shape: str) -> str:
    return "product" if shape == "split" else f"product-{shape}"


def span(values: list[float], fmt: str) -> str:
    low, high = format(min(values), fmt), format(max(values), fmt)
    return low if low == high else f"{low}{DASH}{high}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--windows", type=int, nargs="+", default=[1, 4, 16], help="in flight")
    parser.add_argument(
        "--systems", nargs="+", choices=["product", "dbos", "langgraph"], default=None
    )
    parser.add_argument(
        "--shapes", nargs="+", choices=["split", "single", "embedded"], default=["split"]
    )
    arguments = parser.parse_args()
    shapes = {label(shape): shape for shape in arguments.shapes}
    systems: list[str] = []
    for system in arguments.systems or ["product", "dbos", "langgraph"]:
        systems += list(shapes) if system == "product" else [system]
    for system in systems:
        if system in PEERS:  # make its venv now, not inside a measured round
            subprocess.run([sys.executable, str(BENCH / PEERS[system]), "--setup"], check=True)

    results: dict[str, list[dict[int, Row]]] = {system: [] for system in systems}
    print(f"start: {describe()}", flush=True)
    for round_ in range(1, arguments.rounds + 1):
        for system in systems if round_ % 2 else systems[::-1]:
            if system in PEERS:
                rows = run_peer(system, arguments.windows, arguments.seconds)
            else:
                rows = run_product(shapes[system], arguments.windows, arguments.seconds)
            results[system].append(rows)
            figures = "  ".join(
                f"{window}: {row['per_second']:.0f}/s p50 {row['p50_ms']:.1f} ms"
                + (f" ({row['mode']})" if system == "langgraph" else "")
                for window, row in rows.items()
            )
            print(f"round {round_} {system:<16} {figures}", flush=True)
        print(f"after round {round_}: {describe()}", flush=True)
    report(results, arguments.windows, arguments.rounds, arguments.seconds)


def report(
    results: dict[str, list[dict[int, Row]]], windows: list[int], rounds: int, seconds: float
) -> None:
    def values(system: str, window: int, key: str) -> list[float]:
        return [float(rows[window][key]) for rows in results.get(system, [])]

    def median(system: str, window: int, key: str) -> float:
        return statistics.median(values(system, window, key))

    products = [system for system in results if system.startswith("product")]
    header = ["in flight", *results]
    for product in products:
        header += [f"{product}/{peer} wf/s" for peer in PEERS if peer in results]
        if "langgraph" in results:
            header.append(f"p50 {product} vs langgraph")
    table = []
    for window in windows:
        cells = [str(window)]
        for system, measured in results.items():
            cell = (
                f"{span(values(system, window, 'per_second'), '.0f')}/s, "
                f"p50 {span(values(system, window, 'p50_ms'), '.1f')} ms"
            )
            if system == "langgraph":
                cell += f" ({'/'.join(sorted({rows[window]['mode'] for rows in measured}))})"
            cells.append(cell)
        for product in products:
            rate = median(product, window, "per_second")
            for peer in PEERS:
                if peer in results:
                    cells.append(f"{rate / median(peer, window, 'per_second'):.2f}x")
            if "langgraph" in results:
                cells.append(
                    f"{median(product, window, 'p50_ms'):.1f} vs "
                    f"{median('langgraph', window, 'p50_ms'):.1f} ms"
                )
        table.append(cells)

    widths = [max(len(row[n]) for row in [header, *table]) for n in range(len(header))]
    print()
    for row in [header, *table]:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    footer = (
        f"{rounds} round(s) of {seconds:g} s per measurement; ranges are over rounds, ratios "
        "and p50 comparisons use the median of rounds (of 2, their mean); LangGraph is its "
        "best mode in each round (threads or async, named), DBOS one client thread."
    )
    print(footer)
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in table:
        print("| " + " | ".join(row) + " |")
    print()
    print(footer)
    print()
    for product in products:
        p50 = median(product, 1, "p50_ms") if 1 in windows else None
        print(
            f"target: {product} p50 at 1 in flight ≤ 6 ms: "
            + ("not measured" if p50 is None else f"{p50:.1f} ms, {verdict(p50 <= 6)}")
        )
        ratio = None
        if 4 in windows and "langgraph" in results:
            ratio = median(product, 4, "per_second") / median("langgraph", 4, "per_second")
        print(
            f"target: {product} at 4 in flight ≥ 1.5x LangGraph best mode: "
            + ("not measured" if ratio is None else f"{ratio:.2f}x, {verdict(ratio >= 1.5)}")
        )


def verdict(met: bool) -> str:
    return "met" if met else "NOT MET"


if __name__ == "__main__":
    main()
