"""The sample process definitions registered at start-up."""

from __future__ import annotations

from typing import Any

_RETRY = {"max_attempts": 2, "initial_interval": 0.2, "backoff_coefficient": 2.0, "max_interval": 2}

COST_OPTIMIZATION: dict[str, Any] = {
    "name": "cost_optimization",
    "config": {"parallel_execution": False, "stop_on_failure": True, "timeout_seconds": 300},
    "steps": [
        {
            "id": "triage",
            "type": "agent_task",
            "agent": "triage",
            "input": {"question": "{{ input.question }}"},
            "timeout_seconds": 5,
            "retry": dict(_RETRY),
        },
        {
            "id": "data",
            "type": "agent_task",
            "agent": "data",
            "depends_on": ["triage"],
            "input": {"focus": "{{ steps.triage.output }}"},
            "timeout_seconds": 8,
            "retry": dict(_RETRY),
        },
        {
            "id": "optimization",
            "type": "agent_task",
            "agent": "optimization",
            "depends_on": ["data"],
            "input": {"findings": "{{ steps.data.output }}"},
            "timeout_seconds": 10,
            "retry": dict(_RETRY),
        },
        {
            "id": "summary",
            "type": "agent_task",
            "agent": "summary",
            "depends_on": ["optimization"],
            "input": {
                "question": "{{ input.question }}",
                "recommendations": "{{ steps.optimization.output }}",
            },
            "timeout_seconds": 5,
            "retry": dict(_RETRY),
        },
    ],
    "output": "{{ steps.summary.output }}",
}
"""Answer a question about spend: triage it, gather data, price changes, summarise."""

ECHO: dict[str, Any] = {
    "name": "echo",
    "config": {"parallel_execution": False, "stop_on_failure": True, "timeout_seconds": 60},
    "steps": [{"id": "echo", "type": "agent_task", "agent": "echo", "input": "{{ input }}"}],
    "output": "{{ steps.echo.output }}",
}
"""Return the execution's input unchanged: a smoke check of a deployment."""
