"""Token revocations: a subject's tokens issued at or before a moment are no longer honoured."""

from __future__ import annotations

import time

import sqlalchemy as sa

from agent_ledger.infrastructure.read_models.tables import token_revocations


class TokenRevocations:
    """Reads and records revocations in the read-model database (shared by every process)."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine

    def revoke(self, subject: str) -> float:
        """Void every token of `subject` issued up to now; returns the moment, epoch seconds."""
        now = time.time()
        with self.engine.begin() as connection:
            moved = connection.execute(
                sa.update(token_revocations)
                .where(token_revocations.c.subject == subject)
                .values(revoked_at=now)
            ).rowcount
            if moved == 0:
                connection.execute(
                    sa.insert(token_revocations).values(subject=subject, revoked_at=now)
                )
        return now

    def revoked_at(self, subject: str) -> float | None:
        with self.engine.connect() as connection:
            value = connection.execute(
                sa.select(token_revocations.c.revoked_at).where(
                    token_revocations.c.subject == subject
                )
            ).scalar()
        return None if value is None else float(value)

    def all(self) -> dict[str, float]:
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(token_revocations)).all()
        return {row.subject: float(row.revoked_at) for row in rows}
