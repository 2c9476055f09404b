"""The environment of real `agent-ledger worker` processes started by a test."""

from __future__ import annotations

import os

from agent_ledger.infrastructure.settings import Settings


def worker_environment(settings: Settings) -> dict[str, str]:
    """This process's environment plus the store, secret and timings of `settings`, and
    eight executions at once per worker."""
    return {
        **os.environ,
        "AGENT_LEDGER_DATABASE_URL": str(settings.database_url),
        "AGENT_LEDGER_JWT_SECRET": str(settings.jwt_secret),
        "AGENT_LEDGER_LEASE_SECONDS": str(settings.lease_seconds),
        "AGENT_LEDGER_POLL_INTERVAL": str(settings.poll_interval),
        "AGENT_LEDGER_PER_USER_LIMIT": str(settings.per_user_limit),
        "AGENT_LEDGER_ENGINE_CONCURRENCY": "8",
    }
