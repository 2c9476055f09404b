"""`agent-ledger projections ...`: rebuild a projection without stopping the API."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import sqlalchemy as sa
import typer

from agent_ledger.application.executions import Executions
from agent_ledger.infrastructure.read_models.rebuild import Rebuild, RebuildError, RebuildProgress
from agent_ledger.infrastructure.settings import Settings

projections_app = typer.Typer(
    help="Read models: rebuild from the event store.", no_args_is_help=True
)


@contextmanager
def _store(settings: Settings) -> Iterator[tuple[Executions, sa.Engine]]:
    """The event store and the read-model database, schema current, closed afterwards."""
    from agent_ledger.infrastructure.schema import initialize_schema
    from agent_ledger.infrastructure.store.persistence import open_executions, read_model_engine

    initialize_schema(settings)
    executions = open_executions(settings)
    engine = read_model_engine(settings)
    try:
        yield executions, engine
    finally:
        executions.close()
        engine.dispose()


def _print_progress(progress: RebuildProgress) -> None:
    share = 100 * progress.position / progress.head if progress.head else 100.0
    left = (progress.head - progress.position) / progress.rate if progress.rate else 0.0
    if progress.switched:
        typer.echo(
            f"{progress.name} v{progress.version}: switched at position {progress.position}; "
            f"{progress.events} events in {progress.seconds:.1f}s ({progress.rate:,.0f} events/s)"
            + (f", {progress.parked} parked" if progress.parked else ""),
            err=True,
        )
        return
    typer.echo(
        f"{progress.name} v{progress.version}: {progress.position}/{progress.head} "
        f"({share:.1f}%), {progress.rate:,.0f} events/s, about {left:.0f}s left",
        err=True,
    )


@projections_app.command()
def rebuild(
    name: Annotated[str, typer.Argument(help="execution_status or metrics")],
    batch_size: Annotated[int, typer.Option(help="events per transaction")] = 5000,
    grace: Annotated[
        float | None, typer.Option(help="seconds to keep the old tables after the switch")
    ] = None,
) -> None:
    """Rebuild NAME into fresh tables while the API reads the old ones, then switch."""
    settings = Settings()
    with _store(settings) as (executions, engine):
        try:
            job = Rebuild(executions, engine, name, batch_size=batch_size, report=_print_progress)
            final = job.run(settings.rebuild_grace_seconds if grace is None else grace)
        except RebuildError as error:
            typer.echo(f"agent-ledger: {error}", err=True)
            raise typer.Exit(2) from None
    typer.echo(f"rebuilt {final.name}: version {final.version} at position {final.position}")
    if final.parked:
        typer.echo(
            f"{final.parked} events could not be applied and were parked: "
            "agent-ledger projections parked",
            err=True,
        )


@projections_app.command()
def parked(
    retry: Annotated[
        int | None,
        typer.Option(
            help="apply the event at this position again to the projections that parked it"
        ),
    ] = None,
) -> None:
    """List the events projections could not apply and passed by, or retry one."""
    from agent_ledger.infrastructure.read_models.parked import parked as parked_events
    from agent_ledger.infrastructure.read_models.parked import retry_parked

    with _store(Settings()) as (executions, engine):
        try:
            if retry is not None:
                _retry(retry, retry_parked(executions, engine, retry))
                return
            with engine.connect() as connection:
                events = parked_events(connection)
        except ValueError as error:
            typer.echo(f"agent-ledger: {error}", err=True)
            raise typer.Exit(2) from None
    if not events:
        typer.echo("no parked events")
        return
    for event in events:
        typer.echo(
            f"{event.position}\t{event.tracking_name}\t{event.event_type}\t"
            f"{event.execution_id or '-'}\ttries {event.tries}\t"
            f"first seen {event.first_seen.isoformat(timespec='seconds')}\t{event.error}"
        )
    typer.echo(
        f"{len(events)} parked; once the cause is fixed: "
        "agent-ledger projections parked --retry POSITION",
        err=True,
    )


def _retry(position: int, results: dict[str, str | None]) -> None:
    if not results:
        typer.echo(f"no projection has parked the event at position {position}")
        return
    for name, failure in sorted(results.items()):
        typer.echo(f"{name}: " + ("applied" if failure is None else f"failed again: {failure}"))
    if any(failure is not None for failure in results.values()):
        raise typer.Exit(1)
