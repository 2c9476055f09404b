"""Templates and conditions of process definitions, evaluated in the jinja2 sandbox."""

from __future__ import annotations

import json
import math
import re
from collections.abc import ItemsView, KeysView, Mapping, ValuesView
from dataclasses import dataclass
from functools import lru_cache
from types import GeneratorType
from typing import Any

from jinja2 import (
    ChainableUndefined,
    StrictUndefined,
    Template,
    TemplateError,
    TemplateSyntaxError,
    Undefined,
    UndefinedError,
    nodes,
)
from jinja2.environment import TemplateExpression
from jinja2.exceptions import SecurityError
from jinja2.parser import Parser
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from domain.errors import ExpressionError

MAX_RENDERED_CHARS = 64 * 1024
"""Longest string a template may render to (or an expression may produce)."""

MAX_EXPONENT = 1024

ALLOWED_FILTERS = frozenset(
    {
        "abs", "capitalize", "default", "dictsort", "first", "float", "int", "items", "join",
        "last", "length", "list", "lower", "map", "max", "min", "round", "sort", "string", "sum",
        "title", "tojson", "trim", "truncate", "unique", "upper",
    }
)  # fmt: skip

# Methods of strings a template may call; everything else callable is refused.
ALLOWED_STR_METHODS = frozenset(
    {"capitalize", "endswith", "lower", "split", "startswith", "strip", "title", "upper"}
)

_UNSUPPORTED_TAGS = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport, nodes.Macro)
_TEMPLATE_SYNTAX = ("{{", "{%", "{#")
_SINGLE_EXPRESSION = re.compile(r"\A\s*\{\{[-+]?(?P<expression>.*?)[-+]?\}\}\s*\Z", re.DOTALL)


def render(template: Any, scope: Mapping[str, Any]) -> Any:
    """Render a JSON template: a lone `{{ expr }}` keeps its JSON type, other text renders."""
    if isinstance(template, Mapping):
        return {key: render(value, scope) for key, value in template.items()}
    if isinstance(template, list | tuple):
        return [render(value, scope) for value in template]
    if not isinstance(template, str) or not _has_syntax(template):
        return template
    compiled = _compile_template(template)
    try:
        if compiled.expression is not None:
            return _to_json(compiled.expression(**scope))
        return _render_text(compiled.template, scope)
    except ExpressionError:
        raise
    except SecurityError as error:
        raise ExpressionError(f"refused in {template!r}: {error}") from None
    except UndefinedError as error:
        raise ExpressionError(f"undefined value in {template!r}: {error}") from None
    except Exception as error:
        # Templates are written by users and may fail in any way; callers handle one error.
        raise ExpressionError(f"cannot evaluate {template!r}: {_describe(error)}") from None


def evaluate_condition(expression: str, scope: Mapping[str, Any]) -> bool:
    """Evaluate a gateway condition; an undefined value counts as missing, so mostly false."""
    compiled = _compile_expression(expression, condition=True)
    try:
        return bool(compiled(**scope))
    except SecurityError as error:
        raise ExpressionError(f"refused in {expression!r}: {error}") from None
    except UndefinedError:
        # Arithmetic or iteration on a missing value: the condition cannot hold.
        return False
    except Exception as error:
        raise ExpressionError(f"cannot evaluate {expression!r}: {_describe(error)}") from None


def check_template(template: Any) -> None:
    """Check that every string of a JSON template parses; evaluate nothing."""
    if isinstance(template, Mapping):
        for value in template.values():
            check_template(value)
    elif isinstance(template, list | tuple):
        for value in template:
            check_template(value)
    elif isinstance(template, str) and _has_syntax(template):
        _compile_template(template)


def check_expression(expression: str) -> None:
    """Check that a condition parses; evaluate nothing."""
    _compile_expression(expression, condition=True)


def template_step_references(template: Any) -> frozenset[str]:
    """Return the step ids a (parseable) JSON template reads as `steps.<id>` or `steps['<id>']`."""
    if isinstance(template, Mapping):
        return frozenset().union(*map(template_step_references, template.values()))
    if isinstance(template, list | tuple):
        return frozenset().union(*map(template_step_references, template))
    if isinstance(template, str) and _has_syntax(template):
        return _step_names(_environment(condition=False).parse(template))
    return frozenset()


def condition_step_references(expression: str) -> frozenset[str]:
    """Return the step ids a (parseable) condition reads as `steps.<id>` or `steps['<id>']`."""
    parser = Parser(_environment(condition=True), expression, state="variable")
    return _step_names(parser.parse_expression())


class _SandboxEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, tightened: JSON keys before attributes, unsafe access and calls raise."""

    intercepted_binops = frozenset({"*", "**"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        # `output.items` must mean the key of a JSON object, never the dict method.
        if isinstance(obj, dict):
            if attribute in obj:
                return obj[attribute]
            known = ", ".join(repr(key) for key in sorted(map(str, obj))[:10]) or "none"
            hint = f"{attribute!r} is undefined (known keys: {known})"
            return self.undefined(hint=hint, obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, dict) and isinstance(argument, str):
            return self.getattr(obj, argument)
        return super().getitem(obj, argument)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        # The stock sandbox returns an undefined that a lenient condition would read as false.
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} refused")

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        owner = getattr(obj, "__self__", None)
        name = getattr(obj, "__name__", type(obj).__name__)
        if not (isinstance(owner, str) and name in ALLOWED_STR_METHODS):
            what = "an undefined name" if isinstance(obj, Undefined) else repr(name)
            raise SecurityError(f"calling {what} is not allowed; use a filter")
        return super().call(context, obj, *args, **kwargs)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        # Repetition and powers are the cheap ways to exhaust memory or CPU from a template.
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                if (
                    isinstance(sequence, str | list | tuple)
                    and isinstance(count, int)
                    and len(sequence) * count > MAX_RENDERED_CHARS
                ):
                    raise SecurityError("repetition result is too large")
        elif isinstance(right, int) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"exponent larger than {MAX_EXPONENT}")
        return super().call_binop(context, operator, left, right)


class _MissingValue(ChainableUndefined):
    """An undefined value in a condition: equal to none, never greater or less than anything."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return other is None or isinstance(other, Undefined)

    __hash__ = ChainableUndefined.__hash__

    def _never(self, other: object) -> bool:
        return False

    # The base raises on ordering; a missing value simply compares false.
    __lt__ = __le__ = __gt__ = __ge__ = _never  # type: ignore[assignment]


@dataclass(frozen=True)
class _CompiledTemplate:
    """A string template, with its expression when it is exactly one `{{ ... }}`."""

    template: Template
    expression: TemplateExpression | None


@lru_cache(maxsize=2)
def _environment(*, condition: bool) -> _SandboxEnvironment:
    environment = _SandboxEnvironment(
        undefined=_MissingValue if condition else StrictUndefined,
        autoescape=False,
        finalize=_finalize,
    )
    environment.filters = {name: environment.filters[name] for name in sorted(ALLOWED_FILTERS)}
    environment.globals.clear()
    if condition:
        environment.tests["none"] = _is_missing
    return environment


def _is_missing(value: Any) -> bool:
    return value is None or isinstance(value, Undefined)


@lru_cache(maxsize=1024)
def _compile_template(source: str) -> _CompiledTemplate:
    environment = _environment(condition=False)
    try:
        tree = environment.parse(source)
        for node in tree.find_all(_UNSUPPORTED_TAGS):
            tag = type(node).__name__.lower()
            raise ExpressionError(f"unsupported tag {tag!r} in {source!r} (line {node.lineno})")
        template = environment.from_string(tree)
        match = _SINGLE_EXPRESSION.match(source)
        if match is None or not _is_single_output(tree):
            return _CompiledTemplate(template, None)
        inner = match["expression"]
        return _CompiledTemplate(template, environment.compile_expression(inner, False))
    except TemplateSyntaxError as error:
        raise ExpressionError(f"invalid template {source!r}: {_describe(error)}") from None


@lru_cache(maxsize=1024)
def _compile_expression(source: str, *, condition: bool) -> TemplateExpression:
    if not source.strip():
        raise ExpressionError("empty expression")
    try:
        return _environment(condition=condition).compile_expression(source, True)
    except TemplateSyntaxError as error:
        raise ExpressionError(f"invalid expression {source!r}: {_describe(error)}") from None


def _is_single_output(tree: nodes.Template) -> bool:
    if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
        return False
    parts = [
        node
        for node in tree.body[0].nodes
        if not (isinstance(node, nodes.TemplateData) and not node.data.strip())
    ]
    return len(parts) == 1 and not isinstance(parts[0], nodes.TemplateData)


def _step_names(tree: nodes.Node) -> frozenset[str]:
    names: set[str] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr) and _is_steps(node.node):
            names.add(node.attr)
        elif isinstance(node, nodes.Getitem) and _is_steps(node.node):
            key = node.arg.value if isinstance(node.arg, nodes.Const) else None
            names.update([key] if isinstance(key, str) else [])
    return frozenset(names)


def _is_steps(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Name) and node.name == "steps"


def _render_text(template: Template, scope: Mapping[str, Any]) -> str:
    chunks: list[str] = []
    size = 0
    # Streaming lets an oversized output stop early instead of being built whole.
    for chunk in template.generate(**scope):
        size += len(chunk)
        if size > MAX_RENDERED_CHARS:
            raise ExpressionError(f"rendered text exceeds {MAX_RENDERED_CHARS} characters")
        chunks.append(chunk)
    return "".join(chunks)


def _finalize(value: Any) -> Any:
    """Write JSON-typed values inside text as JSON (`true`, `null`, `{"a": 1}`)."""
    if value is None or isinstance(value, bool | dict | list | tuple):
        return json.dumps(_to_json(value), ensure_ascii=False)
    return value


def _to_json(value: Any) -> Any:
    if isinstance(value, Undefined):
        str(value)  # a strict undefined raises its own message naming what is missing
        raise ExpressionError("the expression is undefined")
    if isinstance(value, str):
        if len(value) > MAX_RENDERED_CHARS:
            raise ExpressionError(f"value exceeds {MAX_RENDERED_CHARS} characters")
        return str(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ExpressionError(f"{value} is not a JSON number")
        return value
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise ExpressionError("JSON object keys must be strings")
        return {key: _to_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple | GeneratorType | KeysView | ValuesView | ItemsView):
        return [_to_json(item) for item in value]
    raise ExpressionError(f"a {type(value).__name__} is not a JSON value")


def _has_syntax(text: str) -> bool:
    return any(marker in text for marker in _TEMPLATE_SYNTAX)


def _describe(error: Exception) -> str:
    if isinstance(error, TemplateSyntaxError) and error.lineno > 1:
        return f"{error.message} (line {error.lineno})"
    if isinstance(error, TemplateError):
        return error.message or type(error).__name__
    return f"{type(error).__name__}: {error}"
