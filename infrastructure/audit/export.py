"""Export bundles (JSON Lines) of one execution, and their verification with no database."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from uuid import UUID

from agent_ledger.application.audit import EXPORT_FORMAT
from agent_ledger.application.checkpoints import Checkpoint, CheckpointSigner
from agent_ledger.domain.hash_chain import ChainBreak, ChainLink, ChainVerdict, verify_chain


def bundle_line(document: dict[str, Any]) -> str:
    """One line of a bundle: a compact JSON document and a newline."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False) + "\n"


def write_bundle(lines: Iterable[dict[str, Any]], out: TextIO) -> int:
    """Write the bundle one JSON document per line; return how many events it holds."""
    events = 0
    for document in lines:
        out.write(bundle_line(document))
        events += document.get("kind") == "event"
    return events


@dataclass(frozen=True)
class BundleVerdict:
    """What the offline verifier found in a bundle."""

    ok: bool
    execution_id: str | None
    verdict: ChainVerdict | None
    checkpoint: Checkpoint | None
    checkpoint_authentic: bool | None
    problem: str | None = None
    line: int | None = None

    def describe(self) -> str:
        """One human line: ok, or where and why the bundle fails."""
        if not self.ok:
            where = f"line {self.line}" if self.line is not None else "the bundle"
            return f"BROKEN at {where}: {self.problem}"
        assert self.verdict is not None
        head = self.verdict.head
        text = f"ok: {self.verdict.events} events of execution {self.execution_id}"
        if head is not None:
            text += f", head v{head.version} {head.hash}"
        if self.checkpoint is None:
            return text + "; no checkpoint in the bundle (deleted newest events are undetectable)"
        if self.checkpoint_authentic is None:
            return text + "; checkpoint present but NOT authenticated: no signing key configured"
        return text + f"; checkpoint v{self.checkpoint.version} signature valid"


class _BadLineError(Exception):
    def __init__(self, line: int, problem: str):
        super().__init__(problem)
        self.line, self.problem = line, problem


def verify_bundle(path: Path, signer: CheckpointSigner | None) -> BundleVerdict:
    """Check a bundle's chain, counts and checkpoint; name the first bad line."""
    header: dict[str, Any] = {}
    checkpoints: list[tuple[int, Checkpoint]] = []
    events: list[ChainLink] = []
    try:
        with path.open(encoding="utf-8") as bundle:
            for number, document in _documents(bundle):
                kind = document.get("kind")
                if number == 1:
                    if kind != "header" or document.get("format") != EXPORT_FORMAT:
                        raise _BadLineError(1, f"not an {EXPORT_FORMAT} bundle header")
                    header = document
                elif kind == "event":
                    events.append(_link(number, document, header))
                elif kind == "checkpoint":
                    checkpoints.append((number, _checkpoint(number, document)))
                else:
                    raise _BadLineError(number, f"unknown line kind {kind!r}")
    except _BadLineError as bad:
        return BundleVerdict(
            False, header.get("execution_id"), None, None, None, bad.problem, bad.line
        )
    if not header:
        return BundleVerdict(False, None, None, None, None, "the bundle is empty", 1)
    checkpoint = checkpoints[-1][1] if checkpoints else None
    verdict = verify_chain(events, checkpoint.head if checkpoint else None)
    result = BundleVerdict(True, header["execution_id"], verdict, checkpoint, None)
    if not verdict.ok:
        assert verdict.broken is not None
        return _broken(result, verdict.broken, events)
    if verdict.events < int(header.get("events", 0)):
        problem = f"the header announces {header['events']} events; {verdict.events} are here"
        return _replace(result, problem, len(events) + 2)
    if checkpoint is not None and signer is not None:
        authentic = signer.is_authentic(checkpoint)
        if not authentic:
            problem = "the checkpoint's signature does not match (forged or another key)"
            return _replace(result, problem, checkpoints[-1][0], authentic=False)
        return BundleVerdict(True, result.execution_id, verdict, checkpoint, True)
    return result


def _documents(bundle: TextIO) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, text in enumerate(bundle, start=1):
        try:
            document = json.loads(text)
        except ValueError as error:
            raise _BadLineError(number, f"not JSON ({error})") from None
        if not isinstance(document, dict):
            raise _BadLineError(number, "not a JSON object")
        yield number, document


def _link(number: int, document: dict[str, Any], header: dict[str, Any]) -> ChainLink:
    fields, version, topic = document.get("fields"), document.get("version"), document.get("topic")
    if not isinstance(fields, dict) or not isinstance(version, int) or not isinstance(topic, str):
        raise _BadLineError(number, "an event line needs fields, version and topic")
    if fields.get("originator_id") != header.get("execution_id"):
        raise _BadLineError(number, "the event belongs to another execution")
    if fields.get("originator_version") != version:
        raise _BadLineError(number, "the event's version disagrees with its fields")
    return ChainLink(version, topic, fields, position=document.get("position"), line=number)


def _checkpoint(number: int, document: dict[str, Any]) -> Checkpoint:
    try:
        return Checkpoint.from_json(document)
    except (KeyError, TypeError, ValueError) as error:
        raise _BadLineError(number, f"an unreadable checkpoint ({error})") from None


def _broken(result: BundleVerdict, broken: ChainBreak, events: list[ChainLink]) -> BundleVerdict:
    line = broken.line
    if line is None:  # past the last event: the newest ones are missing
        line = (events[-1].line or 1) + 1 if events else 2
    where = f"event version {broken.version}"
    if broken.position is not None:
        where += f" (store position {broken.position})"
    return _replace(result, f"{where}: {broken.reason}", line)


def _replace(
    result: BundleVerdict, problem: str, line: int, authentic: bool | None = None
) -> BundleVerdict:
    return BundleVerdict(
        False, result.execution_id, result.verdict, result.checkpoint, authentic, problem, line
    )


def parse_execution_id(text: str) -> UUID:
    """An execution id from the command line, or a clear error."""
    try:
        return UUID(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an execution id (a UUID)") from None
