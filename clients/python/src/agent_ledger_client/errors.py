"""What the client raises: the server's problem+json answers and a tail that cannot go on."""

from __future__ import annotations

from typing import Any


class AgentLedgerError(Exception):
    """The base of everything this client raises on its own."""


class ApiError(AgentLedgerError):
    """A 4xx or 5xx answer; `problem` is its problem+json body (or `{"detail": text}`)."""

    def __init__(self, status: int, problem: dict[str, Any], text: str = ""):
        self.status = status
        self.problem = problem
        self.text = text
        super().__init__(f"{status} {problem.get('title', '')}: {problem.get('detail', text)}")


class AuthenticationError(ApiError):
    """401: no token, a bad one or an expired one (and no refresh hook fixed it)."""


class NotFoundError(ApiError):
    """404: no such execution for this caller."""


class ConflictError(ApiError):
    """409: a rule refused the command (already finished, a key reused with another body…)."""


class StreamClosedError(AgentLedgerError):
    """The tail was closed with a code that a reconnect cannot fix (4400, 4401, 4403, 4404)."""

    def __init__(self, code: int, reason: str):
        self.code = code
        self.reason = reason
        super().__init__(f"the tail closed with {code}: {reason}")


def api_error(status: int, body: Any, text: str) -> ApiError:
    """The error for an answer with this status."""
    problem = body if isinstance(body, dict) else {"detail": text}
    kind = {401: AuthenticationError, 404: NotFoundError, 409: ConflictError}.get(status, ApiError)
    return kind(status, problem, text)
