"""Settings from the environment (prefix `AGENT_LEDGER_`)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from agent_ledger.infrastructure.allow_list import parse_allow_list
from agent_ledger.infrastructure.redact import MASK, mask_url

_SECRETS = frozenset({"jwt_secret", "cipher_key", "audit_signing_key", "llm_api_key"})
_URLS = frozenset({"database_url", "llm_base_url"})


class ProviderSetting(BaseModel):
    """A named model provider: where it is, and which variable holds its key."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(pattern=r"^https?://")
    api_key_env: str | None = None

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        yield "base_url", mask_url(self.base_url)
        yield "api_key_env", self.api_key_env


class PriceSetting(BaseModel):
    """A model's price in USD per million tokens."""

    model_config = ConfigDict(extra="forbid")

    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)


class Settings(BaseSettings):
    """Every knob of a deployment; defaults run the embedded mode with nothing to set up."""

    model_config = SettingsConfigDict(env_prefix="AGENT_LEDGER_", extra="ignore")

    database_url: str | None = Field(
        default=None, description="postgresql://user:pass@host:port/db; unset = embedded SQLite"
    )
    data_dir: Path = Field(default=Path(".agent-ledger"), description="embedded mode's files")
    jwt_secret: str | None = Field(default=None, description="HS256 secret for bearer tokens")
    max_input_bytes: int = Field(default=64 * 1024, description="largest execution input (JSON)")
    max_request_bytes: int = Field(default=1024 * 1024, description="largest request body")
    engine_concurrency: int = Field(default=32, description="executions driven at once per worker")
    per_user_limit: int = Field(default=3, description="executions one user runs at once")
    lease_seconds: float = Field(default=30.0, description="a worker's hold on an execution")
    shutdown_grace: float = Field(default=5.0, description="seconds a stopping worker drains")
    run_engine: bool = Field(default=True, description="serve also runs a worker")
    run_projector: bool = Field(default=True, description="serve also runs the projector")
    poll_interval: float = Field(default=0.5, description="fallback poll of the store, seconds")
    read_wait_timeout: float = Field(default=5.0, description="longest wait for ?after=, seconds")
    tail_heartbeat_interval: float = Field(default=15.0, description="idle tail heartbeat, s")
    path_timing: Path | None = Field(
        default=None, description="directory for latency marks (bench/breakdown.py); off if unset"
    )
    tail_queue_size: int = Field(default=5000, description="events buffered per tail subscriber")
    tail_max_per_user: int = Field(default=20, description="open tail subscriptions per user")
    revocation_check_interval: float = Field(default=5.0, description="revocation re-read, s")
    opentelemetry: bool = Field(
        default=False,
        description="FastAPI's OpenTelemetry spans and metrics, when a provider is configured",
    )
    otel: bool = Field(
        default=False,
        description="export executions' traces over OTLP/HTTP (also on with "
        "OTEL_EXPORTER_OTLP_ENDPOINT)",
    )
    db_pool_size: int = 2
    db_max_overflow: int = 10
    sla_agent_seconds: dict[str, float] = Field(
        default={"triage": 5.0, "data": 8.0, "optimization": 10.0},
        description='SLA target per agent name, JSON e.g. {"triage": 5}',
    )
    sla_workflow_seconds: float = Field(default=30.0, description="SLA target of a whole run")
    sla_tool_seconds: dict[str, float] = Field(
        default={}, description="SLA target per tool name, JSON"
    )
    ready_max_lag_seconds: float = Field(
        default=30.0, description="/readyz fails when a projection is further behind"
    )
    rebuild_grace_seconds: float = Field(
        default=5.0, description="how long a rebuild keeps the old tables after switching"
    )
    cipher_key: str | None = Field(
        default=None, description="base64 AES key: encrypts stored event payloads (at rest)"
    )
    audit_signing_key: str | None = Field(
        default=None, description="secret for signed checkpoints of chain heads (HMAC-SHA256)"
    )
    agent_url_allow: str = Field(
        default="",
        description="CIDRs and host names HTTP agents may be on besides public addresses, "
        "comma-separated, e.g. 127.0.0.0/8,agents.internal",
    )

    llm_base_url: str | None = Field(
        default=None,
        description="the default model provider's OpenAI-compatible API, e.g. "
        "http://127.0.0.1:11434/v1 (Ollama); https://api.openai.com/v1 when only a key is set",
    )
    llm_api_key: str | None = Field(default=None, description="the default provider's API key")
    llm_providers: dict[str, ProviderSetting] = Field(
        default={},
        description='named providers, JSON: {"name": {"base_url": ..., "api_key_env": VAR}}',
    )
    llm_prices: dict[str, PriceSetting] = Field(
        default={},
        description='USD per million tokens, JSON: {"model": {"input_per_million": 0.15, '
        '"output_per_million": 0.6}}',
    )
    llm_model: str = Field(
        default="gpt-4o-mini", description="the model of the sample process cost_optimization_llm"
    )
    webhook_retry_first: float = Field(
        default=1.0, gt=0, description="seconds before a failed webhook delivery is tried again"
    )
    webhook_retry_cap: float = Field(
        default=3600.0, gt=0, description="longest wait between tries of a webhook delivery, s"
    )
    webhook_retry_window: float = Field(
        default=86400.0, gt=0, description="how long a delivery is retried before the webhook fails"
    )
    webhook_timeout: float = Field(
        default=10.0, gt=0, description="seconds a webhook receiver has to answer"
    )

    @field_validator("llm_base_url")
    @classmethod
    def check_llm_base_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{mask_url(value)!r} is not an http:// or https:// URL")
        return value

    @property
    def has_llm_provider(self) -> bool:
        """Whether any model provider is configured (the default or a named one)."""
        return bool(self.llm_base_url or self.llm_api_key or self.llm_providers)

    @field_validator("agent_url_allow")
    @classmethod
    def check_agent_url_allow(cls, value: str) -> str:
        parse_allow_list(value)  # a bad entry stops the start, naming the setting and entry
        return value

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """The repr (in tracebacks, logs) masks the database password and every secret."""
        for name, value in super().__repr_args__():
            if name in _URLS and value:
                yield name, mask_url(value)
            elif name in _SECRETS and value:
                yield name, MASK
            else:
                yield name, value

    @property
    def uses_postgres(self) -> bool:
        return bool(self.database_url) and str(self.database_url).startswith(
            ("postgresql://", "postgres://", "postgresql+psycopg://")
        )

    def resolved_jwt_secret(self) -> str:
        """The configured secret, or in embedded mode one generated once and kept on disk."""
        if self.jwt_secret:
            return self.jwt_secret
        path = self.data_dir / "jwt-secret"
        if path.exists():
            return path.read_text().strip()
        if self.uses_postgres:
            raise RuntimeError(
                "AGENT_LEDGER_JWT_SECRET must be set when AGENT_LEDGER_DATABASE_URL is PostgreSQL"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(48)
        path.touch(mode=0o600)
        path.write_text(secret)
        return secret
