"""Bearer tokens: verified once, then trusted only until they expire."""

from __future__ import annotations

import time

import pytest

from agent_ledger.infrastructure.auth import tokens as auth
from agent_ledger.infrastructure.auth.tokens import AuthenticationError, authenticate, issue_token

SECRET = "unit-secret-" + "k" * 40


def test_a_verified_token_is_refused_once_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    token = issue_token(SECRET, "ana", ("user", "auditor"), ttl_seconds=60)
    assert authenticate(token, SECRET).user_id == "ana"
    assert authenticate(token, SECRET).is_auditor  # the second use: from what was verified

    later = time.time() + 61
    monkeypatch.setattr(auth.time, "time", lambda: later)
    with pytest.raises(AuthenticationError, match="expired"):
        authenticate(token, SECRET)


def test_a_token_verified_under_one_secret_is_not_trusted_under_another() -> None:
    token = issue_token(SECRET, "ben")
    authenticate(token, SECRET)
    with pytest.raises(AuthenticationError, match="invalid"):
        authenticate(token, "another-secret-" + "k" * 40)


def test_a_tampered_token_is_refused_even_after_its_original_was_verified() -> None:
    token = issue_token(SECRET, "cy")
    authenticate(token, SECRET)
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[:-2]}AA"
    with pytest.raises(AuthenticationError, match="invalid"):
        authenticate(forged, SECRET)
