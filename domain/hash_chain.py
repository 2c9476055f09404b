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

try:  # optional speed-up: verification is byte-identical with or without it
    import orjson
except ImportError:  # pragma: no cover - exercised only where orjson is not installed
    orjson = None  # type: ignore[assignment]

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


_SCALARS = frozenset({str, int, bool, type(None)})

_FIXED_FLOATS = (1e-4, 1e15)
"""Floats in this range (and zero) print alike in orjson and Python: digits, no exponent."""


def _is_fixed_float(value: float) -> bool:
    return _FIXED_FLOATS[0] <= abs(value) < _FIXED_FLOATS[1] or value == 0.0


def is_plain(value: Any) -> bool:
    """Whether `value` holds only dicts, lists, strings, ints, booleans, nulls and floats
    written without an exponent.

    On such values orjson and the reference encoder agree byte for byte once the output is
    printable ASCII; other floats (whose exponent forms differ: `1e-05` and `1e-5`), NaN,
    infinities, other types and wider text do not.
    """
    kind = type(value)
    if kind is dict:
        items: Iterable[Any] = value.values()
    elif kind is list:
        items = value
    elif kind is float:
        return _is_fixed_float(value)
    else:
        return kind in _SCALARS
    for item in items:  # noqa: SIM110 - a loop is cheaper than all() on the hot path
        if type(item) not in _SCALARS and not is_plain(item):
            return False
    return True


def _fast_sorted_json(document: dict[str, Any], plain: bool) -> bytes | None:
    """The reference bytes by orjson, or None when they might differ from the reference."""
    if orjson is None or not (plain or is_plain(document)):
        return None
    try:
        text = orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # ints beyond 64 bits, non-text keys, deep nesting
        return None
    if not text.isascii() or b"\x7f" in text:  # the reference escapes these as \uXXXX
        return None
    return text


def reference_canonical(topic: str, fields: Mapping[str, Any]) -> bytes:
    """`canonical` by the standard library alone: the definition the fast path must match."""
    document = dict(fields)
    for name in NOT_HASHED:
        document.pop(name, None)
    document["topic"] = topic
    return _sorted_json(document).encode()


def canonical(topic: str, fields: Mapping[str, Any], *, plain: bool = False) -> bytes:
    """The canonical bytes of an event: its topic and fields as sorted, compact JSON.

    Compact separators, keys sorted by code point, every character outside printable ASCII
    escaped as \\uXXXX, floats as Python's repr: what `reference_canonical` writes.
    `plain=True` promises that `is_plain(fields)` holds (the caller has just checked).
    """
    document = dict(fields)
    document.pop("hash", None)
    document.pop("class_version", None)
    document["topic"] = topic
    fast = _fast_sorted_json(document, plain)
    return fast if fast is not None else _sorted_json(document).encode()


def event_hash(topic: str, fields: Mapping[str, Any]) -> str:
    """The SHA-256 of an event's canonical bytes, hex; `previous_hash` is one of the fields."""
    return hashlib.sha256(canonical(topic, fields)).hexdigest()


def recorded_hash(topic: str, fields: Mapping[str, Any]) -> str:
    """The hash of an event about to be recorded, as its stored form will hash when read back.

    Storing turns values into JSON (a key `1` reads back as `"1"`, and sorts as a string),
    so the hash is taken over the JSON round trip of the fields, never over live objects.
    """
    document = {k: v for k, v in fields.items() if k not in NOT_HASHED}
    try:
        stored = _as_stored(document, [_WALK_BUDGET])
    except _NoShortcutError:
        stored = json.loads(_AS_STORED.encode(document))
    return event_hash(topic, stored)


_WALK_BUDGET = 256
"""Values `_as_stored` looks at before leaving a large document to the (C) round trip."""


class _NoShortcutError(Exception):
    """A value whose JSON round trip `_as_stored` does not predict, or too many values."""


def _as_stored(value: Any, budget: list[int]) -> Any:
    """What the JSON round trip of a small `value` gives, without encoding it: datetimes
    and UUIDs become their text, tuples lists; anything else takes the real round trip."""
    budget[0] -= 1
    if budget[0] < 0:
        raise _NoShortcutError
    kind = type(value)
    if kind is str or kind is int or kind is bool or kind is float or value is None:
        return value
    if kind is dict:
        if not all(type(key) is str for key in value):
            raise _NoShortcutError  # other keys turn into text, and may then collide
        return {key: _as_stored(item, budget) for key, item in value.items()}
    if kind is list or kind is tuple:
        return [_as_stored(item, budget) for item in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if kind is UUID:
        return str(value)
    raise _NoShortcutError


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


class ChainVerifier:
    """Recomputes one execution's chain event by event, stopping at the first broken link.

    `verify_chain` (online and offline) and the bulk verifier of the store share it, so
    they cannot disagree on what counts as broken.
    """

    __slots__ = ("broken", "checkpoint", "count", "head", "previous")

    def __init__(self, checkpoint: ChainHead | None = None):
        self.checkpoint = checkpoint
        self.previous = GENESIS
        self.count = 0
        self.head: ChainHead | None = None
        self.broken: ChainBreak | None = None

    def add(
        self,
        version: int,
        topic: str,
        fields: Mapping[str, Any],
        position: int | None = None,
        line: int | None = None,
        problem: str | None = None,
        plain: bool = False,
    ) -> bool:
        """Check the next event; False once the chain is broken (the rest is not looked at).

        `plain=True` promises that the fields are plain JSON without floats (`is_plain`).
        """
        if self.broken is not None:
            return False
        self.count = count = self.count + 1
        if version != count:
            missing = f"version {count} is missing" if version > count else "out of order"
            return self._break(ChainBreak(version, missing, position, line))
        if problem is not None:
            return self._break(ChainBreak(version, problem, position, line))
        stored = fields.get("hash")
        if fields.get("previous_hash") != self.previous:
            reason = "its previous_hash does not match the hash of the event before it"
            return self._break(ChainBreak(version, reason, position, line))
        if stored != hashlib.sha256(canonical(topic, fields, plain=plain)).hexdigest():
            reason = "its content does not match its hash (the event was altered)"
            return self._break(ChainBreak(version, reason, position, line))
        checkpoint = self.checkpoint
        if checkpoint is not None and version == checkpoint.version and stored != checkpoint.hash:
            reason = "it differs from the event the signed checkpoint vouches for"
            return self._break(ChainBreak(version, reason, position, line))
        self.previous = str(stored)
        self.head = ChainHead(version, self.previous)
        return True

    def _break(self, broken: ChainBreak) -> bool:
        self.broken = broken
        return False

    def verdict(self) -> ChainVerdict:
        """The outcome so far: the first broken link, deleted newest events, or intact."""
        if self.broken is not None:
            return ChainVerdict(False, self.count, self.head, self.broken)
        checkpoint, count = self.checkpoint, self.count
        if checkpoint is not None and count < checkpoint.version:
            reason = (
                f"the signed checkpoint vouches for {checkpoint.version} events but only "
                f"{count} remain: the newest events were deleted"
            )
            return ChainVerdict(False, count, self.head, ChainBreak(count + 1, reason))
        return ChainVerdict(True, count, self.head)


def verify_chain(links: Iterable[ChainLink], checkpoint: ChainHead | None = None) -> ChainVerdict:
    """Recompute every hash in order; name the first broken link, or say the chain is intact.

    A checkpoint also catches what the chain alone cannot: newest events deleted, or
    history rewritten from some version on with freshly computed hashes.
    """
    verifier = ChainVerifier(checkpoint)
    add = verifier.add
    for link in links:
        if not add(link.version, link.topic, link.fields, link.position, link.line, link.problem):
            break
    return verifier.verdict()
