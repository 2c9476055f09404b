"""Each user's webhooks and their delivery log, in SQL."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from eventsourcing.cipher import AESCipher
from eventsourcing.utils import Environment

from agent_ledger.infrastructure.read_models.tables import webhook_deliveries, webhooks

ACTIVE, FAILING = "active", "failing"


class WebhookNotFoundError(LookupError):
    """The caller has no webhook of this name."""


@dataclass(frozen=True)
class Webhook:
    """A webhook as its row holds it; `secret` is for signing, never for showing."""

    user_id: str
    name: str
    url: str
    types: tuple[str, ...]
    secret: str
    state: str
    position: int
    attempt: int
    failing_since: datetime | None
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime

    def __repr__(self) -> str:  # the secret stays out of logs and tracebacks
        return f"Webhook({self.user_id!r}, {self.name!r}, {self.url!r}, {self.state})"

    @classmethod
    def of(cls, row: Any, secrets: Secrets | None = None) -> Webhook:
        return cls(
            user_id=row.user_id,
            name=row.name,
            url=row.url,
            types=tuple(row.types),
            secret=row.secret if secrets is None else secrets.open(row.secret),
            state=row.state,
            position=int(row.position),
            attempt=int(row.attempt),
            failing_since=_aware(row.failing_since),
            next_attempt_at=_aware(row.next_attempt_at),
            last_error=row.last_error,
            created_at=_aware(row.created_at) or datetime.now(UTC),
            updated_at=_aware(row.updated_at) or datetime.now(UTC),
        )


@dataclass(frozen=True)
class Delivery:
    """One try of one event."""

    position: int
    event_type: str
    attempt: int
    status_code: int | None
    error: str | None
    duration_ms: float
    at: datetime


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)  # SQLite returns naive instants


class Secrets:
    """Webhook secrets at rest: AES-GCM with `AGENT_LEDGER_CIPHER_KEY` when it is set (as
    event payloads are), else as given. A secret stored before the key was set still reads."""

    PREFIX = "aes:"

    def __init__(self, cipher_key: str | None):
        self.cipher = (
            None if not cipher_key else AESCipher(Environment(env={"CIPHER_KEY": cipher_key}))
        )

    def seal(self, secret: str) -> str:
        if self.cipher is None:
            return secret
        return self.PREFIX + base64.b64encode(self.cipher.encrypt(secret.encode())).decode()

    def open(self, stored: str) -> str:
        if not stored.startswith(self.PREFIX) or self.cipher is None:
            return stored
        return self.cipher.decrypt(base64.b64decode(stored[len(self.PREFIX) :])).decode()


_RESET = {"state": ACTIVE, "attempt": 0, "failing_since": None, "next_attempt_at": None}


class SqlWebhooks:
    """The `webhooks` and `webhook_deliveries` tables."""

    def __init__(self, engine: sa.Engine, cipher_key: str | None = None):
        self.engine = engine
        self.secrets = Secrets(cipher_key)

    def put(
        self, user_id: str, name: str, *, url: str, types: list[str], secret: str, head: int
    ) -> tuple[Webhook, bool]:
        """Define (True: created, delivering events after `head`) or change a webhook; either
        makes it active again. A changed one keeps its position."""
        now = datetime.now(UTC)
        values = {
            "url": url,
            "types": sorted(set(types)),
            "secret": self.secrets.seal(secret),
            "updated_at": now,
        }
        key = (webhooks.c.user_id == user_id) & (webhooks.c.name == name)
        with self.engine.begin() as connection:
            changed = connection.execute(
                sa.update(webhooks).where(key).values(**values, **_RESET, last_error=None)
            ).rowcount
            created = not changed
            if created:
                connection.execute(
                    sa.insert(webhooks).values(
                        user_id=user_id,
                        name=name,
                        **values,
                        **_RESET,
                        position=head,
                        created_at=now,
                    )
                )
            row = connection.execute(sa.select(webhooks).where(key)).one()
        return Webhook.of(row, self.secrets), created

    def get(self, user_id: str, name: str) -> Webhook:
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(webhooks).where(webhooks.c.user_id == user_id, webhooks.c.name == name)
            ).first()
        if row is None:
            raise WebhookNotFoundError(f"no webhook named {name!r}")
        return Webhook.of(row, self.secrets)

    def of_user(self, user_id: str) -> list[Webhook]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(webhooks).where(webhooks.c.user_id == user_id).order_by(webhooks.c.name)
            )
            return [Webhook.of(row, self.secrets) for row in rows]

    def delete(self, user_id: str, name: str) -> None:
        with self.engine.begin() as connection:
            gone = connection.execute(
                sa.delete(webhooks).where(webhooks.c.user_id == user_id, webhooks.c.name == name)
            ).rowcount
            connection.execute(
                sa.delete(webhook_deliveries).where(
                    webhook_deliveries.c.user_id == user_id, webhook_deliveries.c.name == name
                )
            )
        if not gone:
            raise WebhookNotFoundError(f"no webhook named {name!r}")

    def redeliver(self, user_id: str, name: str, from_position: int | None) -> Webhook:
        """Active again, from its next event or from `from_position` (inclusive)."""
        values: dict[str, Any] = {**_RESET, "updated_at": datetime.now(UTC)}
        if from_position is not None:
            values["position"] = from_position - 1
        with self.engine.begin() as connection:
            changed = connection.execute(
                sa.update(webhooks)
                .where(webhooks.c.user_id == user_id, webhooks.c.name == name)
                .values(**values)
            ).rowcount
        if not changed:
            raise WebhookNotFoundError(f"no webhook named {name!r}")
        return self.get(user_id, name)

    def deliveries(self, user_id: str, name: str, limit: int) -> list[Delivery]:
        """The newest `limit` tries, newest first."""
        self.get(user_id, name)
        columns = webhook_deliveries.c
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(webhook_deliveries)
                .where(columns.user_id == user_id, columns.name == name)
                .order_by(columns.id.desc())
                .limit(limit)
            )
            return [
                Delivery(
                    position=int(row.position),
                    event_type=row.event_type,
                    attempt=int(row.attempt),
                    status_code=row.status_code,
                    error=row.error,
                    duration_ms=float(row.duration_ms),
                    at=_aware(row.at) or datetime.now(UTC),
                )
                for row in rows
            ]

    # the deliverer's side

    def due(self, now: datetime) -> list[Webhook]:
        """Active webhooks whose next try is due."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(webhooks)
                .where(
                    webhooks.c.state == ACTIVE,
                    sa.or_(webhooks.c.next_attempt_at.is_(None), webhooks.c.next_attempt_at <= now),
                )
                .order_by(webhooks.c.user_id, webhooks.c.name)
            )
            return [Webhook.of(row, self.secrets) for row in rows]

    def any_active(self) -> bool:
        """Whether any webhook is active (else the deliverer has nothing to follow)."""
        with self.engine.connect() as connection:
            return bool(
                connection.execute(
                    sa.select(sa.exists().where(webhooks.c.state == ACTIVE))
                ).scalar()
            )

    def next_due(self) -> datetime | None:
        with self.engine.connect() as connection:
            value = connection.execute(
                sa.select(sa.func.min(webhooks.c.next_attempt_at)).where(webhooks.c.state == ACTIVE)
            ).scalar()
        return _aware(value)

    def record(self, hook: Webhook, delivery: Delivery, values: dict[str, Any]) -> bool:
        """Log a try and move the webhook on, unless its row changed meanwhile (a PUT, a
        redeliver, a delete): False then, and nothing is moved."""
        with self.engine.begin() as connection:
            moved = connection.execute(
                sa.update(webhooks)
                .where(
                    webhooks.c.user_id == hook.user_id,
                    webhooks.c.name == hook.name,
                    webhooks.c.position == hook.position,
                    webhooks.c.updated_at == hook.updated_at,
                    webhooks.c.state == ACTIVE,
                )
                .values(**values)
            ).rowcount
            if (
                not moved
                and not connection.execute(
                    sa.select(sa.literal(1)).where(
                        webhooks.c.user_id == hook.user_id, webhooks.c.name == hook.name
                    )
                ).first()
            ):
                return False  # deleted meanwhile: its log went with it
            connection.execute(
                sa.insert(webhook_deliveries).values(
                    user_id=hook.user_id,
                    name=hook.name,
                    position=delivery.position,
                    event_type=delivery.event_type,
                    attempt=delivery.attempt,
                    status_code=delivery.status_code,
                    error=delivery.error,
                    duration_ms=delivery.duration_ms,
                    at=delivery.at,
                )
            )
        return bool(moved)
