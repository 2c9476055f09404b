"""Errors raised by the domain when a rule is broken."""

from __future__ import annotations


class DomainError(Exception):
    """Base class: a command broke a rule of the domain and nothing was recorded."""


class InvalidProcessDefinitionError(DomainError):
    """A process definition is malformed; `step_id` names the step at fault, if any."""

    def __init__(self, problem: str, step_id: str | None = None):
        where = f"step {step_id!r}: " if step_id is not None else ""
        super().__init__(f"{where}{problem}")
        self.problem = problem
        self.step_id = step_id


class ExpressionError(DomainError):
    """A template or condition does not parse, or fails to evaluate."""
