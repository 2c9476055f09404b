"""Agent figures computed straight from raw event messages, to check the metrics projection.

Written apart from `projections/metrics.py` on purpose: it follows the rules in the README
(a run per `agent_started`; closed by the agent's own result, else by the end of its attempt
or its execution; its model calls are its attempt's `llm_call_completed`) over the wire form
of the events.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

ATTEMPT_ENDS = {
    "step_timed_out": "timeout",
    "step_cancelled": "cancelled",
    "step_completed": "failure",
    "step_failed": "failure",
    "step_retrying": "failure",
    "step_skipped": "failure",
}
EXECUTION_ENDS = {
    "execution_completed": "failure",  # an agent still open when its execution completed
    "execution_failed": "failure",
    "execution_timed_out": "timeout",
    "execution_cancelled": "cancelled",
}
COUNTED = {
    "success": "successes",
    "failure": "failures",
    "timeout": "timeouts",
    "cancelled": "cancelled",
    "running": "running",
}


def _ms(start: str, end: str) -> float:
    delta = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    return round(delta.total_seconds() * 1000, 3)


def _rank(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(fraction * len(ordered)), 1) - 1]


def _figures(runs: list[dict[str, Any]], target_ms: float | None) -> dict[str, Any]:
    figures: dict[str, Any] = {label: 0 for label in COUNTED.values()}
    figures["runs"] = len(runs)
    figures["retries"] = sum(r["retries"] for r in runs)
    timed = [r["duration"] for r in runs if r["outcome"] in ("success", "failure", "timeout")]
    for run in runs:
        figures[COUNTED[run["outcome"]]] += 1
    figures["sla_breaches"] = sum(1 for d in timed if target_ms is not None and d > target_ms)
    figures["duration_ms"] = {
        "p50": _rank(timed, 0.5),
        "p95": _rank(timed, 0.95),
        "p99": _rank(timed, 0.99),
    }
    calls = [call for r in runs for call in r["calls"]]
    priced = [call["cost_usd"] for call in calls if call["cost_usd"] is not None]
    figures["usage"] = {
        "model_calls": len(calls),
        "prompt_tokens": sum(call["prompt_tokens"] or 0 for call in calls),
        "completion_tokens": sum(call["completion_tokens"] or 0 for call in calls),
        "cost_usd": round(sum(priced), 9) if priced or not calls else None,
        "unpriced_calls": len(calls) - len(priced),
    }
    return figures


def agent_figures_from_events(
    messages: list[dict[str, Any]], targets_ms: dict[str, float]
) -> dict[str, dict[str, Any]]:
    """Per agent name: `totals` and `series` exactly as `/v1/metrics/agents` returns them."""
    runs: dict[tuple[str, str, int], dict[str, Any]] = {}
    for m in messages:
        kind, data, stamp = m["type"], m["data"], m["timestamp"]
        key = (m["execution_id"], data.get("step_id", ""), data.get("attempt", 0))
        run = runs.get(key)
        if kind == "agent_started":
            runs[key] = {
                "name": data["agent"],
                "start": stamp,
                "outcome": "running",
                "duration": None,
                "retries": 0,
                "calls": [],
            }
        elif kind == "llm_call_completed" and run:  # whatever the attempt's outcome
            run["calls"].append(data)
        elif kind in ("agent_completed", "agent_failed") and run and run["outcome"] == "running":
            run["outcome"] = "success" if kind == "agent_completed" else "failure"
            run["duration"] = data["duration_ms"]
        elif kind in ATTEMPT_ENDS and run:
            if run["outcome"] == "running":
                run["outcome"], run["duration"] = ATTEMPT_ENDS[kind], _ms(run["start"], stamp)
            if kind == "step_retrying":
                run["retries"] = 1
        elif kind in EXECUTION_ENDS:
            for (execution_id, _, _), other in runs.items():
                if execution_id == m["execution_id"] and other["outcome"] == "running":
                    other["outcome"] = EXECUTION_ENDS[kind]
                    other["duration"] = _ms(other["start"], stamp)
    result: dict[str, dict[str, Any]] = {}
    for name in sorted({r["name"] for r in runs.values()}):
        named = [r for r in runs.values() if r["name"] == name]
        minutes: dict[str, list[dict[str, Any]]] = {}
        for run in named:
            minute = datetime.fromisoformat(run["start"]).replace(second=0, microsecond=0)
            minutes.setdefault(minute.isoformat().replace("+00:00", "Z"), []).append(run)
        result[name] = {
            "totals": _figures(named, targets_ms.get(name)),
            "series": [
                {"minute": minute, **_figures(minutes[minute], targets_ms.get(name))}
                for minute in sorted(minutes)
            ],
        }
    return result
