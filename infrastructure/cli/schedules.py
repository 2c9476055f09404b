"""`agent-ledger schedules apply FILE --sub USER`, `agent-ledger schedules list [--sub USER]`:
define schedules straight into the store, as the API would for that user, and list them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agent_ledger.infrastructure.settings import Settings

if TYPE_CHECKING:
    from agent_ledger.application.schedules import ScheduleBook

schedules_app = typer.Typer(help="Schedules: processes started on a cron.", no_args_is_help=True)

Sub = Annotated[str, typer.Option(help="the user the schedules belong to (JWT subject)")]


@schedules_app.command("apply")
def apply_schedules(
    file: Annotated[Path, typer.Argument(help="YAML or JSON: one schedule or a list", exists=True)],
    sub: Sub,
) -> None:
    """Define or change schedules from a file: each has a `name` and the fields of
    `PUT /v1/schedules/{name}` (process, version, input, cron, timezone, paused, overlap)."""
    try:
        for line in apply_file(Settings(), file, sub):
            typer.echo(line)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="FILE") from None


@schedules_app.command("list")
def list_schedules(
    sub: Annotated[str | None, typer.Option(help="only this user's (default: everyone's)")] = None,
) -> None:
    """List schedules with their next fire time."""
    with _book(Settings()) as book:
        rows = book.list_schedules(sub)
    if not rows:
        typer.echo("no schedules")
        return
    now = datetime.now(UTC)
    table = [("USER", "NAME", "PROCESS", "CRON", "TIMEZONE", "OVERLAP", "NEXT")]
    for row in rows:
        definition = row.definition
        upcoming = row.cron().upcoming(max(now, row.reference), 1)
        following = "paused" if definition.paused else upcoming[0].isoformat() if upcoming else "-"
        process = definition.process + (f"@{definition.version}" if definition.version else "")
        table.append(
            (
                row.user_id,
                row.name,
                process,
                definition.cron,
                definition.timezone,
                definition.overlap.value,
                following,
            )
        )
    widths = [max(len(cells[i]) for cells in table) for i in range(len(table[0]))]
    for cells in table:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())


def apply_file(settings: Settings, path: Path, user_id: str) -> list[str]:
    """Check every schedule in the file as the API does, then define each for `user_id`;
    a line per schedule saying what changed."""
    import pydantic

    from agent_ledger.application.schedules import InvalidScheduleError
    from agent_ledger.infrastructure.api.routes.schedules import ScheduleBody

    entries = _entries(path)
    bodies = []
    for index, entry in enumerate(entries):
        name = entry.pop("name", None)
        where = f"schedule {name!r}" if isinstance(name, str) else f"entry {index + 1}"
        if not isinstance(name, str) or not _valid_name(name):
            raise ValueError(f"{where}: name must be letters, digits, _ . -, from a letter")
        try:
            bodies.append((name, ScheduleBody.model_validate(entry)))
        except pydantic.ValidationError as error:
            first = error.errors()[0]
            problem = f"{'.'.join(map(str, first['loc'])) or 'schedule'}: {first['msg']}"
            raise ValueError(f"{where}: {problem}") from None
    lines = []
    with _book(settings) as book:
        for name, body in bodies:  # all checked before any is written
            try:
                book.check(body.definition())
            except InvalidScheduleError as error:
                raise ValueError(f"schedule {name!r}: {error}") from None
        for name, body in bodies:
            put = book.put_schedule(user_id, name, body.definition(), by=f"cli:{user_id}")
            state = "defined" if put.created else "changed" if put.changed else "unchanged"
            lines.append(f"{name} {state} for {user_id}")
    return lines


def _entries(path: Path) -> list[dict[str, Any]]:
    import json

    import yaml  # imported here: every other command starts without it

    from agent_ledger.application.storable_text import UnstorableTextError, check_storable

    text = path.read_text()
    try:
        document = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as error:
        kind = path.suffix.lstrip(".") or "JSON"
        raise ValueError(f"{path} is not valid {kind}: {error}") from None
    entries = document if isinstance(document, list) else [document]
    if not entries or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"{path} must hold one schedule (a mapping) or a list of them")
    try:
        check_storable(entries, "schedules")
    except UnstorableTextError as error:
        raise ValueError(f"{path}: {error}") from None
    return [dict(e) for e in entries]


def _valid_name(name: str) -> bool:
    from agent_ledger.domain.schedules import SCHEDULE_NAME_PATTERN

    return SCHEDULE_NAME_PATTERN.fullmatch(name) is not None


@contextmanager
def _book(settings: Settings) -> Iterator[ScheduleBook]:
    # imported here: every other command starts without the runtime's modules
    from agent_ledger.application.schedules import ScheduleBook
    from agent_ledger.infrastructure.catalog.sql import SqlProcessCatalog
    from agent_ledger.infrastructure.read_models.schedules import SqlScheduleIndex
    from agent_ledger.infrastructure.schema import initialize_schema
    from agent_ledger.infrastructure.store.persistence import read_model_engine
    from agent_ledger.infrastructure.store.schedule_store import open_schedules

    initialize_schema(settings)
    engine = read_model_engine(settings)
    schedules = open_schedules(settings)
    try:
        catalog = SqlProcessCatalog(engine)
        yield ScheduleBook(
            schedules, SqlScheduleIndex(engine), catalog, max_input_bytes=settings.max_input_bytes
        )
    finally:
        schedules.close()
        engine.dispose()
