"""The OpenAPI document names every problem a route can answer, as problem+json `Problem`s,
and what the service answers before any route runs keeps to it.

Whether the running service keeps to it everywhere is the schemathesis fuzz's job
(tests/e2e/test_api_fuzz.py); this checks what the document says.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI

from agent_ledger.infrastructure.api.app import create_app
from agent_ledger.infrastructure.api.problem_responses import Problem
from agent_ledger.infrastructure.settings import Settings
from tests.support.asgi_client import TestClient

PROBLEM_CONTENT = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}

# every route behind a token may answer 401, 422 (invalid request or text) and 503 (no database)
EXPECTED = {
    ("get", "/healthz"): {422},
    ("get", "/readyz"): {422, 503},
    ("get", "/metrics"): {422, 503},
    ("put", "/v1/processes/{name}"): {400, 401, 403, 413, 422, 503},
    ("get", "/v1/processes"): {401, 422, 503},
    ("get", "/v1/processes/{name}"): {401, 422, 503},
    ("post", "/v1/executions"): {400, 401, 403, 409, 413, 422, 503},
    ("get", "/v1/executions"): {400, 401, 422, 503},
    ("get", "/v1/executions/{execution_id}"): {401, 404, 422, 503},
    ("get", "/v1/executions/{execution_id}/events"): {401, 404, 422, 503},
    ("post", "/v1/executions/{execution_id}/cancel"): {400, 401, 404, 409, 413, 422, 503},
    ("get", "/v1/executions/{execution_id}/state"): {400, 401, 404, 422, 503},
    ("get", "/v1/executions/{execution_id}/verify"): {401, 404, 422, 503},
    ("get", "/v1/executions/{execution_id}/export"): {401, 404, 422, 503},
    ("get", "/v1/audit/reads"): {401, 403, 422, 503},
    ("get", "/v1/metrics/agents"): {401, 422, 503},
    ("get", "/v1/metrics/tools"): {401, 422, 503},
    ("get", "/v1/metrics/processes"): {401, 422, 503},
    ("get", "/v1/metrics/users"): {401, 422, 503},
    ("get", "/v1/stream/sse"): {401, 403, 404, 422, 429, 503},
    ("post", "/v1/auth/revocations"): {400, 401, 403, 413, 422, 503},
    ("get", "/v1/admin/parked"): {401, 403, 422, 503},
    ("put", "/v1/tools/{name}"): {400, 401, 403, 409, 413, 422, 503},
    ("get", "/v1/tools"): {401, 422, 503},
    ("get", "/v1/tools/{name}"): {401, 404, 422, 503},
    ("delete", "/v1/tools/{name}"): {401, 403, 404, 409, 422, 503},
    ("post", "/v1/executions/{execution_id}/signals/{name}"): {
        400,
        401,
        403,
        404,
        409,
        413,
        422,
        503,
    },
    ("post", "/v1/executions/resume"): {400, 401, 403, 413, 422, 503},
    ("post", "/v1/executions/{execution_id}/resume"): {400, 401, 403, 404, 409, 413, 422, 503},
    ("post", "/v1/executions/{execution_id}/fork"): {400, 401, 403, 404, 413, 422, 503},
    ("put", "/v1/schedules/{name}"): {400, 401, 409, 413, 422, 503},
    ("get", "/v1/schedules"): {401, 422, 503},
    ("get", "/v1/schedules/{name}"): {401, 404, 422, 503},
    ("delete", "/v1/schedules/{name}"): {401, 404, 409, 422, 503},
    ("post", "/v1/schedules/{name}/trigger"): {401, 404, 409, 422, 503},
    ("put", "/v1/webhooks/{name}"): {400, 401, 413, 422, 503},
    ("get", "/v1/webhooks"): {401, 422, 503},
    ("get", "/v1/webhooks/{name}"): {401, 404, 422, 503},
    ("delete", "/v1/webhooks/{name}"): {401, 404, 422, 503},
    ("get", "/v1/webhooks/{name}/deliveries"): {401, 404, 422, 503},
    ("post", "/v1/webhooks/{name}/redeliver"): {400, 401, 404, 413, 422, 503},
}
NOT_PROBLEMS = {("get", "/readyz", "503")}  # readiness answers with its own report


@pytest.fixture(scope="module")
def app() -> FastAPI:
    """The API without its lifespan: documents and routing, no database."""
    return create_app(Settings(jwt_secret="a-secret-of-at-least-32-characters!"))


@pytest.fixture(scope="module")
def document(app: FastAPI) -> dict[str, Any]:
    return app.openapi()


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }


def test_each_operation_documents_the_problems_it_can_answer(document: dict[str, Any]) -> None:
    documented = {
        key: {int(status) for status in operation["responses"] if int(status) >= 400}
        for key, operation in operations(document).items()
    }

    assert documented == EXPECTED


def test_every_problem_is_problem_json_of_the_problem_schema(document: dict[str, Any]) -> None:
    checked = 0
    for (method, path), operation in operations(document).items():
        for status, response in operation["responses"].items():
            if int(status) < 400 or (method, path, status) in NOT_PROBLEMS:
                continue
            assert response["content"] == PROBLEM_CONTENT, (method, path, status)
            assert response["description"]
            checked += 1

    assert checked == sum(len(s) for s in EXPECTED.values()) - len(NOT_PROBLEMS)
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_the_problem_schema_requires_the_rfc_fields_and_allows_others(
    document: dict[str, Any],
) -> None:
    schema = document["components"]["schemas"]["Problem"]

    assert schema == Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    assert set(schema["required"]) == {"type", "title", "status", "detail"}
    assert schema["additionalProperties"] is True
    assert {"errors", "field", "limit", "position"} <= set(schema["properties"])
    assert all("null" not in str(p) for p in schema["properties"].values())


def test_unauthenticated_and_unavailable_answers_document_their_headers(
    document: dict[str, Any],
) -> None:
    cancel = document["paths"]["/v1/executions/{execution_id}/cancel"]["post"]["responses"]

    assert set(cancel["401"]["headers"]) == {"WWW-Authenticate"}
    assert set(cancel["503"]["headers"]) == {"Retry-After"}


EXECUTION = "/v1/executions/00000000-0000-0000-0000-000000000001"


@pytest.mark.parametrize(
    ("method", "path", "template"),
    [
        ("OPTIONS", "/v1/processes/echo", "/v1/processes/{name}"),
        ("DELETE", "/v1/executions", "/v1/executions"),
        ("PUT", f"{EXECUTION}/cancel", "/v1/executions/{execution_id}/cancel"),
    ],
)
def test_a_method_the_path_does_not_take_is_a_405_naming_every_one_it_documents(
    app: FastAPI, document: dict[str, Any], method: str, path: str, template: str
) -> None:
    response = TestClient(app).request(method, path)  # refused before any route runs

    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/method-not-allowed"
    documented = sorted(m.upper() for m in document["paths"][template])
    assert response.headers["allow"].split(", ") == documented
