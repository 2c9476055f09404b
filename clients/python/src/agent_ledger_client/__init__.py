"""Agent Ledger's Python client: `Client` (sync) and `AsyncClient`, typed models, and a live
tail that resumes by itself from the last position it yielded."""

from agent_ledger_client.async_client import AsyncClient
from agent_ledger_client.client import Client
from agent_ledger_client.endpoints import AUTO
from agent_ledger_client.errors import (
    AgentLedgerError,
    ApiError,
    AuthenticationError,
    ConflictError,
    NotFoundError,
    StreamClosedError,
)
from agent_ledger_client.schemas import (
    Accepted,
    Event,
    Execution,
    ExecutionState,
    ExecutionSummary,
    Forked,
    SignalAccepted,
    SignalDelivered,
    Started,
    Step,
    Verification,
)
from agent_ledger_client.tail import Backoff

__all__ = [
    "AUTO",
    "Accepted",
    "AgentLedgerError",
    "ApiError",
    "AsyncClient",
    "AuthenticationError",
    "Backoff",
    "Client",
    "ConflictError",
    "Event",
    "Execution",
    "ExecutionState",
    "ExecutionSummary",
    "Forked",
    "NotFoundError",
    "SignalAccepted",
    "SignalDelivered",
    "Started",
    "Step",
    "StreamClosedError",
    "Verification",
]
