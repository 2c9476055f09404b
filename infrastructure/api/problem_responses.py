"""The problem+json answers of each route, as the OpenAPI document shows them.

Routers and routes declare theirs with `problems(401, 404, ...)`; every one is an
`application/problem+json` body of the `Problem` schema, which `install` adds to the
document's components.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from agent_ledger.infrastructure.api.errors import PROBLEM

REF_TEMPLATE = "#/components/schemas/{model}"
PROBLEM_REF = REF_TEMPLATE.format(model="Problem")


def _without_defaults(schema: dict[str, Any]) -> None:
    """The optional fields are absent when unused, never null: no `default: null` shown."""
    for field in schema.get("properties", {}).values():
        field.pop("default", None)


class Problem(BaseModel):
    """An error, as RFC 9457 describes it; some problems add fields of their own."""

    model_config = ConfigDict(extra="allow", title="Problem", json_schema_extra=_without_defaults)

    type: str = Field(description="`/problems/<kind>`, stable: branch on it")
    title: str = Field(description="a short summary of the kind of problem")
    status: int = Field(description="the HTTP status code")
    detail: str = Field(description="what went wrong with this request")
    # present only in the problems that name them, never null
    errors: list[dict[str, Any]] | SkipJsonSchema[None] = Field(
        default=None, description="invalid-request, malformed-json: each invalid parameter"
    )
    field: str | SkipJsonSchema[None] = Field(
        default=None, description="invalid-text: where the text was"
    )
    limit: int | SkipJsonSchema[None] = Field(
        default=None, description="input-too-large: the limit in bytes"
    )
    position: int | SkipJsonSchema[None] = Field(
        default=None, description="projection-lagging: how far the read model has got"
    )


_DESCRIPTIONS = {
    400: "Malformed JSON, a cursor this API did not return, or parameters that exclude each "
    "other (`malformed-json`, `invalid-cursor`, `invalid-request`)",
    401: "No bearer token, or one that is invalid, expired or revoked (`unauthenticated`)",
    403: "The token's roles do not allow this (`forbidden`)",
    404: "No such execution, or another user's (`not-found`)",
    409: "The execution does not allow this now, it changed meanwhile, or the idempotency "
    "key came with another request (`conflict`, `concurrent-change`, "
    "`idempotency-key-reused`)",
    413: "The body, or the execution's input, is larger than allowed (`request-too-large`, "
    "`input-too-large`)",
    422: "A parameter or the body is invalid: out of range, an unknown process or agent, a "
    "bad definition, text with NUL or lone surrogates (`invalid-request`, `invalid-text`, "
    "`unknown-process`, `invalid-process`, `invalid-range`, ...)",
    429: "Too many open subscriptions for this user (`too-many-subscriptions`)",
    503: "The database cannot be reached, or a read model has not reached `after` in time: "
    "retry (`store-unavailable` with `Retry-After`, `projection-lagging`)",
}

_HEADERS = {
    401: {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
    503: {
        "Retry-After": {
            "description": "seconds to wait, when the database cannot be reached",
            "schema": {"type": "integer"},
        }
    },
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a router or route that may answer these problems."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        response: dict[str, Any] = {
            "description": _DESCRIPTIONS[status],
            "content": {PROBLEM: {"schema": {"$ref": PROBLEM_REF}}},
        }
        if status in _HEADERS:
            response["headers"] = _HEADERS[status]
        responses[status] = response
    return responses


AUTHENTICATED = problems(401, 422, 503)
"""What any route behind a token may answer: no valid token, an invalid request, no database."""


def install(app: FastAPI) -> None:
    """Add the `Problem` schema to the app's OpenAPI document, which the responses refer to."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            schemas["Problem"] = Problem.model_json_schema(ref_template=REF_TEMPLATE)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]
