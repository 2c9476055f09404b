"""Audit on real PostgreSQL: time travel, attribution, tamper evidence, exports, encryption."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from agent_ledger.application.audit import Verification
from agent_ledger.infrastructure.audit.service import verify_store
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.persistence import EVENTS_TABLE
from tests.support import asgi_client, tokens
from tests.support.asgi_client import TestClient, receive_json
from tests.support.walking_skeleton import assert_problem, ends

pytestmark = pytest.mark.postgres

SECRET = "audit-integration-secret-" + "s" * 32
SIGNING_KEY = "audit-integration-signing-key-0123456789"
CIPHER_KEY = "kVJ8g0bmGkz0sHq1JpTq1d3t6zt0l3VwqkS7l2Xn9uI="  # 32 bytes, base64
CLI = str(Path(sys.executable).with_name("agent-ledger"))


bearer = partial(tokens.bearer, SECRET)

USER_A, USER_B = bearer("user-a"), bearer("user-b")
AUDITOR, ADMIN = bearer("aud-1", "auditor"), bearer("boss", "admin")


@contextmanager
def serving(settings: Settings) -> Iterator[TestClient]:
    with asgi_client.serving(settings) as (_, client):
        yield client


@pytest.fixture(scope="module")
def settings(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=postgres_url,
        jwt_secret=SECRET,
        audit_signing_key=SIGNING_KEY,
        data_dir=tmp_path_factory.mktemp("data"),
    )


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with serving(settings) as running:
        yield running


def run_echo(client: TestClient, headers: dict[str, str], **extra: str) -> str:
    """Start an echo execution and wait, on the live tail, for its end."""
    body = {"process": "echo", "input": {"keep": "me", "n": 1}}
    response = client.post("/v1/executions", json=body, headers={**headers, **extra})
    assert response.status_code == 201, response.text
    execution_id: str = response.json()["id"]
    query = f"/v1/stream?after=0&execution_id={execution_id}"
    with client.websocket_connect(query, headers=headers) as ws:
        while not ends(receive_json(ws, timeout=20), execution_id):
            pass
    return execution_id


def history(client: TestClient, execution_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/executions/{execution_id}/events", headers=USER_A)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AGENT_LEDGER_DATABASE_URL": str(settings.database_url),
        "AGENT_LEDGER_JWT_SECRET": SECRET,
        "AGENT_LEDGER_AUDIT_SIGNING_KEY": SIGNING_KEY,
        "AGENT_LEDGER_DATA_DIR": str(settings.data_dir),
    }
    return subprocess.run(
        [CLI, "audit", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@contextmanager
def as_database_owner(url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection that bypasses the append-only triggers, as only the owner could."""
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("SET session_replication_role = replica")
        yield connection


def bulk_verification(settings: Settings, execution_id: str, workers: int = 1) -> Verification:
    """The store-wide verifier's verdict on one execution."""
    found = [
        v for v in verify_store(settings, workers=workers) if str(v.execution_id) == execution_id
    ]
    assert len(found) == 1, found
    return found[0]


def assert_same_verdict(bulk: Verification, body: dict[str, Any]) -> None:
    """The bulk verifier says what `GET /verify` says."""
    assert bulk.ok is body["ok"]
    assert bulk.verdict.events == body["events"]
    broken = bulk.verdict.broken
    if body["broken"] is None:
        assert broken is None
    else:
        assert broken is not None
        assert (broken.version, broken.reason) == (
            body["broken"]["version"],
            body["broken"]["reason"],
        )


def test_an_auditor_replays_any_execution_and_it_verifies(client: TestClient) -> None:
    execution_id = run_echo(client, USER_A)

    response = client.get(f"/v1/executions/{execution_id}/verify", headers=AUDITOR)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is True
    assert body["broken"] is None
    assert body["events"] == body["head_version"] == len(history(client, execution_id))


def test_the_store_wide_verifier_agrees_with_the_api_in_parallel_processes(
    client: TestClient, settings: Settings
) -> None:
    execution_id = run_echo(client, USER_A)

    body = client.get(f"/v1/executions/{execution_id}/verify", headers=AUDITOR).json()
    assert body["ok"] is True
    assert_same_verdict(bulk_verification(settings, execution_id, workers=2), body)


def test_state_at_a_version_or_time_is_rebuilt_from_the_events(client: TestClient) -> None:
    execution_id = run_echo(client, USER_A)
    events = history(client, execution_id)
    base = f"/v1/executions/{execution_id}/state"

    first = client.get(base, params={"version": 1}, headers=AUDITOR).json()
    assert (first["version"], first["status"]) == (1, "pending")
    assert first["steps"]["echo"]["status"] == "pending"
    last = client.get(base, headers=USER_A).json()
    assert (last["version"], last["status"]) == (len(events), "completed")
    assert last["output"] == {"keep": "me", "n": 1}
    at = client.get(base, params={"at": events[1]["timestamp"]}, headers=AUDITOR).json()
    assert at["version"] == 2
    assert at["chain_head"] == events[1]["data"]["hash"]
    too_far = client.get(base, params={"version": 999}, headers=AUDITOR)
    assert_problem(too_far, 404, "not-found")
    both = client.get(base, params={"version": 1, "at": events[0]["timestamp"]}, headers=AUDITOR)
    assert_problem(both, 400, "invalid-request")


@pytest.mark.parametrize("path", ["events", "state", "verify", "export"])
def test_a_user_cannot_read_another_users_history_state_verification_or_export(
    client: TestClient, path: str
) -> None:
    execution_id = run_echo(client, USER_A)

    assert client.get(f"/v1/executions/{execution_id}/{path}", headers=USER_A).status_code == 200
    response = client.get(f"/v1/executions/{execution_id}/{path}", headers=USER_B)
    assert_problem(response, 404, "not-found")


def test_events_record_who_caused_them_and_the_requests_correlation_id(
    client: TestClient,
) -> None:
    execution_id = run_echo(client, USER_A, **{"X-Correlation-ID": "corr-42"})
    events = history(client, execution_id)

    started, *engine = events
    assert (started["data"]["caused_by"], started["data"]["correlation_id"]) == (
        "user:user-a",
        "corr-42",
    )
    assert all(e["data"]["caused_by"].startswith("worker:") for e in engine), engine
    assert {e["data"]["correlation_id"] for e in engine} <= {"corr-42", execution_id, None}


def test_auditors_reads_are_logged_and_only_an_admin_lists_them(client: TestClient) -> None:
    execution_id = run_echo(client, USER_A)
    correlation = {"X-Correlation-ID": f"audit-{uuid.uuid4().hex}"}
    for path in ("events", "state", "verify", "export"):
        response = client.get(
            f"/v1/executions/{execution_id}/{path}", headers={**AUDITOR, **correlation}
        )
        assert response.status_code == 200, response.text

    listed = client.get(
        "/v1/audit/reads", params={"execution_id": execution_id}, headers=ADMIN
    ).json()["items"]
    mine = [r for r in listed if r["correlation_id"] == correlation["X-Correlation-ID"]]
    assert [r["action"] for r in mine] == ["history", "state", "verify", "export"]
    assert {r["actor"] for r in mine} == {"auditor:aud-1"}
    assert_problem(client.get("/v1/audit/reads", headers=AUDITOR), 403, "forbidden")


def test_an_event_altered_behind_the_apps_back_is_named_by_the_api_and_offline(
    client: TestClient, settings: Settings, postgres_url: str, tmp_path: Path
) -> None:
    execution_id = run_echo(client, USER_A)
    with as_database_owner(postgres_url) as owner:
        changed = owner.execute(
            f"UPDATE {EVENTS_TABLE} SET state = convert_to(replace(convert_from(state, 'UTF8'),"
            ' \'"keep":"me"\', \'"keep":"you"\'), \'UTF8\') '
            "WHERE originator_id = %s AND originator_version = 1",
            (execution_id,),
        ).rowcount
    assert changed == 1

    body = client.get(f"/v1/executions/{execution_id}/verify", headers=AUDITOR).json()
    assert body["ok"] is False
    assert body["broken"]["version"] == 1
    assert "altered" in body["broken"]["reason"]
    assert_same_verdict(bulk_verification(settings, execution_id), body)
    bundle = tmp_path / "tampered.jsonl"
    assert cli(settings, "export", execution_id, "-o", str(bundle)).returncode == 0
    offline = cli(settings, "verify", str(bundle))
    assert offline.returncode == 1
    assert "BROKEN at line 2" in offline.stdout, offline.stdout
    whole_store = cli(settings, "verify-store")
    assert whole_store.returncode == 1
    assert f"BROKEN {execution_id} at version 1" in whole_store.stdout, whole_store.stdout


def test_deleting_the_newest_events_is_caught_by_the_signed_checkpoint(
    client: TestClient, settings: Settings, postgres_url: str, tmp_path: Path
) -> None:
    execution_id = run_echo(client, USER_A)
    signed = cli(settings, "checkpoint")
    assert signed.returncode in (0, 1), signed.stderr  # other tests leave tampered chains
    assert f"NOT SIGNED {execution_id}" not in signed.stderr
    bundle_before = tmp_path / "before.jsonl"
    assert cli(settings, "export", execution_id, "-o", str(bundle_before)).returncode == 0
    assert cli(settings, "verify", str(bundle_before)).returncode == 0
    with as_database_owner(postgres_url) as owner:
        owner.execute(
            f"DELETE FROM {EVENTS_TABLE} WHERE originator_id = %s AND originator_version > 3",
            (execution_id,),
        )

    body = client.get(f"/v1/executions/{execution_id}/verify", headers=AUDITOR).json()
    assert body["ok"] is False
    assert "deleted" in body["broken"]["reason"]
    assert body["checkpoint"]["signature_valid"] is True
    bulk = bulk_verification(settings, execution_id)
    assert_same_verdict(bulk, body)
    assert bulk.checkpoint_authentic is True
    bundle = tmp_path / "after.jsonl"
    assert cli(settings, "export", execution_id, "-o", str(bundle)).returncode == 0
    offline = cli(settings, "verify", str(bundle))
    assert offline.returncode == 1
    assert "deleted" in offline.stdout, offline.stdout


def test_the_application_role_cannot_update_or_delete_events_or_audit_records(
    client: TestClient, postgres_url: str
) -> None:
    run_echo(client, USER_A)
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        for table in (EVENTS_TABLE, "audit_reads", "audit_checkpoints"):
            for statement in (f"UPDATE {table} SET {_column(table)}", f"DELETE FROM {table}"):
                with pytest.raises(psycopg.Error, match="append-only"):
                    connection.execute(statement.encode())
        remaining = connection.execute(f"SELECT count(*) FROM {EVENTS_TABLE}").fetchone()
    assert remaining is not None
    assert remaining[0] > 0


def _column(table: str) -> str:
    return {"audit_reads": "actor = actor", "audit_checkpoints": "hash = hash"}.get(
        table, "state = state"
    )


def test_with_a_cipher_key_payloads_are_unreadable_in_the_database_yet_served_and_verified(
    postgres_admin: str, tmp_path: Path
) -> None:
    name = f"agent_ledger_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"'.encode())
    url = sa.make_url(postgres_admin).set(database=name).render_as_string(hide_password=False)
    settings = Settings(
        database_url=url, jwt_secret=SECRET, cipher_key=CIPHER_KEY, data_dir=tmp_path
    )
    try:
        with serving(settings) as client:
            execution_id = run_echo(client, USER_A)
            assert history(client, execution_id)[0]["data"]["input"] == {"keep": "me", "n": 1}
            verified = client.get(f"/v1/executions/{execution_id}/verify", headers=AUDITOR)
            assert verified.json()["ok"] is True
        assert_same_verdict(bulk_verification(settings, execution_id), verified.json())
        with psycopg.connect(url) as connection:
            states = [bytes(r[0]) for r in connection.execute(f"SELECT state FROM {EVENTS_TABLE}")]
        assert states
        assert not any(b"keep" in s or b"user-a" in s for s in states)
    finally:
        with psycopg.connect(postgres_admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
