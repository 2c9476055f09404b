"""Templates and conditions of process definitions, evaluated in the jinja2 sandbox."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache, wraps
from types import GeneratorType
from typing import Any

from jinja2 import ChainableUndefined, StrictUndefined, Template, Undefined, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.environment import TemplateExpression
from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2.parser import Parser
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from agent_ledger.domain.errors import ExpressionError

MAX_RENDERED_CHARS = 64 * 1024
"""Longest text a template may render or build (`~`, `+`, `*`, `join`); read values pass as is."""

MAX_INT_BITS = 4096

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
    for source in _sources(template):
        _compile_template(source)


def check_expression(expression: str) -> None:
    """Check that a condition parses; evaluate nothing."""
    _compile_expression(expression, condition=True)


def template_step_references(template: Any) -> frozenset[str]:
    """Return the step ids a JSON template reads as `steps.<id>` or `steps['<id>']`."""
    return frozenset().union(*(_compile_template(s).steps for s in _sources(template)))


def condition_step_references(expression: str) -> frozenset[str]:
    """Return the step ids a condition reads as `steps.<id>` or `steps['<id>']`."""
    parser = Parser(_environment(condition=True), expression, state="variable")
    return _step_names(parser.parse_expression())


class _BoundedCodeGenerator(CodeGenerator):
    """Compile `~` through the environment, the one operator the sandbox cannot intercept."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:  # noqa: N802 - jinja's name
        self.write("environment.concat_bounded((")
        for operand in node.nodes:
            self.visit(operand, frame)
            self.write(", ")
        self.write("))")


class _SandboxEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, tightened: JSON keys before attributes, unsafe access and calls raise."""

    intercepted_binops = frozenset({"+", "*", "%", "**"})
    code_generator_class = _BoundedCodeGenerator

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
        # Repetition, powers and formatting are the cheap ways to exhaust memory from a template.
        if operator == "%" and isinstance(left, str):
            raise SecurityError("formatting strings with % is not allowed; use a template")
        if _too_big(operator, left, right):
            raise SecurityError(f"the result of {operator!r} would be too large")
        return _bounded(super().call_binop(context, operator, left, right))

    def concat_bounded(self, values: tuple[Any, ...]) -> str:
        """Join the operands of `~`, refusing a result longer than the bound."""
        return str(_bounded("".join(map(str, values))))


def _too_big(operator: str, left: Any, right: Any) -> bool:
    if operator == "*" and isinstance(left, int) and isinstance(right, int):
        return left.bit_length() + right.bit_length() > MAX_INT_BITS
    if operator == "*":
        sequence, count = (left, right) if isinstance(right, int) else (right, left)
        sized = isinstance(sequence, str | list | tuple) and isinstance(count, int)
        return sized and len(sequence) * count > MAX_RENDERED_CHARS
    if operator == "**" and isinstance(left, int) and isinstance(right, int):
        return left.bit_length() * right > MAX_INT_BITS
    return False


def _bounded(result: Any) -> Any:
    if isinstance(result, str | list | tuple) and len(result) > MAX_RENDERED_CHARS:
        raise SecurityError(f"the result would be too large (over {MAX_RENDERED_CHARS} characters)")
    return result


def _bounded_filter(function: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(function)  # also copies jinja's pass_context-style marker
    def bounded(*args: Any, **kwargs: Any) -> Any:
        return _bounded(function(*args, **kwargs))

    return bounded


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
    steps: frozenset[str]


@lru_cache(maxsize=2)
def _environment(*, condition: bool) -> _SandboxEnvironment:
    environment = _SandboxEnvironment(
        undefined=_MissingValue if condition else StrictUndefined,
        autoescape=False,
        finalize=_finalize,
    )
    environment.filters = {name: environment.filters[name] for name in sorted(ALLOWED_FILTERS)}
    environment.filters["join"] = _bounded_filter(environment.filters["join"])
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
        template, steps = environment.from_string(tree), _step_names(tree)
        match = _SINGLE_EXPRESSION.match(source)
        if match is None or not _is_single_output(tree):
            return _CompiledTemplate(template, None, steps)
        expression = environment.compile_expression(match["expression"], False)
        return _CompiledTemplate(template, expression, steps)
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
    names = {node.attr for node in tree.find_all(nodes.Getattr) if _is_steps(node.node)}
    for node in tree.find_all(nodes.Getitem):
        if _is_steps(node.node) and isinstance(node.arg, nodes.Const):
            names.update([node.arg.value] if isinstance(node.arg.value, str) else [])
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
        return str(value)  # a plain str, not jinja's Markup
    if isinstance(value, float) and not math.isfinite(value):
        raise ExpressionError(f"{value} is not a JSON number")
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise ExpressionError("JSON object keys must be strings")
        return {key: _to_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple | GeneratorType):
        return [_to_json(item) for item in value]
    raise ExpressionError(f"a {type(value).__name__} is not a JSON value")


def _has_syntax(text: str) -> bool:
    return any(marker in text for marker in _TEMPLATE_SYNTAX)


def _sources(template: Any) -> Iterator[str]:
    """Yield the strings of a JSON template that hold template syntax."""
    if isinstance(template, Mapping):
        template = list(template.values())
    if isinstance(template, list | tuple):
        for item in template:
            yield from _sources(item)
    elif isinstance(template, str) and _has_syntax(template):
        yield template


def _describe(error: Exception) -> str:
    if isinstance(error, TemplateError):
        return error.message or type(error).__name__
    return f"{type(error).__name__}: {error}"
