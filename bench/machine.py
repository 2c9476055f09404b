"""How fast this machine is right now, so that figures from different days compare.

Machines of the same type have measured 2x apart from one day to the next, and even
within an hour; the benchmarks here are CPU-bound, so a figure means little without
this one next to it (printed before and after a run, to show drift during it).
"""

from __future__ import annotations

import json
import time

_DOCUMENT = {
    "steps": [
        {"id": f"s{n}", "input": {"n": n, "text": "x" * 40, "tags": list(range(10))}}
        for n in range(50)
    ]
}


def speed_probe(rounds: int = 5) -> float:
    """Milliseconds a fixed pure-Python workload takes (best of `rounds`; lower is faster):
    a loop, JSON encoding and decoding, and small allocations, as a service does."""
    best = float("inf")
    for _ in range(rounds):
        began = time.perf_counter()
        total = 0
        for n in range(500_000):
            total += n
        for _ in range(200):
            json.loads(json.dumps(_DOCUMENT))
            [{"a": n, "b": str(n)} for n in range(100)]
        best = min(best, time.perf_counter() - began)
    return best * 1000


def describe() -> str:
    return f"CPU speed probe: {speed_probe():.0f} ms (lower is faster)"
