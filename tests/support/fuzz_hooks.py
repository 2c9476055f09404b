"""Schemathesis hooks of the API fuzz (tests/e2e/test_api_fuzz.py), loaded by `st run`."""

from __future__ import annotations

from typing import Any

import schemathesis

LAGGING = "/problems/projection-lagging"


@schemathesis.check
def only_a_lagging_read_model_is_unavailable(ctx: Any, response: Any, case: Any) -> None:
    """The one 5xx the fuzz accepts: a 503 for an `after=` the read model has not reached in
    time, as documented. Any other 503 (the database is up) or 5xx is a failure."""
    if response.status_code != 503:
        return
    kind = response.json().get("type") if response.content else None
    if kind != LAGGING:
        raise AssertionError(f"503 {kind!r}; only {LAGGING} is expected while the database is up")
