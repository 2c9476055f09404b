"""An execution's trace, built from its recorded events alone: one span for the execution,
one per step, attempt, model call and tool call, each with ids derived from what it is.

Whoever builds it (the worker that ran it, the one that took it over, a rebuild) builds the
same spans: the trace id is the caller's (a `traceparent` recorded as the start's
correlation id) or else the execution id's 128 bits; a span id is a hash of the execution
and the span's place in it; times are the events' timestamps.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

EXECUTION_ENDS = frozenset(
    {"execution_completed", "execution_failed", "execution_cancelled", "execution_timed_out"}
)
STEP_ENDS = frozenset(
    {"step_completed", "step_failed", "step_skipped", "step_timed_out", "step_cancelled"}
)
ATTEMPT_ENDS = STEP_ENDS | {"step_retrying"}
FAILURES = frozenset(
    {"execution_failed", "execution_timed_out", "step_failed", "step_timed_out", "tool_failed"}
)
NOT_ATTEMPTED = frozenset({"step_skipped", "step_cancelled"})
"""Events that may end a step no attempt of which ran: they open no attempt span."""
SPAN_ENDS = EXECUTION_ENDS | ATTEMPT_ENDS | {"tool_completed", "tool_failed", "llm_call_completed"}
"""The event types that end a span: a trace exporter need look only at executions with one."""


class Recorded(Protocol):
    """A stored event as the trace reads it (`LoggedEvent` is one)."""

    position: int
    type: str

    @property
    def event(self) -> Any: ...


@dataclass(frozen=True)
class SpanRecord:
    """One ended span, ready for any exporter."""

    name: str
    trace_id: int
    span_id: int
    parent_id: int | None
    start_ns: int
    end_ns: int
    attributes: dict[str, str | int | float | bool] = field(default_factory=dict)
    error: str | None = None
    ended_at: int = 0
    """The store position of the event that ended the span."""
    remote_parent: bool = False
    """The parent is the caller's span, in another process."""


def parse_traceparent(value: str | None) -> tuple[int, int] | None:
    """The trace id and span id of a W3C `traceparent`, or None when it is not one."""
    match = TRACEPARENT.match((value or "").strip().lower())
    if match is None or set(match[1]) == {"0"} or set(match[2]) == {"0"}:
        return None
    return int(match[1], 16), int(match[2], 16)


def span_id_of(execution_id: UUID, *key: object) -> int:
    """A span id (64 bits, never 0) that depends only on the execution and the span's key."""
    digest = hashlib.sha256("/".join([str(execution_id), *map(str, key)]).encode()).digest()
    return int.from_bytes(digest[:8], "big") or 1


def trace_id_of(execution_id: UUID, traceparent: str | None = None) -> int:
    """The execution's trace: the caller's, else the execution id's 128 bits."""
    caller = parse_traceparent(traceparent)
    return caller[0] if caller is not None else execution_id.int


def attempt_traceparent(
    execution_id: UUID, step_id: str, attempt: int, caller: str | None = None
) -> str:
    """The `traceparent` an attempt sends on (to agents, tools and model providers)."""
    trace_id = trace_id_of(execution_id, caller)
    span_id = span_id_of(execution_id, "attempt", step_id, attempt)
    return f"00-{trace_id:032x}-{span_id:016x}-01"


def _ns(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000


_EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


@dataclass
class _Open:
    start_ns: int
    span_id: int
    parent_id: int | None
    name: str
    attributes: dict[str, str | int | float | bool]


class TraceBuilder:
    """Follows one execution's events in order and yields the spans they end."""

    def __init__(self, execution_id: UUID):
        self.execution_id = execution_id
        self.trace_id = execution_id.int
        self.caller_span: int | None = None
        self.user_id = ""
        self.run = 0  # one execution span per run: the start, then each resume
        self.execution: _Open | None = None
        self.steps: dict[str, _Open] = {}
        self.attempts: dict[tuple[str, int], _Open] = {}
        self.tools: dict[tuple[str, int, str], _Open] = {}
        self.model_calls: dict[tuple[str, int], int] = {}

    def follow(self, recorded: Recorded) -> list[SpanRecord]:
        """The spans `recorded` ends (most events end none)."""
        event, kind = recorded.event, recorded.type
        at = _ns(event.timestamp)
        if kind in {"execution_started", "execution_resumed"}:
            self._open_execution(event, kind, at)
            return []
        if self.execution is None:
            return []
        step_id: str | None = getattr(event, "step_id", None)
        ended = [] if step_id is None else self._follow_step(recorded, step_id, event.attempt, at)
        if kind in EXECUTION_ENDS:
            ended.extend(self._end_execution(recorded, at))
        return ended

    def _follow_step(
        self, recorded: Recorded, step_id: str, attempt: int, at: int
    ) -> list[SpanRecord]:
        event, kind = recorded.event, recorded.type
        self._open_step(step_id, attempt, at, attempted=kind not in NOT_ATTEMPTED)
        ended: list[SpanRecord] = []
        if kind == "agent_started":
            opened = self.attempts[(step_id, attempt)]
            opened.name = f"invoke_agent {event.agent}"
            opened.attributes["gen_ai.operation.name"] = "invoke_agent"
            opened.attributes["gen_ai.agent.name"] = event.agent
        elif kind == "tool_executing":
            self.tools[(step_id, attempt, event.call_id)] = _Open(
                at,
                span_id_of(self.execution_id, "tool", step_id, attempt, event.call_id),
                self.attempts[(step_id, attempt)].span_id,
                f"execute_tool {event.tool}",
                {
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": event.tool,
                    "gen_ai.tool.call.id": event.call_id,
                },
            )
        elif kind in {"tool_completed", "tool_failed"}:
            tool = self.tools.pop((step_id, attempt, event.call_id), None)
            if tool is not None:
                error = event.error.get("message", "tool failed") if kind == "tool_failed" else None
                ended.append(self._end(tool, recorded, at, error))
        elif kind == "llm_call_completed":
            ended.append(self._model_call(recorded, step_id, attempt, at))
        if kind in ATTEMPT_ENDS:
            ended.extend(self._end_attempt(recorded, step_id, attempt, at))
        if kind in STEP_ENDS and step_id in self.steps:
            ended.append(self._end(self.steps.pop(step_id), recorded, at, _error_of(event, kind)))
        return ended

    def _open_execution(self, event: Any, kind: str, at: int) -> None:
        if kind != "execution_resumed":
            caller = parse_traceparent(getattr(event, "correlation_id", None))
            if caller is not None:
                self.trace_id, self.caller_span = caller
            self.user_id = event.user_id
        else:
            self.run += 1
        name = getattr(event, "process_name", None) or "execution"
        attributes: dict[str, str | int | float | bool] = {
            "agent_ledger.execution_id": str(self.execution_id),
            "agent_ledger.user_id": self.user_id,
        }
        if self.execution is not None:  # a resume of a run that never ended: keep that span
            return
        self.execution = _Open(
            at,
            span_id_of(self.execution_id, "execution", self.run),
            self.caller_span,
            f"execution {name}" if kind != "execution_resumed" else "execution resumed",
            attributes,
        )

    def _open_step(self, step_id: str, attempt: int, at: int, *, attempted: bool) -> None:
        assert self.execution is not None
        step = self.steps.get(step_id)
        if step is None:
            step = self.steps[step_id] = _Open(
                at,
                span_id_of(self.execution_id, "step", self.run, step_id),
                self.execution.span_id,
                f"step {step_id}",
                {"agent_ledger.step_id": step_id},
            )
        if attempted and (step_id, attempt) not in self.attempts:
            self.attempts[(step_id, attempt)] = _Open(
                at,
                span_id_of(self.execution_id, "attempt", step_id, attempt),
                step.span_id,
                f"attempt {step_id}#{attempt}",
                {"agent_ledger.step_id": step_id, "agent_ledger.attempt": attempt},
            )

    def _model_call(self, recorded: Recorded, step_id: str, attempt: int, at: int) -> SpanRecord:
        event = recorded.event
        index = self.model_calls.get((step_id, attempt), 0)
        self.model_calls[(step_id, attempt)] = index + 1
        attributes: dict[str, str | int | float | bool] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": event.model,
        }
        if event.prompt_tokens is not None:
            attributes["gen_ai.usage.input_tokens"] = event.prompt_tokens
        if event.completion_tokens is not None:
            attributes["gen_ai.usage.output_tokens"] = event.completion_tokens
        if event.cost_usd is not None:
            attributes["agent_ledger.cost_usd"] = event.cost_usd
        call = _Open(
            at - int(event.duration_ms * 1_000_000),
            span_id_of(self.execution_id, "model", step_id, attempt, index),
            self.attempts[(step_id, attempt)].span_id,
            f"chat {event.model}",
            attributes,
        )
        return self._end(call, recorded, at, None)

    def _end_attempt(
        self, recorded: Recorded, step_id: str, attempt: int, at: int
    ) -> list[SpanRecord]:
        ended = [
            self._end(tool, recorded, at, "the attempt ended first")
            for key, tool in list(self.tools.items())
            if key[:2] == (step_id, attempt) and self.tools.pop(key)
        ]
        opened = self.attempts.pop((step_id, attempt), None)
        if opened is not None:
            error = _error_of(recorded.event, recorded.type)
            if recorded.type == "step_retrying":
                error = str(recorded.event.error.get("message", "retrying"))
            ended.append(self._end(opened, recorded, at, error))
        return ended

    def _end_execution(self, recorded: Recorded, at: int) -> list[SpanRecord]:
        leftovers = [*self.tools.values(), *self.attempts.values(), *self.steps.values()]
        ended = [self._end(span, recorded, at, None) for span in leftovers]
        self.tools, self.attempts, self.steps = {}, {}, {}
        assert self.execution is not None
        execution, self.execution = self.execution, None
        ended.append(self._end(execution, recorded, at, _error_of(recorded.event, recorded.type)))
        return ended

    def _end(self, opened: _Open, recorded: Recorded, at: int, error: str | None) -> SpanRecord:
        attributes = dict(opened.attributes)
        attributes.setdefault("agent_ledger.execution_id", str(self.execution_id))
        attributes.setdefault("agent_ledger.user_id", self.user_id)
        attributes["agent_ledger.position"] = recorded.position
        if error is not None:
            failure = getattr(recorded.event, "error", None)
            known = isinstance(failure, dict) and failure.get("type")
            attributes["error.type"] = str(known) if known else recorded.type
        return SpanRecord(
            opened.name,
            self.trace_id,
            opened.span_id,
            opened.parent_id,
            opened.start_ns,
            max(at, opened.start_ns),
            attributes,
            error,
            recorded.position,
            remote_parent=opened.parent_id is not None and opened.parent_id == self.caller_span,
        )


def _error_of(event: Any, kind: str) -> str | None:
    if kind not in FAILURES:
        return None
    error = getattr(event, "error", None)
    if isinstance(error, dict):
        return str(error.get("message") or error.get("type") or kind)
    return kind


def trace_of(execution_id: UUID, history: Iterable[Recorded]) -> list[SpanRecord]:
    """Every span an execution's events (in order) have ended."""
    builder = TraceBuilder(execution_id)
    return [span for recorded in history for span in builder.follow(recorded)]


def spans_ended_between(
    execution_id: UUID, history: Sequence[Recorded], after: int, upto: int
) -> list[SpanRecord]:
    """The spans of `trace_of` ended by an event in (after, upto]."""
    return [s for s in trace_of(execution_id, history) if after < s.ended_at <= upto]
