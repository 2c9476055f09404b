"""Tools of model agents: the built-in ones, and HTTP tools that admins register."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from agent_ledger.application.chat_models import ToolSpec
from agent_ledger.application.tool_box import DEFAULT_TOOL_TIMEOUT, check_parameters
from agent_ledger.domain.process_validation import TOOL_NAME_PATTERN
from agent_ledger.infrastructure.agents.http_tools import HttpTool
from agent_ledger.infrastructure.api.dependencies import BuiltinToolsDep, CallerDep, HttpToolsDep
from agent_ledger.infrastructure.api.errors import ProblemError
from agent_ledger.infrastructure.api.problem_responses import AUTHENTICATED, problems
from agent_ledger.infrastructure.auth.tokens import Caller

router = APIRouter(prefix="/v1/tools", tags=["tools"], responses=AUTHENTICATED)

MAX_TIMEOUT_SECONDS = 300.0
ToolName = Annotated[
    str,
    Path(
        pattern=f"^{TOOL_NAME_PATTERN.pattern}$",
        description="letters, digits, `_` and `-`, starting with a letter; 64 at most",
    ),
]


def _problem(status: int, description: str) -> dict[int | str, dict[str, Any]]:
    """The problem `status` documented with what it means for these routes."""
    return {status: {**problems(status)[status], "description": description}}


NOT_FOUND = _problem(404, "No tool of this name (`not-found`)")
BUILTIN = _problem(409, "A built-in tool has this name: it cannot be registered or removed")


class ToolRegistration(BaseModel):
    """An HTTP tool: the model sees its description and parameters; calls go to its URL."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=1,
        max_length=2048,
        description="http(s) URL the calls are POSTed to; the egress rule of HTTP agents "
        "applies (AGENT_LEDGER_AGENT_URL_ALLOW); credentials in it are sent as basic auth",
        examples=["https://tools.example.com/weather"],
    )
    description: str = Field(
        min_length=1, max_length=1024, description="what the tool does, for the model"
    )
    parameters: dict[str, Any] = Field(
        description='a JSON schema of `"type": "object"`: the arguments the model may pass',
        examples=[{"type": "object", "properties": {"city": {"type": "string"}}}],
    )
    timeout_seconds: float = Field(
        default=DEFAULT_TOOL_TIMEOUT,
        gt=0,
        le=MAX_TIMEOUT_SECONDS,
        description="how long a call may take; a late one fails and the model is told",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - parsing it raises ValueError when it is out of range
        except ValueError:
            raise ValueError("not a valid URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return url

    @field_validator("parameters")
    @classmethod
    def _json_schema(cls, parameters: dict[str, Any]) -> dict[str, Any]:
        check_parameters(parameters)  # its InvalidParametersError is a ValueError
        return parameters


class ToolView(BaseModel):
    """A tool as model agents may name it in `agent.llm.tools`."""

    name: str
    kind: Literal["builtin", "http"]
    description: str
    parameters: dict[str, Any] = Field(description="JSON schema of the arguments")
    timeout_seconds: float
    # HTTP tools, shown to admins only; absent otherwise, never null
    url: str | SkipJsonSchema[None] = Field(
        default=None, description="admins, HTTP tools: the URL, without credentials"
    )
    updated_by: str | SkipJsonSchema[None] = Field(
        default=None, description="admins, HTTP tools: who registered or changed it last"
    )
    updated_at: datetime | SkipJsonSchema[None] = Field(
        default=None, description="admins, HTTP tools"
    )
    created_at: datetime | SkipJsonSchema[None] = Field(
        default=None, description="admins, HTTP tools"
    )

    @classmethod
    def builtin(cls, spec: ToolSpec) -> ToolView:
        return cls(
            name=spec.name,
            kind="builtin",
            description=spec.description,
            parameters=dict(spec.parameters),
            timeout_seconds=spec.timeout_seconds,
        )

    @classmethod
    def http(cls, tool: HttpTool, caller: Caller) -> ToolView:
        view = cls(
            name=tool.name,
            kind="http",
            description=tool.description,
            parameters=tool.parameters,
            timeout_seconds=tool.timeout_seconds,
        )
        if caller.is_admin:
            view.url, view.updated_by = tool.shown_url, tool.updated_by
            view.updated_at, view.created_at = tool.updated_at, tool.created_at
        return view


@router.put(
    "/{name}",
    response_model=ToolView,
    response_model_exclude_none=True,
    responses={
        201: {"model": ToolView, "description": "The tool was registered"},
        **problems(400, 403, 413),
        **BUILTIN,
    },
)
def register_tool(
    name: ToolName,
    body: ToolRegistration,
    caller: CallerDep,
    builtins: BuiltinToolsDep,
    tools: HttpToolsDep,
    response: Response,
) -> ToolView:
    """Register an HTTP tool (201), or change it (200); admins only."""
    _admin_only(caller, "only admins register tools")
    _not_builtin(builtins.builtin_spec(name), "registered")
    refused = tools.url_problem(body.url)
    if refused is not None:
        raise ProblemError(422, "tool-url-refused", "Tool URL refused", refused)
    tool, created = tools.put(name, **body.model_dump(), by=caller.user_id)
    response.status_code = 201 if created else 200
    return ToolView.http(tool, caller)


@router.get("", response_model=list[ToolView], response_model_exclude_none=True)
def list_tools(caller: CallerDep, builtins: BuiltinToolsDep, tools: HttpToolsDep) -> list[ToolView]:
    """Every tool a model agent may use: the built-in ones, then the HTTP ones, by name."""
    names = builtins.registry.tool_names
    views = [ToolView.builtin(s) for s in map(builtins.builtin_spec, names) if s is not None]
    shadowed = set(names)  # a built-in tool wins over an HTTP tool of its name
    return views + [ToolView.http(t, caller) for t in tools.registered() if t.name not in shadowed]


@router.get(
    "/{name}", response_model=ToolView, response_model_exclude_none=True, responses=NOT_FOUND
)
def get_tool(
    name: ToolName, caller: CallerDep, builtins: BuiltinToolsDep, tools: HttpToolsDep
) -> ToolView:
    """One tool, built-in or HTTP."""
    spec = builtins.builtin_spec(name)
    if spec is not None:
        return ToolView.builtin(spec)
    tool = tools.get(name)
    if tool is None:
        raise _not_found(name)
    return ToolView.http(tool, caller)


@router.delete(
    "/{name}",
    status_code=204,
    response_class=Response,
    responses={**problems(403), **NOT_FOUND, **BUILTIN},
)
def delete_tool(
    name: ToolName, caller: CallerDep, builtins: BuiltinToolsDep, tools: HttpToolsDep
) -> None:
    """Remove an HTTP tool; admins only. Steps naming it fail from then on."""
    _admin_only(caller, "only admins remove tools")
    _not_builtin(builtins.builtin_spec(name), "removed")
    if not tools.delete(name):
        raise _not_found(name)


def _admin_only(caller: Caller, message: str) -> None:
    if not caller.is_admin:
        raise ProblemError(403, "forbidden", "Not allowed", message)


def _not_builtin(spec: ToolSpec | None, what: str) -> None:
    if spec is not None:
        detail = f"{spec.name!r} is a built-in tool; it cannot be {what}"
        raise ProblemError(409, "conflict", "A built-in tool has this name", detail)


def _not_found(name: str) -> ProblemError:
    return ProblemError(404, "not-found", "Tool not found", f"no tool is named {name!r}")
