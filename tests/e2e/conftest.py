"""The end-to-end tier: the installed `agent-ledger` command as a user runs it, over real
HTTP and WebSocket (and a real browser for the dashboard), within 3 minutes on 2 cores
(`make test-e2e`).

Servers start through tests/support/server.py; the PostgreSQL fixtures come from
tests/conftest.py.
"""

from __future__ import annotations

import pytest

from tests.support.server import AGENT_LEDGER


@pytest.fixture(scope="session", autouse=True)
def agent_ledger_command() -> str:
    """The console script next to this Python, or one failure saying what to do."""
    if AGENT_LEDGER is None:
        pytest.fail(
            "the end-to-end tests run the `agent-ledger` command and there is none next to "
            "this Python: `make install` (pip install -e '.[dev]')",
            pytrace=False,
        )
    return AGENT_LEDGER
