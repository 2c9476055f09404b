"""Audit queries: state at a point in time, chain verification, exports, checkpoints, read log."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import groupby
from operator import itemgetter
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.persistence import Cipher, Compressor, Notification

from agent_ledger.application.checkpoints import Checkpoint, CheckpointSigner, CheckpointStore
from agent_ledger.application.executions import ExecutionNotFoundError, Executions, HistoryReader
from agent_ledger.domain.executions import Execution
from agent_ledger.domain.hash_chain import (
    ChainHead,
    ChainLink,
    ChainVerdict,
    ChainVerifier,
    is_plain,
)

try:  # optional speed-up: the fields read are the same with or without it
    import orjson
except ImportError:  # pragma: no cover - exercised only where orjson is not installed
    orjson = None  # type: ignore[assignment]

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
_TAG = b"_type_"

StoredRow = tuple[str, int | None, int, str, bytes]
"""One stored event: originator id, store position, version, topic and stored state."""

Unseal = Callable[[bytes], bytes]
"""Decrypts and decompresses a stored state, as the store's mapper configured it."""


def stored_fields(state: bytes) -> dict[str, Any]:
    """A stored event's fields as the hash reads them: `_AS_HASHED` applied to its JSON.

    Fast path: orjson parses the state and only the top-level tagged values (the timestamp,
    a timer's due time) are untagged, when counting shows they are the only tags there are.
    Whatever the fast path cannot vouch for is decoded by the reference decoder instead.
    """
    return _stored_fields(state)[0]


def _stored_fields(state: bytes) -> tuple[dict[str, Any], bool]:
    """The fields, and whether the fast path read them (which makes them plain JSON)."""
    if orjson is not None and b"\\u" not in state:  # an escape could spell a tag's key
        try:
            document = orjson.loads(state)
        except orjson.JSONDecodeError:
            document = None
        # orjson reads too-big ints as floats (>= 1e19, never plain); the reference keeps ints
        if type(document) is dict and is_plain(document):
            tags = state.count(_TAG)
            if tags == 0:
                return document, True
            stamp = document.get("timestamp")
            if tags == 1 and isinstance(stamp, dict) and _tagged(stamp):
                try:
                    document["timestamp"] = _as_hashed(stamp)
                    return document, True
                except Exception:  # the reference decoder below names what is wrong
                    pass
            elif tags > 1 and _untag_top_level(document) == tags:
                return document, True
    value: dict[str, Any] = _AS_HASHED.decode(state.decode())
    return value, False


def _tagged(value: Any) -> bool:
    return type(value) is dict and len(value) == 2 and "_type_" in value and "_data_" in value


def _untag_top_level(document: dict[str, Any]) -> int:
    """Untag the document's tagged values in place; how many there were (-1 if one failed)."""
    untagged = 0
    for key, value in list(document.items()):
        if _tagged(value):
            try:
                document[key] = _as_hashed(value)
            except Exception:
                return -1
            untagged += 1
    return untagged


def verify_stored(
    rows: Iterable[StoredRow],
    originator_id: str,
    checkpoint: ChainHead | None = None,
    unseal: Unseal | None = None,
) -> ChainVerdict:
    """Verify one execution's chain straight from its stored rows, in version order."""
    verifier = ChainVerifier(checkpoint)
    add = verifier.add
    for _, position, version, topic, state in rows:
        try:
            fields, plain = _stored_fields(unseal(state) if unseal is not None else state)
            fields["originator_id"] = originator_id
            fields["originator_version"] = version
        except Exception as error:
            if not add(version, topic, {}, position, None, _undecodable(error)):
                break
            continue
        if not add(version, topic, fields, position, None, None, plain):
            break
    return verifier.verdict()


def verify_stored_chains(
    rows: Iterable[StoredRow],
    checkpoints: Mapping[str, ChainHead] | None = None,
    unseal: Unseal | None = None,
) -> Iterator[tuple[str, ChainVerdict]]:
    """Verify many executions from rows ordered by originator id, then version."""
    checkpoints = checkpoints or {}
    for originator_id, group in groupby(rows, key=itemgetter(0)):
        yield (
            originator_id,
            verify_stored(group, originator_id, checkpoints.get(originator_id), unseal),
        )


def _undecodable(error: Exception) -> str:
    return f"it cannot be decrypted or decoded ({type(error).__name__}): altered"


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


def unsealer(cipher: Cipher | None, compressor: Compressor | None) -> Unseal | None:
    """Undo what the mapper did to a stored state (encryption, then compression), if anything."""
    if cipher is None and compressor is None:
        return None

    def unseal(state: bytes) -> bytes:
        if cipher is not None:
            state = cipher.decrypt(state)
        if compressor is not None:
            state = compressor.decompress(state)
        return state

    return unseal


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
        originator_id = str(execution_id)
        rows = (
            (originator_id, n.id, n.originator_version, n.topic, n.state)
            for n in self._stored(execution_id)
        )
        head = checkpoint.head if checkpoint is not None else None
        verdict = verify_stored(rows, originator_id, head, self.unseal())
        return Verification(execution_id, verdict, checkpoint, authentic)

    def unseal(self) -> Unseal | None:
        """How stored states are decrypted and decompressed, or None when they are plain."""
        return unsealer(self.executions.mapper.cipher, self.executions.mapper.compressor)

    def links(self, execution_id: UUID) -> Iterator[ChainLink]:
        """The execution's events as stored (decrypted, never upcast), in version order."""
        originator_id = str(execution_id)
        unseal = self.unseal()
        for stored in self._stored(execution_id):
            yield self._link(stored, originator_id, unseal)

    def _stored(self, execution_id: UUID) -> Iterator[Notification]:
        by_version = self.chain_reader is not None  # else page by position (in-memory store)
        reader = self.chain_reader or self.executions.history_reader
        after = 0
        while True:
            page = reader(execution_id, after, LINKS_PAGE)
            yield from page
            if len(page) < LINKS_PAGE:
                return
            after = page[-1].originator_version if by_version else page[-1].id

    @staticmethod
    def _link(stored: Notification, originator_id: str, unseal: Unseal | None) -> ChainLink:
        version = stored.originator_version
        try:
            fields = stored_fields(unseal(stored.state) if unseal is not None else stored.state)
            fields["originator_id"] = originator_id
            fields["originator_version"] = version
        except Exception as error:
            return ChainLink(version, stored.topic, {}, stored.id, None, _undecodable(error))
        return ChainLink(version, stored.topic, fields, position=stored.id)

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
