"""The hash chain, attribution, snapshots and offline bundles, on the in-memory store."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import json
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.utils import get_topic

from agent_ledger.application.audit import Audit, AuditRead
from agent_ledger.application.checkpoints import Checkpoint, CheckpointSigner
from agent_ledger.application.executions import ExecutionNotFoundError, Executions
from agent_ledger.domain.executions import Execution, ExecutionEvent
from agent_ledger.domain.hash_chain import GENESIS, ChainHead, orjson, verify_chain
from agent_ledger.infrastructure.audit.export import verify_bundle, write_bundle

KEY = "unit-test-signing-key-0123456789"


class InMemoryReads:
    def __init__(self) -> None:
        self.rows: list[AuditRead] = []

    def record(self, read: AuditRead) -> None:
        self.rows.append(dataclasses.replace(read, id=len(self.rows) + 1))

    def list(self, **_: Any) -> list[AuditRead]:
        return list(self.rows)


class InMemoryCheckpoints:
    def __init__(self) -> None:
        self.rows: list[Checkpoint] = []

    def add(self, checkpoint: Checkpoint) -> None:
        self.rows.append(checkpoint)

    def latest(self, execution_id: UUID) -> Checkpoint | None:
        mine = [c for c in self.rows if c.execution_id == execution_id]
        return max(mine, key=lambda c: c.version) if mine else None

    def heads(self) -> dict[UUID, int]:
        return {c.execution_id: c.version for c in self.rows}


def started(**extra: Any) -> Execution:
    return Execution.start(
        user_id="user-a",
        process_name="p",
        process_version=1,
        definition={"steps": []},
        step_ids=["a", "b"],
        input={"question": "why?", 7: "an int key"},
        **extra,
    )


def run_steps(execution: Execution, steps: int = 2) -> None:
    for step in ["a", "b"][:steps]:
        execution.schedule_step(step, 1)
        execution.start_step(step, 1)
        execution.start_timer(step, 1, 1.0, datetime.now(UTC) + timedelta(seconds=1))
        execution.fire_timer(step, 1)
        execution.complete_step(step, 1, {"value": 1.5, "items": [1, None, "x"]})


@pytest.fixture
def app() -> Executions:
    return Executions(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})


@pytest.fixture
def audit(app: Executions) -> Audit:
    return Audit(app, InMemoryReads(), InMemoryCheckpoints(), CheckpointSigner(KEY))


def test_each_event_links_to_the_hash_of_the_one_before() -> None:
    execution = started()
    run_steps(execution)
    events = execution.collect_events()

    assert events[0].previous_hash == GENESIS  # type: ignore[attr-defined]
    for before, after in itertools.pairwise(events):
        assert after.previous_hash == before.hash  # type: ignore[attr-defined]
    assert len({e.hash for e in events}) == len(events)  # type: ignore[attr-defined]
    assert execution.chain_head == events[-1].hash  # type: ignore[attr-defined]


def test_events_record_who_caused_them_and_the_correlation_id() -> None:
    execution = started(caused_by="user:user-a", correlation_id="req-1")
    execution.schedule_step("a", 1)
    execution.act_as("worker:w1", "req-1")
    execution.start_step("a", 1)
    events = execution.collect_events()

    causes = [(e.caused_by, e.correlation_id) for e in events]  # type: ignore[attr-defined]
    assert causes == [("user:user-a", "req-1"), ("system", None), ("worker:w1", "req-1")]


def test_a_stored_chain_verifies_and_an_altered_field_names_its_version(
    app: Executions, audit: Audit
) -> None:
    execution = started()
    run_steps(execution)
    app.save(execution)
    assert audit.verify(execution.id, owner=None).ok

    links = list(audit.links(execution.id))
    altered = dict(links[3].fields, attempt=2)
    tampered = [*links[:3], dataclasses.replace(links[3], fields=altered), *links[4:]]
    verdict = verify_chain(tampered)

    assert not verdict.ok
    assert verdict.broken is not None
    assert verdict.broken.version == 4
    assert "altered" in verdict.broken.reason


def test_a_checkpoint_reveals_that_the_newest_events_were_deleted(
    app: Executions, audit: Audit
) -> None:
    execution = started()
    run_steps(execution)
    app.save(execution)
    (checkpoint,) = audit.checkpoint({execution.id: execution.version})
    assert isinstance(checkpoint, Checkpoint)
    links = list(audit.links(execution.id))

    assert verify_chain(links, checkpoint.head).ok
    assert verify_chain(links[:-2]).ok  # the chain alone cannot tell
    verdict = verify_chain(links[:-2], checkpoint.head)
    assert not verdict.ok
    assert verdict.broken is not None
    assert "deleted" in verdict.broken.reason


def test_a_forged_checkpoint_fails_its_signature() -> None:
    signer = CheckpointSigner(KEY)
    genuine = signer.sign(UUID(int=1), ChainHead(3, "a" * 64), datetime.now(UTC))

    assert signer.is_authentic(genuine)
    assert not signer.is_authentic(dataclasses.replace(genuine, version=2))
    assert not CheckpointSigner("another-key-0123456789").is_authentic(genuine)


def test_snapshots_rebuild_the_same_typed_state_as_replaying_every_event(app: Executions) -> None:
    app.snapshotting_intervals = {Execution: 4}
    execution = started()
    run_steps(execution)
    app.save(execution)
    assert app.snapshots is not None
    assert [s.originator_version for s in app.snapshots.get(execution.id)] == [4, 8]

    for version in range(1, execution.version + 1):
        from_snapshot = app.get_execution(execution.id, version=version)
        replayed: Any = None
        for event in app.events.get(execution.id, lte=version):
            replayed = event.mutate(replayed)  # type: ignore[attr-defined]
        assert replayed is not None
        assert from_snapshot.steps == replayed.steps
        assert from_snapshot.status is replayed.status
        assert from_snapshot.chain_head == replayed.chain_head
    latest = app.get_execution(execution.id)
    latest.complete("done")  # a snapshot-loaded execution keeps extending the chain
    app.save(latest)
    assert Audit(app, InMemoryReads(), InMemoryCheckpoints()).verify(latest.id, owner=None).ok


def test_state_at_a_time_is_the_state_after_the_last_event_by_then(
    app: Executions, audit: Audit
) -> None:
    execution = started()
    run_steps(execution, steps=1)
    app.save(execution)
    events = list(app.events.get(execution.id))

    at_third = audit.get_state(execution.id, owner=None, at=events[2].timestamp)  # type: ignore[attr-defined]
    assert at_third.version == 3
    with pytest.raises(ExecutionNotFoundError, match="had not started"):
        audit.get_state(execution.id, owner=None, at=events[0].timestamp - timedelta(seconds=1))  # type: ignore[attr-defined]
    with pytest.raises(ExecutionNotFoundError, match="not 99"):
        audit.get_state(execution.id, owner=None, version=99)
    with pytest.raises(ExecutionNotFoundError):
        audit.get_state(execution.id, owner="user-b", version=1)


def export_to(audit: Audit, execution_id: UUID, path: Path) -> list[str]:
    buffer = io.StringIO()
    write_bundle(audit.export(execution_id, owner=None), buffer)
    path.write_text(buffer.getvalue())
    return buffer.getvalue().splitlines()


def test_an_exported_bundle_verifies_offline_and_names_the_first_altered_line(
    app: Executions, audit: Audit, tmp_path: Path
) -> None:
    execution = started()
    run_steps(execution)
    app.save(execution)
    audit.checkpoint({execution.id: execution.version})
    bundle = tmp_path / "bundle.jsonl"
    lines = export_to(audit, execution.id, bundle)
    signer = CheckpointSigner(KEY)

    verdict = verify_bundle(bundle, signer)
    assert verdict.ok, verdict.describe()
    assert "signature valid" in verdict.describe()

    event = json.loads(lines[5])
    event["fields"]["output"] = {"value": 2.5}
    bundle.write_text("\n".join([*lines[:5], json.dumps(event), *lines[6:]]) + "\n")
    verdict = verify_bundle(bundle, signer)
    assert not verdict.ok
    assert verdict.line == 6
    assert "altered" in verdict.describe()


def test_a_bundle_missing_its_newest_events_fails_against_its_checkpoint(
    app: Executions, audit: Audit, tmp_path: Path
) -> None:
    execution = started()
    run_steps(execution)
    app.save(execution)
    audit.checkpoint({execution.id: execution.version})
    bundle = tmp_path / "bundle.jsonl"
    lines = export_to(audit, execution.id, bundle)
    header = json.loads(lines[0])
    header["events"] = execution.version - 2  # a careful forger fixes the header too
    bundle.write_text("\n".join([json.dumps(header), *lines[1:-3], lines[-1]]) + "\n")

    verdict = verify_bundle(bundle, CheckpointSigner(KEY))
    assert not verdict.ok
    assert "deleted" in verdict.describe()


def test_a_bundle_that_is_not_json_names_its_line(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.jsonl"
    bundle.write_text('{"kind": "header", "format": "agent-ledger-audit-export/1"}\n{oops\n')

    verdict = verify_bundle(bundle, None)
    assert not verdict.ok
    assert verdict.line == 2


# -- the fast verification path must read and hash exactly what the reference does -----------


def every_event_type() -> list[Execution]:
    """Executions that, between them, record every kind of execution event."""
    now = datetime.now(UTC)
    made = []
    for ending in ("complete", "fail", "cancel", "time_out"):
        execution = started(caused_by="user:user-a", correlation_id="req-ü")
        execution.act_as("worker:w1", "req-1")
        for step in ("a", "b"):
            execution.schedule_step(step, 1)
            execution.start_step(step, 1)
        execution.start_agent("a", 1, "echo", {"question": "naïve? 日本", "n": 2**63})
        execution.record_thinking("a", 1, "thinking\n\t\x7f \u2028 😀")
        execution.start_tool("a", 1, "c1", "search", {"q": "x", "deep": [1, [2, {"z": None}]]})
        execution.complete_tool("a", 1, "c1", {"hits": 3, "ok": True}, 12.5)
        execution.start_tool("a", 1, "c2", "fetch", {})
        execution.fail_tool("a", 1, "c2", {"type": "Timeout"}, 1e-05)
        execution.record_output_delta("a", 1, "Hello, ", 0)
        execution.record_output_delta("a", 1, "wörld \u2603", 1)
        execution.complete_llm_call("a", 1, "gpt-x", 12, 7, 15.25, 0.000123)
        execution.complete_llm_call("a", 1, "local", None, None, 2.0, None)
        execution.fail_agent("a", 1, {"message": "no"}, 3.0)
        execution.retry_step("a", 1, {"message": "again"}, 0.5, now + timedelta(seconds=1))
        execution.schedule_step("a", 2)
        execution.start_step("a", 2)
        execution.start_agent("a", 2, "echo", None)
        execution.complete_agent("a", 2, {"answer": 42, "big": 10**30}, 1e16, {"cost_usd": 1e-9})
        execution.evaluate_gateway("a", 2, 1, ["b"], "route one")
        execution.start_timer("a", 2, 1.0, now + timedelta(seconds=1))
        execution.fire_timer("a", 2)
        execution.complete_step("a", 2, {"value": 1.5})
        execution.receive_signal("approval", {"approved": True, "note": "ok ✓"}, "bob", ["user"])
        execution.await_signal("b", 1, "approval", now + timedelta(hours=1))
        execution.time_out_step("b", 1, 30.0)
        execution.fail_step("b", 1, {"message": "late"})
        execution.take_over("worker:w1", "worker:w2")
        if ending == "complete":
            execution.complete({"done": True})
        elif ending == "fail":
            execution.fail({"message": "boom"})
        elif ending == "cancel":
            execution.request_cancellation("user:user-a", "stop")
            execution.cancel("user:user-a", "stop")
        else:
            execution.time_out(60.0)
        made.append(execution)
    skipping = started()
    skipping.schedule_step("a", 1)
    skipping.cancel_step("a", "not needed")
    skipping.skip_step("b", "not needed")
    made.append(skipping)
    resumed = made[1]  # failed: resumed, and its completed step "a" copied into a fork
    resumed.resume("user-a", "the outage is over ✓")
    fork = started()
    fork.record_fork(resumed, "b", {"a": {"value": 1.5, "ünï": [None, True]}})
    made.append(fork)
    return made


def test_the_fast_reading_of_stored_events_is_byte_identical_to_the_reference(
    app: Executions,
) -> None:
    from agent_ledger.application.audit import _AS_HASHED, _stored_fields
    from agent_ledger.domain.hash_chain import canonical, reference_canonical

    executions = every_event_type()
    topics, fast_reads = set(), 0
    for execution in executions:
        for event in execution.collect_events():
            stored = app.mapper.to_stored_event(event)
            fast, was_fast = _stored_fields(stored.state)
            reference = _AS_HASHED.decode(stored.state.decode())
            assert fast == reference
            for fields in (fast, reference):
                fields["originator_id"] = str(execution.id)
                fields["originator_version"] = event.originator_version
            expected = reference_canonical(stored.topic, reference)
            assert canonical(stored.topic, fast, plain=was_fast) == expected
            assert hashlib.sha256(expected).hexdigest() == event.hash  # type: ignore[attr-defined]
            topics.add(stored.topic)
            fast_reads += was_fast
    event_types = {
        get_topic(cls)
        for cls in vars(Execution).values()
        if isinstance(cls, type) and issubclass(cls, ExecutionEvent | Execution.ExecutionStarted)
    }
    assert topics == event_types
    if orjson is not None:
        assert fast_reads > len(topics)  # the fast path is really taken


TRICKY_STATES = [
    b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-01-01T00:00:00+00:00"},"a":1}',
    b'{"t":{"\\u005ftype_":"uuid_hex","_data_":"12345678123456781234567812345678"}}',
    b'{"t":{"_type_":"uuid_hex","_data_":"12345678123456781234567812345678"},"u":1}',
    b'{"t":{"_type_":"decimal_str","_data_":"1.10"},"n":{"x":{"_type_":"uuid_hex","_data_":"'
    b'12345678123456781234567812345678"}}}',
    b'{"t":{"_type_":"uuid_hex","_data_":"not hex"}}',
    b'{"t":{"_type_":"mystery","_data_":[1,2]},"m":"_type_ in text"}',
    b'{"_type_":"datetime_iso","_data_":"x"}',
    b'{"timestamp":{"_type_":"datetime_iso","_data_":{"_type_":"decimal_str","_data_":"1"}}}',
    b'{"big":123456789012345678901234567890,"neg":-9223372036854775809}',
    b'{"f":1e400}',
    b'{"f":NaN}',
    b'{"a":1,"a":{"_type_":"decimal_str","_data_":"2"}}',
    b'{"s":"\\ud800"}',
    b'{"s":"caf\xc3\xa9 \x7f","n":-0,"x":1E2}',
    b"[1,2]",
    b'{"unterminated":',
    b"\xff",
]


@pytest.mark.parametrize("state", TRICKY_STATES)
def test_the_fast_reading_agrees_with_the_reference_on_odd_or_hostile_states(
    state: bytes,
) -> None:
    from agent_ledger.application.audit import _AS_HASHED, stored_fields
    from agent_ledger.domain.hash_chain import canonical, reference_canonical

    try:
        reference: Any = _AS_HASHED.decode(state.decode())
    except Exception as error:
        with pytest.raises(type(error)):
            stored_fields(state)
        return
    fast = stored_fields(state)
    assert json.dumps(fast, sort_keys=True) == json.dumps(reference, sort_keys=True)
    if isinstance(reference, dict):
        assert canonical("t", fast) == reference_canonical("t", reference)


@pytest.mark.parametrize(
    "value",
    [
        "plain ascii",
        "naïve 日本 😀",
        "del \x7f and nul \x00 and \u2028",
        "ascii but for del \x7f and nul \x00",
        '\\ "quoted" / \b\f\n\r\t',
        1.5,
        0.0,
        -0.0,
        0.1 + 0.2,
        1e-4,
        9.9999e-05,
        999999999999999.9,
        1e15,
        1e16,
        1e-05,
        5e-324,
        float("inf"),
        float("nan"),
        2**63,
        2**64,
        -(2**63) - 1,
        2**70,
        True,
        None,
        [],
        {},
        {"é": 1, "e": 2, "z": 3, "Z": 4, "😀": 5, "\u00ff": 6},
        [1, [2, [3, {"k": [None, False]}]]],
    ],
)
def test_canonical_bytes_are_the_reference_bytes_whatever_the_values(value: Any) -> None:
    from agent_ledger.domain.hash_chain import canonical, reference_canonical

    fields = {"value": value, "hash": "x", "class_version": 2, "previous_hash": GENESIS}
    assert canonical("topic", fields) == reference_canonical("topic", fields)


def test_canonical_bytes_of_floats_of_every_magnitude_are_the_reference_bytes() -> None:
    from agent_ledger.domain.hash_chain import canonical, reference_canonical

    rng = random.Random(7)
    for exponent in range(-8, 20):
        for _ in range(300):
            value = rng.choice((1, -1)) * rng.random() * 10**exponent
            for candidate in (value, round(value, 3), float(int(value))):
                fields = {"duration_ms": candidate, "nested": [{"x": candidate}]}
                assert canonical("t", fields) == reference_canonical("t", fields), candidate


def test_the_bulk_verifier_of_stored_rows_gives_the_verdict_of_the_chain(app: Executions) -> None:
    from agent_ledger.application.audit import verify_stored_chains

    executions = every_event_type()
    rows: list[tuple[str, int | None, int, str, bytes]] = []
    for execution in sorted(executions, key=lambda e: str(e.id)):
        for event in execution.collect_events():
            stored = app.mapper.to_stored_event(event)
            rows.append(
                (str(execution.id), None, event.originator_version, stored.topic, stored.state)
            )
    verdicts = dict(verify_stored_chains(rows))
    assert all(v.ok for v in verdicts.values()), verdicts
    assert sum(v.events for v in verdicts.values()) == len(rows)

    # the longest chain that holds the text the tampering changes (ids are random)
    with_text = {row[0] for row in rows if b"search" in row[4]}
    first = max(with_text, key=lambda i: sum(row[0] == i for row in rows))
    altered = [
        (*row[:4], row[4].replace(b"search", b"sEarch")) if row[0] == first else row for row in rows
    ]
    gap = [row for row in rows if not (row[0] == first and row[2] == 3)]
    heads = {first: ChainHead(len([r for r in rows if r[0] == first]), "f" * 64)}
    truncated = [row for row in rows if not (row[0] == first and row[2] > 5)]
    expected = {
        "altered": (altered, None, "altered"),
        "gap": (gap, None, "version 3 is missing"),
        "truncated": (truncated, heads, "deleted"),
    }
    for name, (tampered, checkpoints, reason) in expected.items():
        verdict = dict(verify_stored_chains(tampered, checkpoints))[first]
        assert not verdict.ok, name
        assert verdict.broken is not None
        assert reason in verdict.broken.reason, (name, verdict.broken)
        others = dict(verify_stored_chains(tampered, checkpoints))
        assert all(v.ok for k, v in others.items() if k != first), name


@pytest.mark.parametrize(
    "value",
    [
        "text",
        "naïve 日本 😀",
        1.5,
        1e-05,
        float("inf"),
        2**70,
        True,
        None,
        (1, "two", (3.0,)),
        {"nested": [{"k": (None, False)}]},
        {1: "an int key", "1": "a text key"},
        datetime(2026, 11, 21, 12, 0, tzinfo=UTC),
        datetime(2026, 11, 21, 12, 0, 0, 123456),
        UUID("12345678-1234-5678-1234-567812345678"),
        Decimal("1.10"),
    ],
)
def test_a_recorded_hash_is_the_hash_of_the_json_round_trip_whatever_the_values(
    value: Any,
) -> None:
    from agent_ledger.domain.hash_chain import _AS_STORED, event_hash, recorded_hash

    fields = {"value": value, "when": datetime(2026, 1, 1, tzinfo=UTC), "previous_hash": GENESIS}
    round_trip = json.loads(_AS_STORED.encode(fields))
    assert recorded_hash("topic", fields) == event_hash("topic", round_trip)
