"""Process definitions: a named DAG of agent tasks, gateways and timers."""

from __future__ import annotations

import hashlib
import heapq
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any

from agent_ledger.domain.errors import InvalidProcessDefinitionError
from agent_ledger.domain.process_validation import validate_document, without_credentials


class StepType(StrEnum):
    """What a step does: call an agent, choose a branch, or wait."""

    AGENT_TASK = "agent_task"
    GATEWAY = "gateway"
    TIMER = "timer"
    WAIT_FOR_SIGNAL = "wait_for_signal"


class OnError(StrEnum):
    """What a step's final failure does to the execution."""

    FAIL = "fail"
    SKIP_STEP = "skip_step"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failed step is tried again."""

    max_attempts: int = 1
    initial_interval: float = 1.0
    backoff_coefficient: float = 2.0
    max_interval: float = 60.0
    non_retryable_errors: tuple[str, ...] = ()

    def delay_after(self, attempt: int) -> float:
        """Return the seconds to wait after attempt `attempt` (1-based) before the next one."""
        try:
            delay = self.initial_interval * self.backoff_coefficient ** max(attempt - 1, 0)
        except OverflowError:
            return self.max_interval
        return min(delay, self.max_interval)

    def allows_another_attempt(self, attempt: int, error_type: str) -> bool:
        """Tell whether attempt `attempt`, failed with `error_type`, may be followed by another."""
        return attempt < self.max_attempts and error_type not in self.non_retryable_errors

    def to_document(self) -> dict[str, Any]:
        """Return the canonical document of this policy."""
        return {
            "max_attempts": self.max_attempts,
            "initial_interval": self.initial_interval,
            "backoff_coefficient": self.backoff_coefficient,
            "max_interval": self.max_interval,
            "non_retryable_errors": list(self.non_retryable_errors),
        }


@dataclass(frozen=True)
class Route:
    """One way out of a gateway: taken when `when` holds, or as the default."""

    next: tuple[str, ...]
    when: str | None = None
    default: bool = False


@dataclass(frozen=True)
class HttpAgent:
    """An agent reached over HTTP at `url` rather than registered by name."""

    url: str

    @property
    def shown_url(self) -> str:
        """The URL as messages and events show it: credentials, if any, left out."""
        return without_credentials(self.url)


@dataclass(frozen=True)
class LlmAgent:
    """An agent that is a language model behind an OpenAI-compatible API, with tools."""

    model: str
    provider: str | None = None
    system: str | None = None
    prompt: str | None = None
    tools: tuple[str, ...] = ()
    max_turns: int = 8
    temperature: float | None = None
    max_tokens: int | None = None
    response_format: str = "text"

    @property
    def shown_name(self) -> str:
        """How events and metrics name this agent: `llm:<model>` (`llm:<provider>/<model>`)."""
        return f"llm:{self.provider}/{self.model}" if self.provider else f"llm:{self.model}"

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> LlmAgent:
        """Build from a validated `agent.llm` document."""
        temperature = _get(doc, "temperature")
        return cls(
            model=doc["model"],
            provider=_get(doc, "provider"),
            system=_get(doc, "system"),
            prompt=_get(doc, "prompt"),
            tools=tuple(_get(doc, "tools", ())),
            max_turns=_get(doc, "max_turns", 8),
            temperature=None if temperature is None else float(temperature),
            max_tokens=_get(doc, "max_tokens"),
            response_format=_get(doc, "response_format", "text"),
        )

    def to_document(self) -> dict[str, Any]:
        """The canonical `agent.llm` document: defaults explicit, absent values left out."""
        document: dict[str, Any] = {
            "model": self.model,
            "tools": list(self.tools),
            "max_turns": self.max_turns,
            "response_format": self.response_format,
        }
        optional = {
            "provider": self.provider,
            "system": self.system,
            "prompt": self.prompt,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        document.update({key: value for key, value in optional.items() if value is not None})
        return document


Agent = str | HttpAgent | LlmAgent
"""A step's agent: a built-in's name, a URL, or a model."""


def agent_name(agent: Agent | None) -> str:
    """How events and metrics name a step's agent (credentials in a URL left out)."""
    if isinstance(agent, HttpAgent):
        return agent.shown_url
    if isinstance(agent, LlmAgent):
        return agent.shown_name
    return str(agent)


@dataclass(frozen=True)
class StepDefinition:
    """One node of a process: its kind, what it needs and how it fails."""

    id: str
    type: StepType
    agent: Agent | None = None
    input: Any = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    timeout_seconds: float | None = None
    retry: RetryPolicy = RetryPolicy()
    on_error: OnError = OnError.FAIL
    routes: tuple[Route, ...] = ()
    seconds: float | None = None
    signal: str | None = None
    allowed_roles: tuple[str, ...] = ("user", "admin")
    schema: dict[str, Any] | None = None

    def to_document(self) -> dict[str, Any]:
        """Return the canonical document of this step: the keys its type accepts."""
        document: dict[str, Any] = {"id": self.id, "type": self.type.value}
        if self.depends_on:
            document["depends_on"] = list(self.depends_on)
        if self.type is StepType.WAIT_FOR_SIGNAL:
            document["signal"] = self.signal
            document["allowed_roles"] = list(self.allowed_roles)
            document["retry"] = self.retry.to_document()
            if self.timeout_seconds is not None:
                document["timeout_seconds"] = self.timeout_seconds
            if self.schema is not None:
                document["schema"] = _json(self.schema)
        if self.type is StepType.AGENT_TASK:
            agent = self.agent
            document["agent"] = _agent_document(agent)
            document["input"] = _json(self.input)
            document["retry"] = self.retry.to_document()
            if self.timeout_seconds is not None:
                document["timeout_seconds"] = self.timeout_seconds
        if self.type is not StepType.TIMER:
            document["on_error"] = self.on_error.value
        if self.type is StepType.GATEWAY:
            document["routes"] = [_route_document(route) for route in self.routes]
        if self.type is StepType.TIMER:
            document["seconds"] = self.seconds
        return document


@dataclass(frozen=True)
class ProcessConfig:
    """Execution-wide settings of a process."""

    parallel_execution: bool = True
    stop_on_failure: bool = True
    timeout_seconds: float | None = None


@dataclass(frozen=True)
class ProcessDefinition:
    """A validated process: build it with `from_document`, which checks every rule."""

    name: str
    steps: tuple[StepDefinition, ...]
    config: ProcessConfig = ProcessConfig()
    output: Any | None = None
    description: str = ""

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> ProcessDefinition:
        """Parse and validate a definition document (JSON or YAML, already loaded)."""
        validate_document(doc)
        config = _get(doc, "config", {})
        return cls(
            name=doc["name"],
            description=_get(doc, "description", ""),
            config=ProcessConfig(
                parallel_execution=_get(config, "parallel_execution", True),
                stop_on_failure=_get(config, "stop_on_failure", True),
                timeout_seconds=_seconds(_get(config, "timeout_seconds")),
            ),
            steps=tuple(_step(step) for step in doc["steps"]),
            output=_json(doc.get("output")),
        )

    def to_document(self) -> dict[str, Any]:
        """Return the canonical document: every default explicit, absent values left out."""
        config: dict[str, Any] = {
            "parallel_execution": self.config.parallel_execution,
            "stop_on_failure": self.config.stop_on_failure,
        }
        if self.config.timeout_seconds is not None:
            config["timeout_seconds"] = self.config.timeout_seconds
        document: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "config": config,
            "steps": [step.to_document() for step in self.steps],
        }
        if self.output is not None:
            document["output"] = _json(self.output)
        return document

    def content_hash(self) -> str:
        """Return the sha256 (hex) of the canonical JSON of this definition."""
        canonical = json.dumps(
            self.to_document(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def step(self, step_id: str) -> StepDefinition:
        """Return the step called `step_id`."""
        try:
            return self._steps_by_id[step_id]
        except KeyError:
            raise InvalidProcessDefinitionError(
                f"process {self.name!r} has no such step", step_id
            ) from None

    def dependencies(self, step_id: str) -> tuple[str, ...]:
        """Return what `step_id` waits for: its `depends_on` and the gateways routing to it."""
        self.step(step_id)
        return self._dependencies[step_id]

    def topological_order(self) -> tuple[str, ...]:
        """Return the step ids in dependency order, declaration order breaking ties."""
        return self._topological_order

    @cached_property
    def _steps_by_id(self) -> dict[str, StepDefinition]:
        return {step.id: step for step in self.steps}

    @cached_property
    def _dependencies(self) -> dict[str, tuple[str, ...]]:
        dependencies = {step.id: list(step.depends_on) for step in self.steps}
        for gateway in self.steps:
            for route in gateway.routes:
                for target in route.next:
                    if gateway.id not in dependencies[target]:
                        dependencies[target].append(gateway.id)
        return {step_id: tuple(ids) for step_id, ids in dependencies.items()}

    @cached_property
    def _topological_order(self) -> tuple[str, ...]:
        position = {step.id: index for index, step in enumerate(self.steps)}
        waiting = {step_id: len(ids) for step_id, ids in self._dependencies.items()}
        dependents: dict[str, list[str]] = {step.id: [] for step in self.steps}
        for step_id, ids in self._dependencies.items():
            for dependency in ids:
                dependents[dependency].append(step_id)
        ready = [position[step_id] for step_id, count in waiting.items() if count == 0]
        heapq.heapify(ready)
        order: list[str] = []
        while ready:
            step_id = self.steps[heapq.heappop(ready)].id
            order.append(step_id)
            for dependent in dependents[step_id]:
                waiting[dependent] -= 1
                if waiting[dependent] == 0:
                    heapq.heappush(ready, position[dependent])
        return tuple(order)


def _agent_document(agent: Agent | None) -> Any:
    if isinstance(agent, HttpAgent):
        return {"url": agent.url}
    if isinstance(agent, LlmAgent):
        return {"llm": agent.to_document()}
    return agent


def _parse_agent(doc: Any) -> Agent | None:
    if not isinstance(doc, Mapping):
        return doc  # type: ignore[no-any-return]
    if "llm" in doc:
        return LlmAgent.from_document(doc["llm"])
    return HttpAgent(doc["url"])


def _route_document(route: Route) -> dict[str, Any]:
    if route.default:
        return {"default": True, "next": list(route.next)}
    return {"when": route.when, "next": list(route.next)}


def _get(mapping: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """Read an optional key; validation lets `null` stand for an absent key."""
    value = mapping.get(key)
    return default if value is None else value


def _seconds(value: Any) -> float | None:
    return None if value is None else float(value)


def _json(value: Any) -> Any:
    """Copy a JSON template as plain JSON types, so that equal documents compare equal."""
    return json.loads(json.dumps(value))


def _route(doc: Mapping[str, Any]) -> Route:
    if _get(doc, "default", False):
        return Route(next=tuple(doc["next"]), default=True)
    return Route(next=tuple(doc["next"]), when=doc["when"])


def _step(doc: Mapping[str, Any]) -> StepDefinition:
    agent = _get(doc, "agent")
    retry = _get(doc, "retry", {})
    return StepDefinition(
        id=doc["id"],
        type=StepType(doc["type"]),
        agent=_parse_agent(agent),
        input=_json(_get(doc, "input", {})),
        depends_on=tuple(_get(doc, "depends_on", ())),
        timeout_seconds=_seconds(_get(doc, "timeout_seconds")),
        retry=RetryPolicy(
            max_attempts=_get(retry, "max_attempts", 1),
            initial_interval=float(_get(retry, "initial_interval", 1.0)),
            backoff_coefficient=float(_get(retry, "backoff_coefficient", 2.0)),
            max_interval=float(_get(retry, "max_interval", 60.0)),
            non_retryable_errors=tuple(_get(retry, "non_retryable_errors", ())),
        ),
        on_error=OnError(_get(doc, "on_error", OnError.FAIL)),
        routes=tuple(_route(route) for route in _get(doc, "routes", ())),
        seconds=_seconds(_get(doc, "seconds")),
        signal=_get(doc, "signal"),
        allowed_roles=tuple(_get(doc, "allowed_roles", ("user", "admin"))),
        schema=_json(doc["schema"]) if doc.get("schema") is not None else None,
    )
