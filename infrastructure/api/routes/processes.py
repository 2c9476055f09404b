"""Process definitions: register (admins), list and show."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response

from agent_ledger.application.processes import RegisteredProcess
from agent_ledger.infrastructure.api.bounds import INT32_MAX
from agent_ledger.infrastructure.api.dependencies import CallerDep, CatalogDep
from agent_ledger.infrastructure.api.errors import ProblemError
from agent_ledger.infrastructure.api.problem_responses import AUTHENTICATED, problems
from agent_ledger.infrastructure.api.schemas import ProcessView

router = APIRouter(prefix="/v1/processes", tags=["processes"], responses=AUTHENTICATED)

EXAMPLE = {
    "config": {"parallel_execution": True, "stop_on_failure": True},
    "steps": [
        {"id": "ask", "type": "agent_task", "agent": "echo", "input": {"q": "{{ input.q }}"}},
        {
            "id": "remote",
            "type": "agent_task",
            "agent": {"url": "http://agents.internal/triage"},
            "depends_on": ["ask"],
            "retry": {"max_attempts": 3, "initial_interval": 0.5},
        },
    ],
    "output": "{{ steps.remote.output }}",
}


@router.put(
    "/{name}",
    response_model=ProcessView,
    responses={
        201: {"model": ProcessView, "description": "A new version was registered"},
        **problems(400, 403, 413),
    },
)
def register_process(
    name: str,
    caller: CallerDep,
    catalog: CatalogDep,
    response: Response,
    document: Annotated[dict[str, Any], Body(openapi_examples={"two steps": {"value": EXAMPLE}})],
) -> ProcessView:
    """Register a definition; a changed one becomes a new version (201), the same one is kept."""
    if not caller.is_admin:
        raise ProblemError(403, "forbidden", "Not allowed", "only admins register processes")
    if document.get("name", name) != name:
        raise ProblemError(
            422,
            "invalid-process",
            "Invalid process definition",
            f"the body names {document.get('name')!r} but the path names {name!r}",
        )
    registered, created = catalog.register({**document, "name": name})
    response.status_code = 201 if created else 200
    return _view(registered)


@router.get("", response_model=list[ProcessView])
def list_processes(_: CallerDep, catalog: CatalogDep) -> list[ProcessView]:
    """The latest version of every registered process."""
    return [_view(p) for p in catalog.list_latest()]


@router.get("/{name}", response_model=ProcessView)
def get_process(
    name: str,
    _: CallerDep,
    catalog: CatalogDep,
    version: Annotated[int | None, Query(ge=1, le=INT32_MAX)] = None,
) -> ProcessView:
    """One process: its latest version, or the one asked for."""
    return _view(catalog.get(name, version))


def _view(process: RegisteredProcess) -> ProcessView:
    return ProcessView(
        name=process.name,
        version=process.version,
        content_hash=process.content_hash,
        definition=process.document,
    )
