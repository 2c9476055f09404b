"""Tools a model agent may call: the built-in ones and those registered over HTTP.

A built-in tool's parameters are derived from its Python signature (JSON schema), its
description from its docstring; an HTTP tool comes with both from its registration.
Each call has a time limit (`timeout_seconds`, 30 by default), and the model's arguments
are checked against the tool's parameters before it runs.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import jsonschema

from agent_ledger.application.agents import (
    JSON,
    AgentRegistry,
    AgentRun,
    Tool,
    ToolError,
    UnknownToolError,
)
from agent_ledger.application.chat_models import ToolSpec

DEFAULT_TOOL_TIMEOUT = 30.0
SCHEMA_DRAFTS: dict[str, Any] = {
    (draft.META_SCHEMA.get("$id") or draft.META_SCHEMA["id"]).rstrip("#"): draft
    for draft in (
        jsonschema.validators.Draft202012Validator,
        jsonschema.validators.Draft201909Validator,
        jsonschema.validators.Draft7Validator,
        jsonschema.validators.Draft6Validator,
        jsonschema.validators.Draft4Validator,
    )
}
"""The JSON-schema drafts a tool's `$schema` may name (2020-12 when it names none)."""

_JSON_TYPES: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    dict: "object",
    list: "array",
    type(None): "null",
}


class HttpTools(Protocol):
    """Tools registered by admins that live behind a URL (an adapter in infrastructure)."""

    async def spec(self, name: str) -> ToolSpec | None:
        """The registered tool of that name, or None."""

    async def call(self, name: str, args: Mapping[str, JSON], run: AgentRun) -> JSON:
        """Call it; raises `ToolError` when it fails (its timeout is the caller's)."""


class InvalidParametersError(ValueError):
    """A tool's parameters are not a usable JSON schema of an object."""


class InvalidArgumentsError(ToolError):
    """The model called a tool with arguments its parameters do not allow (not retryable)."""

    def __init__(self, tool: str, problem: str):
        super().__init__(
            f"the arguments do not fit the parameters of the tool {tool!r}: {problem}",
            retryable=False,
        )
        self.error_type = "InvalidToolArguments"


class ToolTimeoutError(ToolError):
    """A tool call ran longer than its tool's `timeout_seconds`."""

    def __init__(self, tool: str, seconds: float):
        super().__init__(f"the tool {tool!r} did not answer within {seconds:g}s")
        self.error_type = "ToolTimeout"


def parameters_of(function: Tool) -> dict[str, JSON]:
    """The JSON schema of a function's keyword arguments, from its signature and hints."""
    signature = inspect.signature(function)
    hints = typing.get_type_hints(function)
    properties: dict[str, JSON] = {}
    required: list[str] = []
    for name, parameter in signature.parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        properties[name] = _schema_of(hints.get(name, Any))
        if parameter.default is inspect.Parameter.empty:
            required.append(name)
        elif parameter.default is not None:
            properties[name]["default"] = parameter.default
    schema: dict[str, JSON] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    return schema


def _schema_of(hint: Any) -> dict[str, JSON]:
    if hint in _JSON_TYPES:
        return {"type": _JSON_TYPES[hint]}
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        names = [_JSON_TYPES.get(arg) for arg in typing.get_args(hint)]
        if all(names):
            return {"type": names}
    if origin in _JSON_TYPES:
        return {"type": _JSON_TYPES[origin]}
    return {}  # any JSON value


def check_parameters(schema: Mapping[str, JSON]) -> None:
    """Refuse (`InvalidParametersError`) what is not a JSON schema of an object: one of the
    drafts in `SCHEMA_DRAFTS`, `"type": "object"`, and only `$ref`s inside itself (`#...`),
    since nothing is fetched to check arguments."""
    if schema.get("type") != "object":
        raise InvalidParametersError('the parameters must be a JSON schema with "type": "object"')
    remote = _remote_ref(schema)
    if remote is not None:
        raise InvalidParametersError(
            f"the parameters may only refer to their own parts ($ref: '#...'), not {remote!r}"
        )
    validator = _validator_class(schema)
    try:
        validator.check_schema(schema)
    except jsonschema.exceptions.SchemaError as error:
        where = error.json_path.replace("$", "parameters", 1)
        raise InvalidParametersError(f"{where}: {error.message}") from None


def argument_problem(schema: Mapping[str, JSON], args: Mapping[str, JSON]) -> str | None:
    """What is wrong with `args` under the parameters `schema` (the most telling problem,
    with where it is), or None when they fit."""
    try:
        error = jsonschema.exceptions.best_match(_validator(schema).iter_errors(args))
    except Exception as error:  # a schema no check let through: the tool cannot be called
        return f"its parameters cannot be checked ({type(error).__name__}: {error})"
    if error is None:
        return None
    where = "" if error.json_path == "$" else f"at {error.json_path.replace('$', 'arguments', 1)}: "
    return f"{where}{error.message}"


def _validator(schema: Mapping[str, JSON]) -> Any:
    key = json.dumps(schema, sort_keys=True)
    found = _VALIDATORS.get(key)
    if found is None:
        found = _validator_class(schema)(schema)
        if len(_VALIDATORS) > 1024:
            _VALIDATORS.clear()
        _VALIDATORS[key] = found
    return found


_VALIDATORS: dict[str, Any] = {}
"""Validators by their schema's JSON text: a tool's schema is compiled once."""


def _validator_class(schema: Mapping[str, JSON]) -> Any:
    named = schema.get("$schema")
    if named is None:
        return jsonschema.validators.Draft202012Validator
    found = SCHEMA_DRAFTS.get(named.rstrip("#")) if isinstance(named, str) else None
    if found is None:
        raise InvalidParametersError(
            f"$schema names {named!r}; known drafts: {', '.join(sorted(SCHEMA_DRAFTS))}"
        )
    return found


def _remote_ref(value: JSON) -> str | None:
    """The first `$ref` in a schema that points outside it, or None."""
    if isinstance(value, dict):
        ref = value.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            return ref
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            found = _remote_ref(item)
            if found is not None:
                return found
    return None


def describe(function: Tool) -> str:
    """A tool's description: the first paragraph of its docstring, on one line."""
    doc = inspect.getdoc(function) or ""
    return " ".join(doc.split("\n\n", 1)[0].split())


class ToolBox:
    """Finds a model agent's tools by name and calls them within their time limits."""

    def __init__(
        self,
        registry: AgentRegistry,
        http_tools: HttpTools | None = None,
        default_timeout: float = DEFAULT_TOOL_TIMEOUT,
    ):
        self.registry = registry
        self.http_tools = http_tools
        self.default_timeout = default_timeout
        self._builtin: dict[str, ToolSpec] = {}

    async def aclose(self) -> None:
        """Close the connections the HTTP tools keep open."""
        closing = getattr(self.http_tools, "aclose", None)
        if closing is not None:
            await closing()

    def builtin_spec(self, name: str) -> ToolSpec | None:
        """The spec of a built-in tool (derived once), or None."""
        if name not in self._builtin:
            if not self.registry.has_tool(name):
                return None
            function = self.registry.tool(name)
            self._builtin[name] = ToolSpec(
                name, describe(function), parameters_of(function), self.default_timeout
            )
        return self._builtin[name]

    async def specs(self, names: Sequence[str]) -> list[ToolSpec]:
        """The specs of `names`, in order; an unknown name is a non-retryable failure."""
        found = []
        for name in names:
            spec = self.builtin_spec(name)
            if spec is None and self.http_tools is not None:
                spec = await self.http_tools.spec(name)
            if spec is None:
                raise UnknownToolError(name)
            found.append(spec)
        return found

    async def call(self, spec: ToolSpec, args: Mapping[str, JSON], run: AgentRun) -> JSON:
        """Call a tool with keyword arguments; its result is JSON, or `ToolError` is raised.

        Arguments that do not fit the tool's parameters are refused before it runs
        (`InvalidArgumentsError`, not retryable).
        """
        problem = argument_problem(spec.parameters, args)
        if problem is not None:
            raise InvalidArgumentsError(spec.name, problem)
        if self.builtin_spec(spec.name) is not None:
            function = self.registry.tool(spec.name)
            call = asyncio.to_thread(function, **args)
        elif self.http_tools is not None:
            call = self.http_tools.call(spec.name, args, run)
        else:
            raise UnknownToolError(spec.name)
        try:
            result = await asyncio.wait_for(call, spec.timeout_seconds)
        except TimeoutError:
            raise ToolTimeoutError(spec.name, spec.timeout_seconds) from None
        except ToolError:
            raise
        except Exception as error:
            raise ToolError(f"{type(error).__name__}: {error}") from error
        try:
            json.dumps(result, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ToolError(f"the tool {spec.name!r} returned a value that is not JSON") from error
        return result
