"""`agent-ledger audit ...`: sign checkpoints, export an execution, verify a bundle offline."""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from agent_ledger.application.audit import Audit, AuditRead
from agent_ledger.application.checkpoints import Checkpoint, CheckpointSigner
from agent_ledger.infrastructure.settings import Settings

audit_app = typer.Typer(
    help="Audit trail: signed checkpoints, export bundles, offline verification.",
    no_args_is_help=True,
)

Actor = Annotated[
    str | None, typer.Option("--actor", help="who reads (logged); default: cli:$USER")
]


@contextmanager
def _opened_audit(settings: Settings) -> Iterator[tuple[Audit, object]]:
    from agent_ledger.infrastructure.audit.service import execution_heads, open_audit
    from agent_ledger.infrastructure.schema import initialize_schema
    from agent_ledger.infrastructure.store.persistence import open_executions, read_model_engine

    initialize_schema(settings)
    executions = open_executions(settings)
    engine = read_model_engine(settings)
    try:
        yield open_audit(settings, executions, engine), lambda: execution_heads(executions)
    finally:
        executions.close()
        engine.dispose()


@audit_app.command()
def checkpoint(
    out: Annotated[
        Path | None, typer.Option("-o", "--out", help="also append the checkpoints to this file")
    ] = None,
) -> None:
    """Sign the chain head of every execution that grew since its last checkpoint."""
    settings = Settings()
    if not settings.audit_signing_key:
        raise typer.BadParameter("set AGENT_LEDGER_AUDIT_SIGNING_KEY to sign checkpoints")
    broken = signed = 0
    with _opened_audit(settings) as (audit, heads):
        results = audit.checkpoint(heads())  # type: ignore[operator]
    with out.open("a", encoding="utf-8") if out else _no_file() as keep:
        for result in results:
            if isinstance(result, Checkpoint):
                signed += 1
                if keep is not None:
                    keep.write(json.dumps(result.as_json()) + "\n")
                continue
            broken += 1
            where = result.verdict.broken
            reason = f"v{where.version}: {where.reason}" if where else "checkpoint signature"
            typer.echo(f"NOT SIGNED {result.execution_id}: broken at {reason}", err=True)
    typer.echo(f"signed {signed} checkpoint(s); {broken} chain(s) did not verify")
    raise typer.Exit(1 if broken else 0)


@contextmanager
def _no_file() -> Iterator[None]:
    yield None


@audit_app.command()
def export(
    execution_id: Annotated[str, typer.Argument(help="the execution's id")],
    out: Annotated[Path, typer.Option("-o", "--out", help="the bundle to write (JSON Lines)")],
    actor: Actor = None,
) -> None:
    """Write one execution's events, hashes and newest checkpoint to a self-contained bundle."""
    from agent_ledger.application.executions import ExecutionNotFoundError
    from agent_ledger.infrastructure.audit.export import parse_execution_id, write_bundle

    try:
        wanted = parse_execution_id(execution_id)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    with _opened_audit(Settings()) as (audit, _):
        try:
            lines = list(audit.export(wanted, owner=None))
        except ExecutionNotFoundError as error:
            typer.echo(str(error), err=True)
            raise typer.Exit(2) from None
        with out.open("w", encoding="utf-8") as bundle:
            events = write_bundle(lines, bundle)
        who = actor or f"cli:{getpass.getuser()}"
        audit.reads.record(AuditRead(who, "export", wanted, None, detail={"file": str(out)}))
    typer.echo(f"wrote {events} events of execution {wanted} to {out}")


@audit_app.command()
def verify(
    bundle: Annotated[Path, typer.Argument(help="a bundle written by `audit export`")],
) -> None:
    """Check a bundle with no database: its chain, its counts and its signed checkpoint."""
    from agent_ledger.infrastructure.audit.export import verify_bundle

    if not bundle.is_file():
        raise typer.BadParameter(f"{bundle} is not a file")
    key = Settings().audit_signing_key
    verdict = verify_bundle(bundle, CheckpointSigner(key) if key else None)
    typer.echo(verdict.describe())
    raise typer.Exit(0 if verdict.ok else 1)


@audit_app.command("verify-store")
def verify_store_command(
    workers: Annotated[int, typer.Option(help="processes verifying at once")] = 2,
) -> None:
    """Verify every execution's chain in the store; lists the broken ones (exit 1 if any)."""
    from agent_ledger.infrastructure.audit.service import verify_store

    settings = Settings()
    verifications = verify_store(settings, workers=workers)
    broken = [v for v in verifications if not v.ok]
    for verification in broken:
        where = verification.verdict.broken
        detail = f"version {where.version}: {where.reason}" if where else "checkpoint not authentic"
        typer.echo(f"BROKEN {verification.execution_id} at {detail}")
    typer.echo(f"{len(verifications) - len(broken)} of {len(verifications)} executions verified ok")
    raise typer.Exit(1 if broken else 0)
