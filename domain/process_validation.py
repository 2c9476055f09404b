"""The rules a process definition document must follow before it is registered."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from graphlib import CycleError, TopologicalSorter
from typing import Any, NoReturn
from urllib.parse import urlsplit

from jsonschema.exceptions import SchemaError
from jsonschema.validators import validator_for

from agent_ledger.domain.errors import ExpressionError, InvalidProcessDefinitionError
from agent_ledger.domain.expressions import (
    check_expression,
    check_template,
    condition_step_references,
    template_step_references,
)

MAX_DOCUMENT_BYTES = 256 * 1024
MAX_STRING_CHARS = 16 * 1024
MAX_NESTING = 32
MAX_STEPS = 100
MAX_TIMEOUT_SECONDS = 24 * 3600.0
MAX_TIMER_SECONDS = 7 * 24 * 3600.0
MAX_ATTEMPTS = 100
MAX_BACKOFF_COEFFICIENT = 100.0
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
STEP_ID_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,63}")
STEP_TYPES = ("agent_task", "gateway", "timer", "wait_for_signal")
MAX_WAIT_SECONDS = 30 * 24 * 3600.0
SIGNAL_ROLES = ("user", "admin")
"""Who may send a signal a step waits for; auditors read, they never act."""
_USER_INFO = re.compile(r"//[^/?#]*@")

_DOCUMENT_KEYS = frozenset({"name", "description", "config", "steps", "output"})
_CONFIG_KEYS = frozenset({"parallel_execution", "stop_on_failure", "timeout_seconds"})
_RETRY_KEYS = frozenset(
    {"max_attempts", "initial_interval", "backoff_coefficient", "max_interval"}
    | {"non_retryable_errors"}
)
_ROUTE_KEYS = frozenset({"when", "next", "default"})
_LLM_KEYS = frozenset(
    {"model", "provider", "system", "prompt", "tools", "max_turns", "temperature"}
    | {"max_tokens", "response_format"}
)
MAX_TURNS = 50
MAX_TOOLS = 64
MAX_OUTPUT_TOKENS = 1_000_000
RESPONSE_FORMATS = ("text", "json")
TOOL_NAME_PATTERN = re.compile(r"[a-zA-Z][a-zA-Z0-9_-]{0,63}")
"""A tool name as model APIs accept it (OpenAI: letters, digits, `_` and `-`, 64 at most)."""
_STEP_KEYS = {
    "agent_task": frozenset(
        {"id", "type", "agent", "input", "depends_on", "timeout_seconds", "retry", "on_error"}
    ),
    "gateway": frozenset({"id", "type", "depends_on", "routes", "on_error"}),
    "timer": frozenset({"id", "type", "depends_on", "seconds"}),
    "wait_for_signal": frozenset(
        {"id", "type", "signal", "depends_on", "timeout_seconds", "allowed_roles", "schema"}
        | {"retry", "on_error"}
    ),
}
_ANY_STEP_KEY = frozenset().union(*_STEP_KEYS.values())


def validate_document(doc: Mapping[str, Any]) -> None:
    """Raise InvalidProcessDefinitionError, naming the step and the problem, if `doc` is bad."""
    if not isinstance(doc, Mapping):
        _fail("a process definition must be a JSON object")
    _check_json(doc, "", 0)
    size = len(json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode())
    if size > MAX_DOCUMENT_BYTES:
        _fail(f"the definition is {size} bytes long; the limit is {MAX_DOCUMENT_BYTES}")
    _check_keys(doc, _DOCUMENT_KEYS, "the definition", None)
    name = doc.get("name")
    if name is None:
        _fail("a process definition needs a 'name'")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        _fail(f"name {name!r} must match {NAME_PATTERN.pattern}")
    if not isinstance(doc.get("description", ""), str | None):
        _fail("description must be a string")
    _check_config(doc.get("config"))
    steps = doc.get("steps")
    if not isinstance(steps, list) or not 1 <= len(steps) <= MAX_STEPS:
        _fail(f"steps must be a list of 1 to {MAX_STEPS} steps")
    ids = _check_ids(steps)
    for step in steps:
        _check_step(step, ids)
    ancestors = _ancestors(steps)
    for step in steps:
        _check_reads(step, ancestors)
    try:
        check_template(doc.get("output"))
    except ExpressionError as error:
        _fail(f"output: {error}")
    for reference in sorted(template_step_references(doc.get("output"))):
        if reference not in ancestors:
            _fail(f"output references unknown step {reference!r}")


def _fail(problem: str, step_id: str | None = None) -> NoReturn:
    raise InvalidProcessDefinitionError(problem, step_id)


def _check_json(value: Any, path: str, depth: int, step_id: str | None = None) -> None:
    """Check JSON types and sizes; inside a step, name the step and a path relative to it."""
    where = path or ("the step" if step_id else "the definition")
    if depth > MAX_NESTING:
        _fail(f"{where} is nested more than {MAX_NESTING} levels deep", step_id)
    if isinstance(value, str) and len(value) > MAX_STRING_CHARS:
        _fail(f"{where} is {len(value)} characters long; the limit is {MAX_STRING_CHARS}", step_id)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str) or len(key) > MAX_STRING_CHARS:
                _fail(f"{where} has a key that is not a short string: {key!r:.40}", step_id)
            _check_json(item, f"{path}.{key}" if path else key, depth + 1, step_id)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            is_step = path == "steps" and step_id is None and isinstance(item, Mapping)
            item_id = item.get("id") if is_step else None
            if isinstance(item_id, str):
                _check_json(item, "", depth + 1, item_id)
            else:
                _check_json(item, f"{path}[{index}]", depth + 1, step_id)
    elif value is not None and not isinstance(value, str | bool | int | float):
        _fail(f"{where} holds a {type(value).__name__}, which is not JSON", step_id)
    elif isinstance(value, float) and not math.isfinite(value):
        _fail(f"{where} is not a finite number", step_id)
    elif isinstance(value, int) and abs(value) > 2**63:
        _fail(f"{where} is an integer too large for JSON", step_id)


def _check_keys(
    mapping: Mapping[str, Any], allowed: frozenset[str], what: str, step_id: str | None
) -> None:
    for key in mapping:
        if key not in allowed:
            expected = ", ".join(sorted(allowed))
            _fail(f"unknown key {key!r} in {what} (expected one of: {expected})", step_id)


def _check_config(config: Any) -> None:
    if config is None:
        return
    if not isinstance(config, Mapping):
        _fail("config must be an object")
    _check_keys(config, _CONFIG_KEYS, "config", None)
    for flag in ("parallel_execution", "stop_on_failure"):
        if not isinstance(config.get(flag, False), bool | None):
            _fail(f"config.{flag} must be true or false")
    what = "config.timeout_seconds"
    _number(config, "timeout_seconds", what, None, maximum=MAX_TIMEOUT_SECONDS)


def _check_ids(steps: list[Any]) -> list[str]:
    ids: list[str] = []
    for index, step in enumerate(steps):
        if not isinstance(step, Mapping):
            _fail(f"steps[{index}] must be an object")
        step_id = step.get("id")
        if step_id is None:
            _fail(f"steps[{index}] has no 'id'")
        if not isinstance(step_id, str) or not STEP_ID_PATTERN.fullmatch(step_id):
            _fail(f"steps[{index}]: id {step_id!r} must match {STEP_ID_PATTERN.pattern}")
        if step_id in ids:
            _fail("the id is used by more than one step", step_id)
        ids.append(step_id)
    return ids


def _check_step(step: Mapping[str, Any], ids: list[str]) -> None:
    step_id: str = step["id"]
    step_type = step.get("type")
    if step_type not in STEP_TYPES:
        _fail(f"type must be one of {', '.join(STEP_TYPES)} (got {step_type!r})", step_id)
    allowed = _STEP_KEYS[step_type]
    for key, value in step.items():
        if key not in _ANY_STEP_KEY:
            _fail(f"unknown key {key!r} (expected one of: {', '.join(sorted(allowed))})", step_id)
        if key not in allowed and value is not None:
            _fail(f"{key!r} does not apply to {step_type} steps", step_id)
    _check_step_list(step.get("depends_on"), "depends_on", step_id, ids)
    on_error = step.get("on_error")
    if on_error not in (None, "fail", "skip_step"):
        _fail(f"on_error must be 'fail' or 'skip_step' (got {on_error!r})", step_id)
    if step_type == "agent_task":
        _check_agent(step.get("agent"), step_id)
        try:
            check_template(step.get("input"))
        except ExpressionError as error:
            _fail(f"input: {error}", step_id)
        _number(step, "timeout_seconds", "timeout_seconds", step_id, maximum=MAX_TIMEOUT_SECONDS)
        _check_retry(step.get("retry"), step_id)
    elif step_type == "gateway":
        _check_routes(step.get("routes"), step_id, ids)
    elif step_type == "wait_for_signal":
        _check_wait(step, step_id)
    else:
        if step.get("seconds") is None:
            _fail("a timer needs 'seconds', the time to wait", step_id)
        _number(step, "seconds", "seconds", step_id, maximum=MAX_TIMER_SECONDS)


def _check_wait(step: Mapping[str, Any], step_id: str) -> None:
    signal = step.get("signal")
    if not isinstance(signal, str) or not NAME_PATTERN.fullmatch(signal):
        _fail(
            f"a wait_for_signal step needs 'signal', a name matching {NAME_PATTERN.pattern}",
            step_id,
        )
    _number(step, "timeout_seconds", "timeout_seconds", step_id, maximum=MAX_WAIT_SECONDS)
    _check_retry(step.get("retry"), step_id)
    roles = step.get("allowed_roles")
    if roles is not None and (
        not isinstance(roles, list)
        or not roles
        or any(role not in SIGNAL_ROLES for role in roles)
        or len(set(roles)) != len(roles)
    ):
        _fail(f"allowed_roles must be a non-empty list of {', '.join(SIGNAL_ROLES)}", step_id)
    schema = step.get("schema")
    if schema is not None:
        if not isinstance(schema, Mapping):
            _fail("schema must be a JSON schema (an object)", step_id)
        try:
            validator_for(schema).check_schema(dict(schema))
        except SchemaError as error:
            _fail(f"schema is not a valid JSON schema: {error.message}", step_id)


def _check_agent(agent: Any, step_id: str) -> None:
    if agent is None:
        _fail(
            "an agent_task needs an 'agent': a registered name, {url: ...} or {llm: ...}", step_id
        )
    if isinstance(agent, Mapping):
        _check_keys(agent, frozenset({"url", "llm"}), "agent", step_id)
        if len(agent) != 1:
            _fail("agent needs exactly one of 'url' or 'llm'", step_id)
        if "llm" in agent:
            _check_llm(agent["llm"], step_id)
            return
        url = agent.get("url")
        if not _is_http_url(url):
            shown = without_credentials(url) if isinstance(url, str) else url
            _fail(f"agent url {shown!r} must be an http:// or https:// URL", step_id)
    elif not isinstance(agent, str) or not agent.strip() or agent != agent.strip():
        _fail(f"agent must be a non-empty name or {{url: ...}} (got {agent!r})", step_id)


def _check_llm(llm: Any, step_id: str) -> None:
    if not isinstance(llm, Mapping):
        _fail("agent.llm must be an object with at least a 'model'", step_id)
    _check_keys(llm, _LLM_KEYS, "agent.llm", step_id)
    model = llm.get("model")
    if not isinstance(model, str) or not model.strip() or len(model) > 200:
        _fail(f"agent.llm.model must be a model name (got {model!r})", step_id)
    provider = llm.get("provider")
    if provider is not None and (
        not isinstance(provider, str) or not NAME_PATTERN.fullmatch(provider)
    ):
        _fail(f"agent.llm.provider {provider!r} must match {NAME_PATTERN.pattern}", step_id)
    for key in ("system", "prompt"):
        value = llm.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            _fail(f"agent.llm.{key} must be a string (a template)", step_id)
        try:
            check_template(value)
        except ExpressionError as error:
            _fail(f"agent.llm.{key}: {error}", step_id)
    tools = llm.get("tools") or []
    if not isinstance(tools, list) or len(tools) > MAX_TOOLS:
        _fail(f"agent.llm.tools must be a list of at most {MAX_TOOLS} tool names", step_id)
    for tool in tools:
        if not isinstance(tool, str) or not TOOL_NAME_PATTERN.fullmatch(tool):
            _fail(f"agent.llm.tools: {tool!r} must match {TOOL_NAME_PATTERN.pattern}", step_id)
    if len(set(tools)) != len(tools):
        _fail("agent.llm.tools names a tool twice", step_id)
    for key, top in (("max_turns", MAX_TURNS), ("max_tokens", MAX_OUTPUT_TOKENS)):
        value = llm.get(key)
        if value is not None and (type(value) is not int or not 1 <= value <= top):
            _fail(f"agent.llm.{key} must be an integer from 1 to {top}", step_id)
    _number(llm, "temperature", "agent.llm.temperature", step_id, maximum=2.0, inclusive=True)
    response_format = llm.get("response_format")
    if response_format is not None and response_format not in RESPONSE_FORMATS:
        _fail(
            f"agent.llm.response_format must be 'text' or 'json' (got {response_format!r})", step_id
        )


def llm_templates(step: Mapping[str, Any]) -> list[Any]:
    """The templates of a step's model agent (its system and user prompts), if it has one."""
    agent = step.get("agent")
    llm = agent.get("llm") if isinstance(agent, Mapping) else None
    if not isinstance(llm, Mapping):
        return []
    return [llm.get("system"), llm.get("prompt")]


def without_credentials(url: str) -> str:
    """`url` without its `user:password@` part, to be shown in messages and events."""
    return _USER_INFO.sub("//", url, count=1)


def _is_http_url(url: Any) -> bool:
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
    except ValueError:
        return False
    return parts is not None and parts.scheme in ("http", "https") and bool(parts.hostname)


def _check_retry(retry: Any, step_id: str) -> None:
    if retry is None:
        return
    if not isinstance(retry, Mapping):
        _fail("retry must be an object", step_id)
    _check_keys(retry, _RETRY_KEYS, "retry", step_id)
    attempts = retry.get("max_attempts")
    # `type(...) is int` also keeps out booleans, which YAML makes easily.
    if attempts is not None and (type(attempts) is not int or not 1 <= attempts <= MAX_ATTEMPTS):
        _fail(f"retry.max_attempts must be an integer from 1 to {MAX_ATTEMPTS}", step_id)
    for key, minimum, maximum in (
        ("initial_interval", 0.0, MAX_TIMEOUT_SECONDS),
        ("max_interval", 0.0, MAX_TIMEOUT_SECONDS),
        ("backoff_coefficient", 1.0, MAX_BACKOFF_COEFFICIENT),
    ):
        what = f"retry.{key}"
        _number(retry, key, what, step_id, minimum=minimum, maximum=maximum, inclusive=True)
    errors = retry.get("non_retryable_errors") or []
    if not isinstance(errors, list) or not all(isinstance(e, str) and e for e in errors):
        _fail("retry.non_retryable_errors must be a list of error type names", step_id)


def _check_routes(routes: Any, step_id: str, ids: list[str]) -> None:
    if not isinstance(routes, list) or not routes:
        _fail("a gateway needs at least one route", step_id)
    defaults = [n for n, r in enumerate(routes, 1) if isinstance(r, Mapping) and r.get("default")]
    if len(defaults) > 1:
        _fail(f"routes {defaults[0]} and {defaults[1]} are both the default; keep one", step_id)
    for number, route in enumerate(routes, 1):
        if not isinstance(route, Mapping):
            _fail(f"route {number} must be an object", step_id)
        _check_keys(route, _ROUTE_KEYS, f"route {number}", step_id)
        when, default = route.get("when"), route.get("default", False)
        default = False if default is None else default
        if not isinstance(default, bool):
            _fail(f"route {number}: default must be true or false", step_id)
        if (when is None) == (not default):
            _fail(f"route {number} needs exactly one of 'when' or 'default: true'", step_id)
        if default and number != len(routes):
            _fail(f"route {number}: the default route must be the last one", step_id)
        if when is not None:
            if not isinstance(when, str):
                _fail(f"route {number}: when must be a string", step_id)
            try:
                check_expression(when)
            except ExpressionError as error:
                _fail(f"route {number}: {error}", step_id)
        targets = route.get("next")
        if not isinstance(targets, list) or not targets:
            _fail(f"route {number} needs 'next': a non-empty list of step ids", step_id)
        _check_step_list(targets, f"route {number}", step_id, ids)


def _check_step_list(value: Any, what: str, step_id: str, ids: list[str]) -> None:
    if value is None:
        return
    if not isinstance(value, list):
        _fail(f"{what} must be a list of step ids", step_id)
    for index, name in enumerate(value):
        if name not in ids:
            _fail(f"{what} names unknown step {name!r}", step_id)
        if name == step_id:
            _fail(f"{what} names the step itself", step_id)
        if name in value[:index]:
            _fail(f"{what} names {name!r} twice", step_id)


def _number(
    mapping: Mapping[str, Any], key: str, what: str, step_id: str | None, *, maximum: float,
    minimum: float = 0.0, inclusive: bool = False
) -> None:  # fmt: skip
    value = mapping.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(f"{what} must be a number (got {value!r})", step_id)
    too_low = value < minimum if inclusive else value <= minimum
    if too_low or value > maximum:
        bound = f"at least {minimum:g}" if inclusive else f"greater than {minimum:g}"
        _fail(f"{what} must be {bound} and at most {maximum:g} (got {value:g})", step_id)


def _ancestors(steps: list[Mapping[str, Any]]) -> dict[str, frozenset[str]]:
    """Return every step's transitive dependencies; a cycle is an error naming its steps."""
    dependencies: dict[str, list[str]] = {step["id"]: [] for step in steps}
    for step in steps:
        dependencies[step["id"]].extend(step.get("depends_on") or ())
        for route in step.get("routes") or ():
            for target in route["next"]:
                dependencies[target].append(step["id"])
    sorter = TopologicalSorter(dependencies)
    try:
        order = list(sorter.static_order())
    except CycleError as error:
        cycle: list[str] = error.args[1]
        _fail(f"the steps form a dependency cycle: {' -> '.join(cycle)}", cycle[0])
    ancestors: dict[str, frozenset[str]] = {}
    for step_id in order:
        direct = dependencies[step_id]
        ancestors[step_id] = frozenset(direct).union(*(ancestors[d] for d in direct))
    return ancestors


def _check_reads(step: Mapping[str, Any], ancestors: dict[str, frozenset[str]]) -> None:
    """Check a step reads only steps it waits for: anything else may not have run yet."""
    step_id: str = step["id"]
    sources = [("input", template_step_references(step.get("input")))]
    sources.append(("agent.llm", template_step_references(llm_templates(step))))
    for number, route in enumerate(step.get("routes") or (), 1):
        if route.get("when") is not None:
            sources.append((f"route {number}", condition_step_references(route["when"])))
    for what, references in sources:
        for reference in sorted(references):
            if reference not in ancestors:
                _fail(f"{what} references unknown step {reference!r}", step_id)
            if reference == step_id:
                _fail(f"{what} references the step's own output", step_id)
            if reference not in ancestors[step_id]:
                hint = "which it does not wait for (add it to depends_on)"
                _fail(f"{what} reads step {reference!r}, {hint}", step_id)
