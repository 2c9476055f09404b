"""`agent-ledger token`: print a bearer token signed with the configured secret."""

from __future__ import annotations

from typing import Annotated

import typer

from agent_ledger.infrastructure.auth.tokens import issue_token
from agent_ledger.infrastructure.settings import Settings


def token(
    sub: Annotated[str, typer.Option(help="the user id (JWT subject)")],
    roles: Annotated[str, typer.Option(help="comma-separated: user,auditor,admin")] = "user",
    ttl: Annotated[int, typer.Option(help="lifetime in seconds")] = 3600,
) -> None:
    """Print a bearer token signed with the configured secret."""
    settings = Settings()
    try:
        chosen = [r.strip() for r in roles.split(",") if r.strip()]
        typer.echo(issue_token(settings.resolved_jwt_secret(), sub, chosen, ttl))
    except (ValueError, RuntimeError) as error:
        raise typer.BadParameter(str(error)) from None
