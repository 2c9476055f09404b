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

APPROVAL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "approved": {"type": "boolean"},
        "comment": {"type": "string", "maxLength": 2000},
    },
    "required": ["approved"],
    "additionalProperties": False,
}

COST_OPTIMIZATION_APPROVED: dict[str, Any] = {
    "name": "cost_optimization_approved",
    "description": "cost_optimization, then a person approves or rejects the recommendation.",
    "config": {"parallel_execution": False, "stop_on_failure": True},
    "steps": [
        *(dict(step) for step in COST_OPTIMIZATION["steps"]),
        {
            "id": "approval",
            "type": "wait_for_signal",
            "signal": "approval",
            "depends_on": ["summary"],
            "timeout_seconds": 7 * 24 * 3600,
            "allowed_roles": ["user", "admin"],
            "schema": APPROVAL_SCHEMA,
        },
        {
            "id": "decision",
            "type": "gateway",
            "depends_on": ["approval"],
            "routes": [
                {"when": "steps.approval.output.approved", "next": ["publish"]},
                {"default": True, "next": ["shelve"]},
            ],
        },
        {
            "id": "publish",
            "type": "agent_task",
            "agent": "echo",
            "input": {
                "status": "approved",
                "comment": "{{ steps.approval.output.comment | default('') }}",
            },
        },
        {
            "id": "shelve",
            "type": "agent_task",
            "agent": "echo",
            "input": {
                "status": "rejected",
                "comment": "{{ steps.approval.output.comment | default('') }}",
            },
        },
    ],
    "output": {
        "answer": "{{ steps.summary.output.answer }}",
        "projected_monthly_savings_usd": "{{ steps.summary.output.projected_monthly_savings_usd }}",
        "approval": "{{ steps.approval.output }}",
    },
}
"""`cost_optimization` whose recommendation is final only once a person approves it: the
execution waits (holding no worker) for the signal `approval` `{approved, comment?}`."""

ECHO: dict[str, Any] = {
    "name": "echo",
    "config": {"parallel_execution": False, "stop_on_failure": True, "timeout_seconds": 60},
    "steps": [{"id": "echo", "type": "agent_task", "agent": "echo", "input": "{{ input }}"}],
    "output": "{{ steps.echo.output }}",
}
"""Return the execution's input unchanged: a smoke check of a deployment."""


SPEND_TOOLS = (
    "spend_overview",
    "spend_by",
    "model_usage",
    "model_prices",
    "estimate_model_switch",
    "estimate_prompt_caching",
    "idle_capacity",
)

_ANALYST_PROMPT = (
    "You are a FinOps analyst. Answer questions about the company's cloud and LLM spend "
    "over the last 90 days. Use the tools to look at the data before you answer: never "
    "invent figures. Recommend concrete changes with their projected monthly savings in "
    "USD, largest first, and say which tool results they rest on. Be brief."
)


def cost_optimization_llm(model: str) -> dict[str, Any]:
    """`cost_optimization` answered by a language model using the spend data set's tools
    (registered when a model provider is configured)."""
    return {
        "name": "cost_optimization_llm",
        "description": "A model agent answers a spend question with the data set's tools.",
        "config": {"parallel_execution": False, "stop_on_failure": True, "timeout_seconds": 600},
        "steps": [
            {
                "id": "analyst",
                "type": "agent_task",
                "agent": {
                    "llm": {
                        "model": model,
                        "system": _ANALYST_PROMPT,
                        "prompt": "{{ input.question }}",
                        "tools": list(SPEND_TOOLS),
                        "max_turns": 8,
                    }
                },
                "timeout_seconds": 300,
                "retry": {
                    "max_attempts": 3,
                    "initial_interval": 1.0,
                    "backoff_coefficient": 2.0,
                    "max_interval": 20,
                    "non_retryable_errors": ["ModelRejected", "MaxTurnsExceeded"],
                },
            }
        ],
        "output": "{{ steps.analyst.output }}",
    }
