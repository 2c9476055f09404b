"""The hash chain, attribution, snapshots and offline bundles, on the in-memory store."""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from application.audit import Audit, AuditRead
from application.checkpoints import Checkpoint, CheckpointSigner
from application.executions import ExecutionNotFoundError, Executions
from domain.executions import Execution
from domain.hash_chain import GENESIS, ChainHead, verify_chain
from infrastructure.audit_export import verify_bundle, write_bundle

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
