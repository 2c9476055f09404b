"""A model's tool arguments are checked against the tool's JSON schema before it runs, and
an HTTP tool's parameters must be a usable JSON schema of an object to be registered."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Any

import pytest

from agent_ledger.application.agents import JSON, AgentRegistry, AgentRun
from agent_ledger.application.chat_models import ToolSpec
from agent_ledger.application.tool_box import (
    InvalidArgumentsError,
    InvalidParametersError,
    ToolBox,
    argument_problem,
    check_parameters,
)

RUN = AgentRun(user_id="ada", execution_id=uuid.uuid4(), step_id="ask", attempt=1)
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "where": {
            "type": "object",
            "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
        },
    },
    "required": ["city"],
    "additionalProperties": False,
}


class InMemoryHttpTools:
    """The `HttpTools` port over a dict; it records the calls that reached it."""

    def __init__(self, *specs: ToolSpec):
        self.specs = {spec.name: spec for spec in specs}
        self.calls: list[tuple[str, Mapping[str, JSON]]] = []

    async def spec(self, name: str) -> ToolSpec | None:
        return self.specs.get(name)

    async def call(self, name: str, args: Mapping[str, JSON], run: AgentRun) -> JSON:
        self.calls.append((name, args))
        return {"forecast": "sunny", "args": dict(args)}


calls: list[tuple[str, int]] = []


def forecast_days(city: str, days: int = 3) -> JSON:
    """Forecast the weather of a city."""
    calls.append((city, days))
    return {"city": city, "days": days}


def builtin_box() -> ToolBox:
    registry = AgentRegistry()
    registry.register_tool("forecast_days", forecast_days)
    return ToolBox(registry)


def call(box: ToolBox, name: str, args: dict[str, Any]) -> JSON:
    async def run() -> JSON:
        (spec,) = await box.specs([name])
        return await box.call(spec, args, RUN)

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ({"city": "Oslo", "days": "three"}, "at arguments.days: 'three' is not of type 'integer'"),
        ({"days": 2}, "'city' is a required property"),
        ({"city": "Oslo", "hours": 5}, "'hours' was unexpected"),
        ({"city": "Oslo", "days": True}, "True is not of type 'integer'"),
    ],
)
def test_a_builtin_tool_is_not_run_with_arguments_its_signature_does_not_allow(
    args: dict[str, Any], named: str
) -> None:
    calls.clear()

    with pytest.raises(InvalidArgumentsError) as refused:
        call(builtin_box(), "forecast_days", args)

    assert named in str(refused.value)
    assert "forecast_days" in str(refused.value)
    assert refused.value.retryable is False
    assert calls == []


def test_a_builtin_tool_runs_with_arguments_that_fit() -> None:
    calls.clear()

    assert call(builtin_box(), "forecast_days", {"city": "Oslo"}) == {"city": "Oslo", "days": 3}
    assert calls == [("Oslo", 3)]


def test_an_http_tool_is_not_called_with_arguments_its_schema_does_not_allow() -> None:
    http = InMemoryHttpTools(ToolSpec("weather", "The weather.", WEATHER, 5.0))
    box = ToolBox(AgentRegistry(), http)

    with pytest.raises(InvalidArgumentsError) as refused:
        call(box, "weather", {"city": "Oslo", "where": {"lat": "north"}})
    answered = call(box, "weather", {"city": "Oslo", "days": 2})

    assert "at arguments.where.lat: 'north' is not of type 'number'" in str(refused.value)
    assert http.calls == [("weather", {"city": "Oslo", "days": 2})]
    assert answered == {"forecast": "sunny", "args": {"city": "Oslo", "days": 2}}


def test_a_schema_that_cannot_be_used_fails_the_call_and_says_so() -> None:
    broken = {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}

    problem = argument_problem(broken, {"a": 1})

    assert problem is not None
    assert "cannot be checked" in problem


@pytest.mark.parametrize(
    "schema",
    [
        WEATHER,
        {"type": "object"},
        {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"},
        {
            "type": "object",
            "properties": {"at": {"$ref": "#/$defs/point"}},
            "$defs": {"point": {"type": "array", "items": {"type": "number"}}},
        },
    ],
)
def test_a_json_schema_of_an_object_is_usable_parameters(schema: dict[str, Any]) -> None:
    check_parameters(schema)


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"type": "array"}, '"type": "object"'),
        ({"properties": {}}, '"type": "object"'),
        ({"type": "object", "properties": {"a": {"type": "text"}}}, "parameters.properties.a"),
        ({"type": "object", "properties": {"a": {"pattern": "("}}}, "is not a 'regex'"),
        ({"type": "object", "required": "city"}, "parameters.required"),
        (
            {"type": "object", "properties": {"a": {"$ref": "https://schemas.example/a.json"}}},
            "'https://schemas.example/a.json'",
        ),
        ({"$schema": "https://schemas.example/mine", "type": "object"}, "known drafts"),
    ],
)
def test_parameters_that_are_not_a_usable_schema_of_an_object_are_refused_naming_why(
    schema: dict[str, Any], named: str
) -> None:
    with pytest.raises(InvalidParametersError) as refused:
        check_parameters(schema)

    assert named in str(refused.value)
