"""What the walking skeleton promises, checked the same way in the integration and e2e tiers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

QUESTION = "Where can we cut our LLM spend?"
START_COST_OPTIMIZATION = {"process": "cost_optimization", "input": {"question": QUESTION}}
AGENT_STEPS = ("triage", "data", "optimization", "summary")
AGENT_EVENTS = (
    "agent_started",
    "agent_thinking",
    "tool_executing",
    "tool_completed",
    "agent_completed",
)
TERMINAL_EVENTS = frozenset(
    {"execution_completed", "execution_failed", "execution_cancelled", "execution_timed_out"}
)
PROBLEM_JSON = "application/problem+json"
MAX_INPUT_BYTES = 64 * 1024

Message = dict[str, Any]


def ends(message: Message, execution_id: str) -> bool:
    """Whether `message` is the terminal event of `execution_id`."""
    return message["execution_id"] == execution_id and message["type"] in TERMINAL_EVENTS


def assert_positions_strictly_increase(messages: list[Message]) -> None:
    positions = [m["position"] for m in messages]
    assert positions == sorted(set(positions)), f"positions repeat or go back: {positions}"
    keys = [(m["execution_id"], m["version"]) for m in messages]
    assert len(keys) == len(set(keys)), "an event was delivered twice"


def assert_agent_steps_stream_in_order(messages: list[Message], execution_id: str) -> None:
    """Each agent step shows its agent events in order (first of each), then the completion."""
    assert_positions_strictly_increase(messages)
    own = [m for m in messages if m["execution_id"] == execution_id]
    types = [m["type"] for m in own]
    assert types[0] == "execution_started", types
    assert types[-1] == "execution_completed", types
    assert types.count("execution_completed") == 1
    completed_at = len(own) - 1
    for step in AGENT_STEPS:
        in_step = [(i, m["type"]) for i, m in enumerate(own) if m["data"].get("step_id") == step]
        firsts = []
        for kind in AGENT_EVENTS:
            found = [i for i, t in in_step if t == kind]
            assert found, f"step {step!r} has no {kind}: {[t for _, t in in_step]}"
            firsts.append(found[0])
        assert firsts == sorted(firsts), f"step {step!r} is out of order: {in_step}"
        assert firsts[-1] < completed_at


def same_events(messages: list[Message]) -> list[Message]:
    """Messages with their timestamps as instants: the tail writes `+00:00`, history `Z`."""
    return [{**m, "timestamp": datetime.fromisoformat(m["timestamp"])} for m in messages]


def assert_problem(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    """An RFC 9457 problem with a stable type, a title and a useful detail."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["type"] == f"/problems/{kind}", body
    assert body["status"] == status
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert len(body["detail"]) > 5
    return body


def oversized_start() -> dict[str, Any]:
    """A start request whose input is just over the default input limit."""
    return {"process": "echo", "input": {"blob": "x" * (MAX_INPUT_BYTES + 1)}}
