"""Tamper evidence: each event's hash covers its immutable fields and its predecessor's hash."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

GENESIS = "0" * 64
"""The `previous_hash` of an execution's first event."""

NOT_HASHED = frozenset({"hash", "class_version"})
"""Fields outside the hash: the hash itself and the store's schema-version marker."""


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID | Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} has no canonical form")


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=_plain)
_AS_STORED = json.JSONEncoder(separators=(",", ":"), default=_plain)
_c_encoder = getattr(json.encoder, "c_make_encoder", None)
# JSONEncoder.encode builds a fresh C encoder per call; verifying millions of events, reuse one
_encode_chunks: Any = (
    _c_encoder(
        None, _plain, json.encoder.encode_basestring_ascii, None, ":", ",", True, False, True
    )
    if _c_encoder is not None
    else None
)


def _sorted_json(document: Any) -> str:
    if _encode_chunks is None:
        return _ENCODER.encode(document)
    return "".join(_encode_chunks(document, 0))


def canonical(topic: str, fields: Mapping[str, Any]) -> bytes:
    """The canonical bytes of an event: its topic and fields as sorted, compact JSON."""
    document = dict(fields)
    for name in NOT_HASHED:
        document.pop(name, None)
    document["topic"] = topic
    return _sorted_json(document).encode()


def event_hash(topic: str, fields: Mapping[str, Any]) -> str:
    """The SHA-256 of an event's canonical bytes, hex; `previous_hash` is one of the fields."""
    return hashlib.sha256(canonical(topic, fields)).hexdigest()


def recorded_hash(topic: str, fields: Mapping[str, Any]) -> str:
    """The hash of an event about to be recorded, as its stored form will hash when read back.

    Storing turns values into JSON (a key `1` reads back as `"1"`, and sorts as a string),
    so the hash is taken over the JSON round trip of the fields, never over live objects.
    """
    document = {k: v for k, v in fields.items() if k not in NOT_HASHED}
    return event_hash(topic, json.loads(_AS_STORED.encode(document)))


@dataclass(frozen=True)
class ChainLink:
    """One event as the verifier sees it: where it is, and its fields as stored."""

    version: int
    topic: str
    fields: Mapping[str, Any]
    position: int | None = None
    line: int | None = None
    problem: str | None = None
    """Why the event could not even be read, if it could not."""


@dataclass(frozen=True)
class ChainHead:
    """The newest event a signed checkpoint vouches for."""

    version: int
    hash: str


@dataclass(frozen=True)
class ChainBreak:
    """The first place where the chain does not hold, and why."""

    version: int
    reason: str
    position: int | None = None
    line: int | None = None


@dataclass(frozen=True)
class ChainVerdict:
    """The outcome of verifying one execution's chain."""

    ok: bool
    events: int
    head: ChainHead | None
    broken: ChainBreak | None = None


def verify_chain(links: Iterable[ChainLink], checkpoint: ChainHead | None = None) -> ChainVerdict:
    """Recompute every hash in order; name the first broken link, or say the chain is intact.

    A checkpoint also catches what the chain alone cannot: newest events deleted, or
    history rewritten from some version on with freshly computed hashes.
    """
    previous, count, head = GENESIS, 0, None
    for link in links:
        count += 1
        at = {"position": link.position, "line": link.line}
        if link.version != count:
            missing = f"version {count} is missing" if link.version > count else "out of order"
            return ChainVerdict(False, count, head, ChainBreak(link.version, missing, **at))
        if link.problem is not None:
            return ChainVerdict(False, count, head, ChainBreak(link.version, link.problem, **at))
        stored = link.fields.get("hash")
        if link.fields.get("previous_hash") != previous:
            reason = "its previous_hash does not match the hash of the event before it"
            return ChainVerdict(False, count, head, ChainBreak(link.version, reason, **at))
        if stored != event_hash(link.topic, link.fields):
            reason = "its content does not match its hash (the event was altered)"
            return ChainVerdict(False, count, head, ChainBreak(link.version, reason, **at))
        at_checkpoint = checkpoint is not None and link.version == checkpoint.version
        if at_checkpoint and checkpoint is not None and stored != checkpoint.hash:
            reason = "it differs from the event the signed checkpoint vouches for"
            return ChainVerdict(False, count, head, ChainBreak(link.version, reason, **at))
        previous = str(stored)
        head = ChainHead(link.version, previous)
    if checkpoint is not None and count < checkpoint.version:
        reason = (
            f"the signed checkpoint vouches for {checkpoint.version} events but only "
            f"{count} remain: the newest events were deleted"
        )
        return ChainVerdict(False, count, head, ChainBreak(count + 1, reason))
    return ChainVerdict(True, count, head)
