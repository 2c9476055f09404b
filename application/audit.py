"""Audit queries: state at a point in time, chain verification, exports, checkpoints, read log."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.persistence import Notification

from application.checkpoints import Checkpoint, CheckpointSigner, CheckpointStore
from application.executions import ExecutionNotFoundError, Executions, HistoryReader
from domain.executions import Execution
from domain.hash_chain import ChainLink, ChainVerdict, verify_chain

EXPORT_FORMAT = "agent-ledger-audit-export/1"
LINKS_PAGE = 5000


def _as_hashed(document: dict[str, Any]) -> Any:
    """Stored values in the form the hash reads: times and decimals as their text, ids dashed."""
    if len(document) == 2 and "_type_" in document and "_data_" in document:
        kind, data = document["_type_"], document["_data_"]
        if kind in ("datetime_iso", "decimal_str"):
            return data
        if kind == "uuid_hex":
            return str(UUID(data))
    return document


_AS_HASHED = json.JSONDecoder(object_hook=_as_hashed)


class NoStateThenError(ExecutionNotFoundError):
    """The execution exists, but not at the version or time asked for."""

    def __init__(self, execution_id: UUID, detail: str):
        super().__init__(execution_id)
        self.args = (f"execution {execution_id} {detail}",)


@dataclass(frozen=True)
class AuditRead:
    """An auditor's read of an execution: who, what, when, under which request."""

    actor: str
    action: str
    execution_id: UUID | None
    correlation_id: str | None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    detail: Mapping[str, Any] = field(default_factory=dict)
    id: int | None = None


class AuditReadLog(Protocol):
    """The append-only record of auditors' reads."""

    def record(self, read: AuditRead) -> None: ...

    def list(
        self,
        *,
        actor: str | None = None,
        execution_id: UUID | None = None,
        after: int = 0,
        limit: int = 100,
    ) -> list[AuditRead]: ...


@dataclass(frozen=True)
class Verification:
    """The verdict on one execution's chain and the checkpoint it was held against."""

    execution_id: UUID
    verdict: ChainVerdict
    checkpoint: Checkpoint | None
    checkpoint_authentic: bool | None

    @property
    def ok(self) -> bool:
        return self.verdict.ok and self.checkpoint_authentic is not False


class Audit:
    """Answers auditors from the events alone: nothing is re-run, nothing is changed."""

    def __init__(
        self,
        executions: Executions,
        reads: AuditReadLog,
        checkpoints: CheckpointStore,
        signer: CheckpointSigner | None = None,
        chain_reader: HistoryReader | None = None,
    ):
        self.executions = executions
        self.chain_reader = chain_reader
        self.reads = reads
        self.checkpoints = checkpoints
        self.signer = signer

    # -- point in time ---------------------------------------------------------------------

    def get_state(
        self,
        execution_id: UUID,
        *,
        owner: str | None,
        version: int | None = None,
        at: datetime | None = None,
    ) -> Execution:
        """The execution as it was at `version`, or after its last event at or before `at`."""
        head = self.executions.get_execution(execution_id, user_id=owner)
        if version is not None and version > head.version:
            raise NoStateThenError(execution_id, f"has {head.version} events, not {version}")
        if at is not None:
            version = self._version_at(execution_id, head.version, at)
        if version is None or version == head.version:
            return head
        return self.executions.get_execution(execution_id, version=version)

    def _version_at(self, execution_id: UUID, head: int, at: datetime) -> int:
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        low, high = 0, head  # event timestamps grow with the version: search, don't scan
        while low < high:
            middle = (low + high + 1) // 2
            if self._timestamp(execution_id, middle) <= at:
                low = middle
            else:
                high = middle - 1
        if low == 0:
            raise NoStateThenError(execution_id, f"had not started at {at.isoformat()}")
        return low

    def _timestamp(self, execution_id: UUID, version: int) -> datetime:
        (event,) = self.executions.events.get(execution_id, gt=version - 1, lte=version)
        timestamp: datetime = event.timestamp  # type: ignore[attr-defined]
        return timestamp

    # -- tamper evidence ---------------------------------------------------------------------

    def verify(self, execution_id: UUID, *, owner: str | None) -> Verification:
        """Recompute the chain from the stored events and hold it against the newest checkpoint."""
        self.executions.get_execution(execution_id, user_id=owner, version=1)
        checkpoint = self.checkpoints.latest(execution_id)
        authentic = None
        if checkpoint is not None and self.signer is not None:
            authentic = self.signer.is_authentic(checkpoint)
        verdict = verify_chain(
            self.links(execution_id), checkpoint.head if checkpoint is not None else None
        )
        return Verification(execution_id, verdict, checkpoint, authentic)

    def links(self, execution_id: UUID) -> Iterator[ChainLink]:
        """The execution's events as stored (decrypted, never upcast), in version order."""
        originator_id = str(execution_id)
        by_version = self.chain_reader is not None  # else page by position (in-memory store)
        reader = self.chain_reader or self.executions.history_reader
        after = 0
        while True:
            page = reader(execution_id, after, LINKS_PAGE)
            for notification in page:
                yield self._link(notification, originator_id)
            if len(page) < LINKS_PAGE:
                return
            after = page[-1].originator_version if by_version else page[-1].id

    def _link(self, stored: Notification, originator_id: str) -> ChainLink:
        mapper = self.executions.mapper
        try:
            state = stored.state
            if mapper.cipher:
                state = mapper.cipher.decrypt(state)
            if mapper.compressor:
                state = mapper.compressor.decompress(state)
            fields: dict[str, Any] = _AS_HASHED.decode(state.decode())
        except Exception as error:
            problem = f"it cannot be decrypted or decoded ({type(error).__name__}): altered"
            return ChainLink(stored.originator_version, stored.topic, {}, stored.id, None, problem)
        fields["originator_id"] = originator_id
        fields["originator_version"] = stored.originator_version
        return ChainLink(stored.originator_version, stored.topic, fields, position=stored.id)

    def checkpoint(self, heads: Mapping[UUID, int]) -> list[Checkpoint | Verification]:
        """Sign the head of every execution that grew since its last checkpoint.

        A chain that does not verify is not signed: its verification is returned instead.
        """
        if self.signer is None:
            raise RuntimeError("no signing key is configured (AGENT_LEDGER_AUDIT_SIGNING_KEY)")
        signed = self.checkpoints.heads()
        done: list[Checkpoint | Verification] = []
        for execution_id, version in sorted(heads.items(), key=lambda item: str(item[0])):
            if signed.get(execution_id, 0) >= version:
                continue
            verification = self.verify(execution_id, owner=None)
            if not verification.ok or verification.verdict.head is None:
                done.append(verification)
                continue
            now = datetime.now(UTC)
            checkpoint = self.signer.sign(execution_id, verification.verdict.head, now)
            self.checkpoints.add(checkpoint)
            done.append(checkpoint)
        return done

    # -- export --------------------------------------------------------------------------------

    def export(self, execution_id: UUID, *, owner: str | None) -> Iterator[dict[str, Any]]:
        """The self-contained bundle: a header, the stored events with hashes, the checkpoint."""
        head = self.executions.get_execution(execution_id, user_id=owner)
        yield {
            "kind": "header",
            "format": EXPORT_FORMAT,
            "execution_id": str(execution_id),
            "user_id": head.user_id,
            "events": head.version,
            "exported_at": datetime.now(UTC).isoformat(),
        }
        for link in self.links(execution_id):
            yield {
                "kind": "event",
                "position": link.position,
                "version": link.version,
                "topic": link.topic,
                "fields": plain(link.fields),
            }
        checkpoint = self.checkpoints.latest(execution_id)
        if checkpoint is not None:
            yield {"kind": "checkpoint", **checkpoint.as_json()}


def plain(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Fields as plain JSON values: times as ISO text, ids as text, as the hash reads them."""
    value: dict[str, Any] = json.loads(json.dumps(fields, default=_text))
    return value


def _text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)
