"""Bearer tokens minted in-process with a test's secret (the CLI costs seconds a token)."""

from __future__ import annotations

from agent_ledger.infrastructure.auth.tokens import issue_token

TTL = 600


def token(secret: str, user: str, *roles: str, ttl: int = TTL) -> str:
    """A token for `user` with `roles` (`user` when none are named)."""
    return issue_token(secret, user, roles or ("user",), ttl_seconds=ttl)


def bearer(secret: str, user: str, *roles: str, ttl: int = TTL) -> dict[str, str]:
    """The `Authorization` header of `token(secret, user, *roles, ttl=ttl)`."""
    return {"Authorization": f"Bearer {token(secret, user, *roles, ttl=ttl)}"}
