"""The one check of text at the edge: what it refuses, and where it says the text was."""

from __future__ import annotations

import pytest

from agent_ledger.application.storable_text import UnstorableTextError, check_storable, text_problem
from agent_ledger.infrastructure.api.input_boundary import check_body, check_target


@pytest.mark.parametrize(
    ("text", "fine"),
    [("plain", True), ("ünïcödé 🚀", True), ("", True), ("t\x00", False), ("\ud800", False)],
)
def test_text_problem_names_nul_and_lone_surrogates(text: str, fine: bool) -> None:
    assert (text_problem(text) is None) is fine


def test_the_first_unstorable_value_in_document_order_is_named() -> None:
    document = {"a": ["ok", {"b": "x\x00"}], "c": "\udfff"}
    with pytest.raises(UnstorableTextError) as raised:
        check_storable(document, "body")
    assert raised.value.field == "body.a[1].b"


def test_an_unstorable_key_is_named_by_its_parent() -> None:
    with pytest.raises(UnstorableTextError) as raised:
        check_storable({"input": {"\ud800": 1}}, "body")
    assert raised.value.field == "a key of body.input"
    assert "surrogate" in raised.value.problem


def test_a_deep_document_is_walked_without_recursion() -> None:
    document: object = "\x00"
    for _ in range(100_000):
        document = [document]
    with pytest.raises(UnstorableTextError):
        check_storable(document, "body")


def test_json_bodies_are_parsed_only_when_they_hold_an_escape() -> None:
    check_body(b'{"input": {"s": "plain"}}')  # no escape: not even parsed
    check_body(b'{"not json": ')  # left to the route's 400
    check_body(b'{"s": "\\\\u0000"}')  # an escaped backslash, then text: fine
    with pytest.raises(UnstorableTextError):
        check_body(b'{"input": {"s": "\\u0000"}}')
    with pytest.raises(UnstorableTextError):
        check_body(b'{"input": {"s": "\\uD800"}}')


def _scope(path: str = "/v1/executions", query: bytes = b"") -> dict[str, object]:
    return {"type": "http", "path": path, "query_string": query}


def test_the_path_and_every_query_parameter_are_checked() -> None:
    check_target(_scope(query=b"process=echo&status=running"))
    with pytest.raises(UnstorableTextError) as raised:
        check_target(_scope(query=b"status=running&process=ec%00ho"))
    assert raised.value.field == "query parameter 'process'"
    with pytest.raises(UnstorableTextError) as raised:
        check_target(_scope(path="/v1/processes/\x00"))
    assert raised.value.field == "the path"
    with pytest.raises(UnstorableTextError):
        check_target(_scope(query=b"na%00me=x"))
