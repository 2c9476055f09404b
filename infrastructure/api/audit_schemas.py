"""Response bodies of the audit API: state at a point in time, verification, reads."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field

from agent_ledger.application.audit import AuditRead, Verification
from agent_ledger.application.checkpoints import Checkpoint
from agent_ledger.domain.executions import Execution


class StepView(BaseModel):
    status: str
    attempt: int
    output: Any = None
    error: dict[str, Any] | None = None
    skip_reason: str | None = None
    due_at: datetime | None = None
    timer_fired: bool


class ExecutionState(BaseModel):
    """An execution as it was after one version, rebuilt from its events alone."""

    id: UUID
    version: int
    as_of: datetime = Field(description="timestamp of the event that made this version")
    user_id: str
    process: str
    process_version: int
    thread_id: str | None
    status: str
    steps: dict[str, StepView]
    output: Any = None
    error: dict[str, Any] | None = None
    cancellation: dict[str, str] | None = None
    chain_head: str = Field(description="hash of the event that made this version")

    @classmethod
    def of(cls, execution: Execution) -> ExecutionState:
        return cls(
            id=execution.id,
            version=execution.version,
            as_of=execution.modified_on,
            user_id=execution.user_id,
            process=execution.process_name,
            process_version=execution.process_version,
            thread_id=execution.thread_id,
            status=execution.status.value,
            steps={
                k: StepView(
                    status=s.status.value,
                    attempt=s.attempt,
                    output=s.output,
                    error=s.error,
                    skip_reason=s.skip_reason,
                    due_at=s.due_at,
                    timer_fired=s.timer_fired,
                )
                for k, s in execution.steps.items()
            },
            output=execution.output,
            error=execution.error,
            cancellation=execution.cancellation,
            chain_head=execution.chain_head,
        )


class BrokenLink(BaseModel):
    version: int
    position: int | None
    reason: str


class CheckpointView(BaseModel):
    version: int
    hash: str
    signed_at: datetime
    key_id: str
    signature_valid: bool | None = Field(description="null: no signing key configured here")

    @classmethod
    def of(cls, checkpoint: Checkpoint, valid: bool | None) -> CheckpointView:
        return cls(
            version=checkpoint.version,
            hash=checkpoint.hash,
            signed_at=checkpoint.signed_at,
            key_id=checkpoint.key_id,
            signature_valid=valid,
        )


class VerificationView(BaseModel):
    """`ok`, or the first broken link of the execution's hash chain."""

    execution_id: UUID
    ok: bool
    events: int
    head_version: int | None
    head_hash: str | None
    broken: BrokenLink | None
    checkpoint: CheckpointView | None

    @classmethod
    def of(cls, verification: Verification) -> VerificationView:
        verdict, checkpoint = verification.verdict, verification.checkpoint
        broken = verdict.broken
        link: BrokenLink | None
        if broken is None and verification.checkpoint_authentic is False:
            assert checkpoint is not None
            reason = "the newest checkpoint's signature does not match: it was forged"
            link = BrokenLink(version=checkpoint.version, position=None, reason=reason)
        else:
            link = (
                BrokenLink(version=broken.version, position=broken.position, reason=broken.reason)
                if broken is not None
                else None
            )
        return cls(
            execution_id=verification.execution_id,
            ok=verification.ok,
            events=verdict.events,
            head_version=verdict.head.version if verdict.head else None,
            head_hash=verdict.head.hash if verdict.head else None,
            broken=link,
            checkpoint=(
                CheckpointView.of(checkpoint, verification.checkpoint_authentic)
                if checkpoint is not None
                else None
            ),
        )


class AuditReadView(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    execution_id: UUID | None
    correlation_id: str | None
    detail: dict[str, Any]

    @classmethod
    def of(cls, read: AuditRead) -> AuditReadView:
        assert read.id is not None
        return cls(
            id=read.id,
            at=read.at,
            actor=read.actor,
            action=read.action,
            execution_id=read.execution_id,
            correlation_id=read.correlation_id,
            detail=dict(read.detail),
        )


class AuditReadPage(BaseModel):
    items: list[AuditReadView]
    next_after: int | None = Field(description="pass as ?after= for the next page, if any")
