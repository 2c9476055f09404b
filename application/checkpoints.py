"""Signed checkpoints: an HMAC over an execution's chain head, kept apart from the events."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from agent_ledger.domain.hash_chain import ChainHead


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement: execution X had `version` events, the newest hashing to `hash`."""

    execution_id: UUID
    version: int
    hash: str
    signed_at: datetime
    key_id: str
    signature: str

    @property
    def head(self) -> ChainHead:
        return ChainHead(self.version, self.hash)

    def as_json(self) -> dict[str, Any]:
        """The checkpoint as plain JSON (for exports and the API)."""
        document = asdict(self)
        document["execution_id"] = str(self.execution_id)
        document["signed_at"] = self.signed_at.isoformat()
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Checkpoint:
        """Read a checkpoint back from its plain JSON form."""
        return cls(
            execution_id=UUID(str(document["execution_id"])),
            version=int(document["version"]),
            hash=str(document["hash"]),
            signed_at=datetime.fromisoformat(str(document["signed_at"])),
            key_id=str(document["key_id"]),
            signature=str(document["signature"]),
        )


def _signed_bytes(
    execution_id: UUID, version: int, head_hash: str, signed_at: datetime, key_id: str
) -> bytes:
    document = {
        "execution_id": str(execution_id),
        "version": version,
        "hash": head_hash,
        "signed_at": signed_at.isoformat(),
        "key_id": key_id,
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


class CheckpointSigner:
    """Signs and checks checkpoints with one secret key (HMAC-SHA256)."""

    def __init__(self, key: str):
        if len(key) < 16:
            raise ValueError("the signing key must be at least 16 characters")
        self._key = key.encode()
        self.key_id = hashlib.sha256(b"agent-ledger:checkpoint-key:" + self._key).hexdigest()[:16]

    def sign(self, execution_id: UUID, head: ChainHead, signed_at: datetime) -> Checkpoint:
        """A checkpoint of `head`, signed now."""
        message = _signed_bytes(execution_id, head.version, head.hash, signed_at, self.key_id)
        signature = hmac.new(self._key, message, hashlib.sha256).hexdigest()
        return Checkpoint(execution_id, head.version, head.hash, signed_at, self.key_id, signature)

    def is_authentic(self, checkpoint: Checkpoint) -> bool:
        """Whether this key signed exactly this checkpoint."""
        if checkpoint.key_id != self.key_id:
            return False
        message = _signed_bytes(
            checkpoint.execution_id,
            checkpoint.version,
            checkpoint.hash,
            checkpoint.signed_at,
            checkpoint.key_id,
        )
        expected = hmac.new(self._key, message, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, checkpoint.signature)


class CheckpointStore(Protocol):
    """Where signed checkpoints are kept."""

    def add(self, checkpoint: Checkpoint) -> None: ...

    def latest(self, execution_id: UUID) -> Checkpoint | None: ...

    def heads(self) -> dict[UUID, int]:
        """The newest checkpointed version of every checkpointed execution."""
        ...
