"""Admin surfaces on PostgreSQL: process registration (API and file), body limit, revocation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from agent_ledger.infrastructure.auth.tokens import issue_token
from agent_ledger.infrastructure.settings import Settings
from tests.support.asgi_client import TestClient, serving

SECRET = "processes-secret-" + "x" * 32
ADMIN = {"Authorization": f"Bearer {issue_token(SECRET, 'ada', ['admin'])}"}
USER = {"Authorization": f"Bearer {issue_token(SECRET, 'user-a')}"}
TWO_STEPS = {
    "config": {"parallel_execution": False},
    "steps": [
        {"id": "first", "type": "agent_task", "agent": "echo", "input": {"q": "{{ input.q }}"}},
        {
            "id": "second",
            "type": "agent_task",
            "agent": "echo",
            "input": "{{ steps.first.output }}",
            "depends_on": ["first"],
        },
    ],
    "output": "{{ steps.second.output }}",
}


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with serving(settings) as (_, test_client):
        yield test_client


def test_an_admin_registers_a_process_and_a_changed_one_becomes_a_new_version(
    client: TestClient,
) -> None:
    first = client.put("/v1/processes/two-steps", json=TWO_STEPS, headers=ADMIN)
    again = client.put("/v1/processes/two-steps", json=TWO_STEPS, headers=ADMIN)
    changed = {**TWO_STEPS, "output": "{{ steps.first.output }}"}
    second = client.put("/v1/processes/two-steps", json=changed, headers=ADMIN)

    assert (first.status_code, first.json()["version"]) == (201, 1)
    assert (again.status_code, again.json()["version"]) == (200, 1)
    assert (second.status_code, second.json()["version"]) == (201, 2)
    listed = client.get("/v1/processes", headers=USER).json()
    assert {"name": "two-steps", "version": 2} in [
        {"name": p["name"], "version": p["version"]} for p in listed
    ]
    old = client.get("/v1/processes/two-steps", params={"version": 1}, headers=USER).json()
    assert old["definition"]["output"] == TWO_STEPS["output"]


def test_an_execution_runs_the_version_it_asked_for(client: TestClient) -> None:
    client.put("/v1/processes/pinned", json=TWO_STEPS, headers=ADMIN)
    changed = {**TWO_STEPS, "output": {"wrapped": "{{ steps.second.output }}"}}
    client.put("/v1/processes/pinned", json=changed, headers=ADMIN)

    started = client.post(
        "/v1/executions",
        headers=USER,
        json={"process": "pinned", "version": 1, "input": {"q": "hi"}},
    ).json()
    view = client.get(
        f"/v1/executions/{started['id']}", headers=USER, params={"after": started["position"]}
    ).json()

    assert started["version"] == 1
    assert view["process_version"] == 1


def test_only_admins_register_and_a_bad_definition_names_its_step(client: TestClient) -> None:
    refused = client.put("/v1/processes/mine", json=TWO_STEPS, headers=USER)
    broken = {
        **TWO_STEPS,
        "steps": [*TWO_STEPS["steps"][:1], {**TWO_STEPS["steps"][1], "depends_on": ["nope"]}],
    }
    invalid = client.put("/v1/processes/broken", json=broken, headers=ADMIN)

    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert invalid.status_code == 422
    assert "second" in invalid.json()["detail"]
    assert "nope" in invalid.json()["detail"]
    assert client.get("/v1/processes/broken", headers=USER).status_code == 422


def test_processes_apply_registers_a_yaml_file_and_rejects_a_broken_one(
    settings: Settings, tmp_path: Path, client: TestClient
) -> None:
    import yaml

    good = tmp_path / "from-file.yaml"
    good.write_text(yaml.safe_dump({"name": "from-file", **TWO_STEPS}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "bad", "steps": []}))
    command = [str(Path(sys.executable).parent / "agent-ledger"), "processes", "apply"]
    env = {
        **os.environ,
        "AGENT_LEDGER_DATABASE_URL": str(settings.database_url),
        "AGENT_LEDGER_JWT_SECRET": SECRET,
    }

    applied = subprocess.run(
        [*command, str(good)], env=env, capture_output=True, text=True, check=False, timeout=60
    )
    rejected = subprocess.run(
        [*command, str(bad)], env=env, capture_output=True, text=True, check=False, timeout=60
    )

    assert applied.returncode == 0, applied.stderr
    assert "from-file registered as version 1" in applied.stdout
    assert client.get("/v1/processes/from-file", headers=USER).json()["version"] == 1
    assert rejected.returncode != 0
    assert "step" in rejected.stderr.lower()


ALLOW = "AGENT_LEDGER_AGENT_URL_ALLOW"


def remote(url: str) -> dict[str, object]:
    """A two-step process whose second step calls an agent at `url`."""
    return {
        "steps": [
            {"id": "local", "type": "agent_task", "agent": "echo"},
            {"id": "remote", "type": "agent_task", "agent": {"url": url}, "depends_on": ["local"]},
        ]
    }


@pytest.fixture(scope="module")
def loopback_client(settings: Settings) -> Iterator[TestClient]:
    """The API of a process whose allow-list lets agents on loopback through."""
    allowing = settings.model_copy(update={"agent_url_allow": "127.0.0.0/8"})
    with serving(allowing, engine=False, projector=False) as (_, test_client):
        yield test_client


def test_an_agent_url_on_loopback_is_refused_naming_the_step_unless_allowed(
    client: TestClient, loopback_client: TestClient
) -> None:
    refused = client.put(
        "/v1/processes/loopback", json=remote("http://127.0.0.1:9/x"), headers=ADMIN
    )
    missing = client.get("/v1/processes/loopback", headers=USER)
    allowed = loopback_client.put(
        "/v1/processes/loopback", json=remote("http://127.0.0.1:9/x"), headers=ADMIN
    )

    assert refused.status_code == 422
    assert refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    assert problem["type"] == "/problems/agent-url-refused"
    assert problem["detail"].startswith("step 'remote': ")
    assert "127.0.0.1 is a loopback address" in problem["detail"]
    assert ALLOW in problem["detail"]
    assert missing.status_code == 422  # nothing was registered
    assert allowed.status_code == 201
    assert allowed.json()["definition"]["steps"][1]["agent"] == {"url": "http://127.0.0.1:9/x"}


def test_the_metadata_address_and_other_private_ranges_stay_refused_with_loopback_allowed(
    loopback_client: TestClient,
) -> None:
    for url, kind in (
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[::1]:9/x", "loopback"),
        ("http://10.0.0.1/x", "private"),
        ("http://[::ffff:169.254.169.254]/", "link-local"),
        ("http://0.0.0.0:9/x", "unspecified"),
    ):
        response = loopback_client.put("/v1/processes/metadata", json=remote(url), headers=ADMIN)
        assert response.status_code == 422, url
        assert response.json()["type"] == "/problems/agent-url-refused"
        assert f"a {kind} address" in response.json()["detail"], url


def test_credentials_in_an_agent_url_are_refused_and_not_echoed(
    loopback_client: TestClient,
) -> None:
    url = "http://ops-user:hunter2@127.0.0.1:9/x"

    response = loopback_client.put("/v1/processes/creds", json=remote(url), headers=ADMIN)

    assert response.status_code == 422
    assert response.json()["type"] == "/problems/agent-url-refused"
    assert "credentials" in response.json()["detail"]
    assert "hunter2" not in response.text
    assert "ops-user" not in response.text


def test_an_unknown_built_in_agent_is_refused_at_registration(client: TestClient) -> None:
    typo = {"steps": [{"id": "local", "type": "agent_task", "agent": "ecko"}]}

    response = client.put("/v1/processes/typo", json=typo, headers=ADMIN)

    assert response.status_code == 422
    problem = response.json()
    assert problem["type"] == "/problems/unknown-agent"
    assert problem["detail"].startswith("step 'local': no built-in agent is registered as 'ecko'")
    assert "(known: data, echo, optimization, summary, triage)" in problem["detail"]
    assert client.get("/v1/processes/typo", headers=USER).status_code == 422


def test_processes_apply_refuses_a_loopback_agent_unless_the_allow_list_has_it(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "loopback.json"
    path.write_text(json.dumps({"name": "applied-loopback", **remote("http://127.0.0.1:9/x")}))
    command = [str(Path(sys.executable).parent / "agent-ledger"), "processes", "apply", str(path)]
    env = {k: v for k, v in os.environ.items() if k != ALLOW} | {
        "AGENT_LEDGER_DATABASE_URL": str(settings.database_url),
        "AGENT_LEDGER_JWT_SECRET": SECRET,
        "COLUMNS": "1000",  # each message on one line
    }

    def apply(**extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, env=env | extra, capture_output=True, text=True, check=False, timeout=60
        )

    refused = apply()
    bad_setting = apply(**{ALLOW: "127.0.0.0/8,10.0.0.0/33"})
    applied = apply(**{ALLOW: "127.0.0.0/8"})

    assert refused.returncode != 0
    assert "step 'remote'" in refused.stderr
    assert "loopback" in refused.stderr
    assert bad_setting.returncode != 0
    assert ALLOW in bad_setting.stderr
    assert "10.0.0.0/33" in bad_setting.stderr
    assert applied.returncode == 0, applied.stderr
    assert "applied-loopback registered as version 1" in applied.stdout


def test_a_body_over_the_request_limit_is_refused_before_it_is_read(client: TestClient) -> None:
    body = b'{"process": "echo", "input": {"x": "' + b"y" * (1024 * 1024 + 10) + b'"}}'

    response = client.post(
        "/v1/executions", content=body, headers={**USER, "Content-Type": "application/json"}
    )

    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"] == "/problems/request-too-large"
    listed = client.get("/v1/executions", headers=USER).json()["items"]
    assert all(item["process"] != "echo" for item in listed)  # nothing was started


def test_a_revoked_token_is_refused_by_every_endpoint_and_a_newer_one_works(
    client: TestClient,
) -> None:
    old = {"Authorization": f"Bearer {issue_token(SECRET, 'revoked-user')}"}
    assert client.get("/v1/executions", headers=old).status_code == 200

    revoked = client.post("/v1/auth/revocations", json={"sub": "revoked-user"}, headers=ADMIN)
    revoked_at = datetime.fromisoformat(revoked.json()["revoked_at"]).timestamp()
    deadline = time.monotonic() + 3
    while time.time() < revoked_at + 1 and time.monotonic() < deadline:
        time.sleep(0.05)  # tokens carry whole seconds: the next one must be issued later
    fresh = {"Authorization": f"Bearer {issue_token(SECRET, 'revoked-user')}"}

    assert revoked.status_code == 201
    refused = client.get("/v1/executions", headers=old)
    assert refused.status_code == 401
    assert "revoked" in refused.json()["detail"]
    assert client.post("/v1/executions", json={"process": "echo"}, headers=old).status_code == 401
    assert client.get("/v1/executions", headers=fresh).status_code == 200
