"""Bearer tokens: HS256 JWTs whose `sub` is the user and `roles` what they may do."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jwt

ROLES = frozenset({"user", "auditor", "admin"})


class AuthenticationError(Exception):
    """No usable credentials were presented."""


class PermissionDeniedError(Exception):
    """The caller is known but may not do this."""


@dataclass(frozen=True)
class Caller:
    """The authenticated subject of a request."""

    user_id: str
    roles: frozenset[str]
    issued_at: float = 0.0

    @property
    def is_auditor(self) -> bool:
        return "auditor" in self.roles or "admin" in self.roles

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def owner_filter(self) -> str | None:
        """The user whose executions this caller may see; None means every user's."""
        return None if self.is_auditor else self.user_id


def issue_token(
    secret: str, subject: str, roles: Iterable[str] = ("user",), ttl_seconds: int = 3600
) -> str:
    """Sign a token for `subject` with the given roles."""
    chosen = sorted(set(roles))
    unknown = set(chosen) - ROLES
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; choose from {sorted(ROLES)}")
    if not subject:
        raise ValueError("the subject must not be empty")
    now = int(time.time())
    claims = {"sub": subject, "roles": chosen, "iat": now, "exp": now + ttl_seconds}
    return jwt.encode(claims, secret, algorithm="HS256")


_VERIFIED: dict[tuple[str, str], tuple[Caller, float]] = {}
"""Tokens whose signature and claims were checked: (token, secret) → (caller, expiry)."""
_MAX_VERIFIED = 4096


def authenticate(token: str | None, secret: str) -> Caller:
    """Verify a bearer token and say who it belongs to.

    A client sends the same token with every request: its signature is checked once, and
    later uses only check that it has not expired (revocation is checked by the caller).
    """
    if not token:
        raise AuthenticationError("a bearer token is required")
    known = _VERIFIED.get((token, secret))
    if known is not None:
        if time.time() < known[1]:
            return known[0]
        _VERIFIED.pop((token, secret), None)
    caller, claims = _verify(token, secret)
    expires = claims["exp"]
    if isinstance(expires, int | float) and expires <= time.time():
        raise AuthenticationError("the token has expired")
    if "nbf" not in claims and isinstance(expires, int | float):
        if len(_VERIFIED) >= _MAX_VERIFIED:
            _VERIFIED.clear()
        _VERIFIED[(token, secret)] = (caller, float(expires))
    return caller


def _verify(token: str, secret: str) -> tuple[Caller, dict[str, Any]]:
    try:
        claims = jwt.decode(
            token, secret, algorithms=["HS256"], options={"require": ["sub", "exp"]}
        )
    except jwt.ExpiredSignatureError:
        raise AuthenticationError("the token has expired") from None
    except jwt.InvalidTokenError as error:
        raise AuthenticationError(f"the token is invalid: {error}") from None
    roles = claims.get("roles", ["user"])
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise AuthenticationError("the token's roles must be a list of strings")
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject:
        raise AuthenticationError("the token's subject must be a non-empty string")
    issued_at = claims.get("iat", 0)
    caller = Caller(
        user_id=subject,
        roles=frozenset(roles) & ROLES,
        issued_at=float(issued_at) if isinstance(issued_at, int | float) else 0.0,
    )
    return caller, claims


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("the Authorization header must be 'Bearer <token>'")
    return token.strip()
