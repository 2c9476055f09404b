"""Templates and conditions: native JSON values, text, undefined names and the sandbox."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from agent_ledger.domain.errors import ExpressionError
from agent_ledger.domain.expressions import (
    MAX_RENDERED_CHARS,
    check_expression,
    check_template,
    condition_step_references,
    evaluate_condition,
    render,
    template_step_references,
)

SCOPE: dict[str, Any] = {
    "input": {
        "name": "Ada",
        "code": "007",
        "count": 3,
        "ratio": 0.5,
        "flag": True,
        "nothing": None,
        "obj": {"a": 1, "b": [1, 2]},
        "tags": ["cost", "urgent"],
        "priority": 3,
        "pair": (1, 2),
    },
    "steps": {
        "triage": {"output": {"category": "cost", "score": 0.9}},
        "search": {"output": {"items": [1, 2, 3], "keys": "k", "update": "u"}},
    },
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ input.count }}", 3),
        ("{{ input.ratio }}", 0.5),
        ("{{ input.flag }}", True),
        ("{{ input.nothing }}", None),
        ("{{ input.obj }}", {"a": 1, "b": [1, 2]}),
        ("{{ input.tags }}", ["cost", "urgent"]),
        ("{{ input.name }}", "Ada"),
        ("{{ input.code }}", "007"),
        ("  {{ input.count }}\n", 3),
        ("{{- input.count -}}", 3),
        ("{{ input.count + 1 }}", 4),
        ("{{ {'k': input.count} }}", {"k": 3}),
        ("{{ '}}' }}", "}}"),
    ],
)
def test_a_lone_expression_keeps_its_json_type(template: str, expected: Any) -> None:
    assert render(template, SCOPE) == expected
    assert type(render(template, SCOPE)) is type(expected)


def test_a_tuple_in_the_scope_comes_back_as_a_list() -> None:
    assert render("{{ input.pair }}", SCOPE) == [1, 2]


def test_step_outputs_are_read_with_dots_on_plain_dicts() -> None:
    assert render("{{ steps.triage.output.category }}", SCOPE) == "cost"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ steps.search.output.items }}", [1, 2, 3]),
        ("{{ steps.search.output.keys }}", "k"),
        ("{{ steps.search.output['update'] }}", "u"),
    ],
)
def test_keys_named_like_dict_methods_read_the_key(template: str, expected: Any) -> None:
    assert render(template, SCOPE) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Hello {{ input.name }}!", "Hello Ada!"),
        ("{{ input.count }} items", "3 items"),
        ("{{ input.obj }} {{ input.flag }} {{ input.nothing }}", '{"a": 1, "b": [1, 2]} true null'),
        ("{{ 'Dear ' ~ input.name }}", "Dear Ada"),
        ("{% for tag in input.tags %}[{{ tag }}]{% endfor %}", "[cost][urgent]"),
        ("{% if input.flag %}yes{% else %}no{% endif %}", "yes"),
        ("{{ input.count }}{# a comment #}", "3"),
    ],
)  # fmt: skip
def test_any_other_template_renders_to_a_string(template: str, expected: str) -> None:
    assert render(template, SCOPE) == expected


def test_dicts_and_lists_are_rendered_recursively() -> None:
    template = {"who": "{{ input.name }}", "n": ["{{ input.count }}", {"deep": "{{ input.flag }}"}]}

    assert render(template, SCOPE) == {"who": "Ada", "n": [3, {"deep": True}]}


@pytest.mark.parametrize("value", ["no template here", "a { brace }", 5, 1.5, None, True])
def test_values_without_template_syntax_are_returned_unchanged(value: Any) -> None:
    assert render(value, SCOPE) == value


@pytest.mark.parametrize(
    ("template", "named"),
    [
        ("{{ nope }}", "'nope' is undefined"),
        ("{{ steps.nope.output }}", "'nope' is undefined"),
        ("{{ steps.triage.output.missing }}", "'missing' is undefined"),
        ("Dear {{ input.surname }}", "'surname' is undefined"),
        ("{{ [input.surname] }}", "'surname' is undefined"),
    ],
)
def test_an_undefined_name_is_an_error_naming_it(template: str, named: str) -> None:
    with pytest.raises(ExpressionError, match="undefined") as caught:
        render(template, SCOPE)

    assert named in str(caught.value)


def test_default_fills_in_an_undefined_value() -> None:
    assert render("{{ input.surname | default('friend') }}", SCOPE) == "friend"


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__ }}",
        "{{ input.name.__class__.__mro__ }}",
        "{{ input.name | attr('__class__') }}",
        "{{ input.name.format(1) }}",
        "{{ input.tags.append(1) }}",
        "{{ range(10) | list }}",
        "{{ cycler(1, 2) }}",
        "{{ lipsum() }}",
        "{% include 'other.txt' %}",
        "{% import 'macros.txt' as m %}",
        "{% extends 'base.txt' %}",
        "{{ 'x' * 10000000 }}",
        "{{ 9 ** 9 ** 9 ** 9 ** 9 }}",
        "{{ '%0999999999d' % 1 }}",
    ],
)
def test_escapes_from_the_sandbox_are_refused(template: str) -> None:
    with pytest.raises(ExpressionError):
        render(template, SCOPE)


def test_reaching_for_internals_is_refused_by_name() -> None:
    with pytest.raises(ExpressionError, match=r"'__class__'.*refused"):
        render("{{ ''.__class__ }}", SCOPE)


@pytest.mark.parametrize("name", ["attr", "format", "pprint", "xmlattr", "urlize", "indent"])
def test_a_filter_outside_the_whitelist_does_not_parse(name: str) -> None:
    with pytest.raises(ExpressionError, match=f"No filter named '{name}'"):
        check_template(f"{{{{ input.name | {name} }}}}")


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ input.tags | length }}", 2),
        ("{{ input.name | lower }}", "ada"),
        ("{{ input.name | upper }}", "ADA"),
        ("{{ 2.567 | round(1) }}", 2.6),
        ("{{ input.obj | tojson }}", '{"a": 1, "b": [1, 2]}'),
        ("{{ input.tags | join(', ') }}", "cost, urgent"),
        ("{{ '42' | int }}", 42),
        ("{{ '1.5' | float }}", 1.5),
        ("{{ input.count | string }}", "3"),
        ("{{ input.tags | first }}", "cost"),
        ("{{ input.tags | last }}", "urgent"),
        ("{{ [1, 2, 3] | sum }}", 6),
        ("{{ [3, 1, 2] | min }}", 1),
        ("{{ [3, 1, 2] | max }}", 3),
        ("{{ input.tags | map('upper') | list }}", ["COST", "URGENT"]),
        ("{{ input.name.startswith('A') }}", True),
    ],
)
def test_whitelisted_filters_and_string_methods_work(template: str, expected: Any) -> None:
    assert render(template, SCOPE) == expected


def test_rendered_text_is_bounded() -> None:
    scope = {"input": {"text": "x" * 1000, "rows": list(range(100))}}

    with pytest.raises(ExpressionError, match="exceeds"):
        render("{% for row in input.rows %}{{ input.text }}{% endfor %}", scope)


@pytest.mark.parametrize(
    "template",
    [
        "{{ input.text ~ input.text }}",
        "{{ input.rows + input.rows }}",
        "{{ [input.text, input.text] | join }}",
        "{{ input.text * 2 }}",
        "{% for doubled in [input.text ~ input.text] %}{% endfor %}",
    ],
)
def test_text_built_inside_a_template_is_bounded(template: str) -> None:
    half = MAX_RENDERED_CHARS // 2 + 1
    scope = {"input": {"text": "x" * half, "rows": [0] * half}}

    with pytest.raises(ExpressionError, match="too large"):
        render(template, scope)


def test_a_large_value_read_from_the_scope_passes_through() -> None:
    scope = {"input": {"text": "x" * (MAX_RENDERED_CHARS + 1)}}

    assert render("{{ input.text }}", scope) == scope["input"]["text"]


@pytest.mark.parametrize("value", [datetime.date(2024, 1, 1), {1, 2}, object(), float("nan")])
def test_a_value_that_is_not_json_is_refused(value: Any) -> None:
    with pytest.raises(ExpressionError, match="JSON"):
        render("{{ input.value }}", {"input": {"value": value}})


def test_a_runtime_failure_is_an_expression_error() -> None:
    with pytest.raises(ExpressionError, match="ZeroDivisionError"):
        render("{{ input.count / 0 }}", SCOPE)


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("steps.triage.output.category == 'cost' and input.priority > 2", True),
        ("steps.triage.output.category == 'cost' and input.priority > 5", False),
        ("input.priority > 5 or input.flag", True),
        ("not input.flag", False),
        ("'cost' in input.tags", True),
        ("'cheap' not in input.tags", True),
        ("'co' in steps.triage.output.category", True),
        ("steps.triage.output.score >= 0.9", True),
        ("input.missing == 'x'", False),
        ("input.missing > 2", False),
        ("input.missing < 2", False),
        ("not input.missing", True),
        ("input.missing == none", True),
        ("input.missing is none", True),
        ("input.missing is not defined", True),
        ("steps.nope.output.category == 'cost'", False),
        ("input.missing > 2 or input.priority == 3", True),
        ("input.missing + 1 > 2", False),
    ],
)
def test_conditions_combine_comparisons_and_treat_undefined_as_missing(
    condition: str, expected: bool
) -> None:
    assert evaluate_condition(condition, SCOPE) is expected


@pytest.mark.parametrize("condition", ["input.x ==", "input.x = 1", "(", "", "a b"])
def test_a_condition_that_does_not_parse_is_an_error(condition: str) -> None:
    with pytest.raises(ExpressionError):
        evaluate_condition(condition, SCOPE)
    with pytest.raises(ExpressionError):
        check_expression(condition)


@pytest.mark.parametrize("condition", ["''.__class__ == 1", "input.obj.update({}) == 1"])
def test_a_condition_cannot_escape_the_sandbox(condition: str) -> None:
    with pytest.raises(ExpressionError, match="refused"):
        evaluate_condition(condition, SCOPE)


def test_a_condition_comparing_incompatible_types_is_an_error() -> None:
    with pytest.raises(ExpressionError, match="TypeError"):
        evaluate_condition("input.name > 2", SCOPE)


def test_checking_a_template_parses_every_string_without_a_scope() -> None:
    check_template({"a": ["{{ steps.x.output.y }}", {"b": "{% if input.z %}z{% endif %}"}], "c": 1})


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ input.x ", "unexpected end of template"),
        ({"deep": ["{% if %}{% endif %}"]}, "Expected an expression"),
        ("{{ input.x | nosuchfilter }}", "No filter named 'nosuchfilter'"),
        ("{% for x in y %}", "Unexpected end of template"),
    ],
)
def test_checking_a_template_reports_the_jinja_message(template: Any, message: str) -> None:
    with pytest.raises(ExpressionError, match="invalid template") as caught:
        check_template(template)

    assert message in str(caught.value)


def test_checking_an_expression_evaluates_nothing() -> None:
    check_expression("steps.never_ran.output.category == 'cost' and 1 / 0")


def test_template_references_to_steps_are_found_in_expressions_only() -> None:
    template = {
        "a": "{{ steps.triage.output }}",
        "b": ["{{ steps['with-dash'].output }}", "{% for s in steps.loop.output %}{% endfor %}"],
        "c": "the steps.mentioned in prose are not references",
        "d": "{{ input.steps.nested }}",
    }

    assert template_step_references(template) == {"triage", "with-dash", "loop"}


def test_condition_references_to_steps_are_found() -> None:
    condition = "steps.a.output.x == 1 and steps['b'].output or input.steps.c"

    assert condition_step_references(condition) == {"a", "b"}
