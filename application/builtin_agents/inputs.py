"""Reading the loosely shaped inputs that steps hand to the built-in agents."""

from __future__ import annotations

from agent_ledger.application.agents import JSON, AgentError

DEFAULT_DAYS = 30
FOCI = ("llm", "cloud", "all")


def object_input(value: JSON, agent: str) -> dict[str, JSON]:
    """Return a step input as an object; no input is an empty one, anything else fails."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise AgentError(
            f"the {agent} agent expects an object input, got {type(value).__name__}",
            error_type="InvalidInput",
            retryable=False,
        )
    return value


def object_field(value: JSON, key: str) -> dict[str, JSON]:
    """Return `value[key]` when both are objects, else an empty object."""
    field = value.get(key) if isinstance(value, dict) else None
    return field if isinstance(field, dict) else {}


def days_field(value: JSON, default: int = DEFAULT_DAYS) -> int:
    """Return the window length an object names, or the default when it names none."""
    days = value.get("days") if isinstance(value, dict) else None
    return days if isinstance(days, int) and not isinstance(days, bool) and days > 0 else default


def focus_field(value: JSON) -> str:
    """Return the focus (`llm`, `cloud` or `all`) named directly or by an object."""
    focus = value.get("focus") if isinstance(value, dict) else value
    return focus if focus in FOCI else "all"


def number(value: JSON) -> float:
    """Return a JSON number as a float, or 0.0 for anything else."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
