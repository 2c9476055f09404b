"""People in the loop over the real server: an execution waits for a signal, holding no
worker; the signal API's refusals record nothing; the approval is in the hash chain, shown on
the tail, branches the process, and the exported bundle names who approved and verifies."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.support.server import Server, running_server, start
from tests.support.tokens import token
from tests.support.walking_skeleton import ends

pytestmark = pytest.mark.postgres

SECRET = "e2e-signals-secret-" + "s" * 32
SCHEMA = {
    "type": "object",
    "properties": {"approved": {"type": "boolean"}, "comment": {"type": "string"}},
    "required": ["approved"],
}


@pytest.fixture(scope="module")
def server(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(
        tmp_path_factory.mktemp("signals-e2e"),
        AGENT_LEDGER_DATABASE_URL=postgres_url,
        AGENT_LEDGER_JWT_SECRET=SECRET,
    ) as running:
        yield running


def register(server: Server, **wait: Any) -> str:
    """A process: draft, wait for `approval`, then publish or shelve on its `approved`."""
    name = f"review-{uuid.uuid4().hex[:8]}"
    before = wait.pop("before", [])
    document = {
        "name": name,
        "steps": [
            *before,
            {
                "id": "review",
                "type": "wait_for_signal",
                "signal": "approval",
                "depends_on": [s["id"] for s in before],
                "schema": SCHEMA,
                **wait,
            },
            {
                "id": "decide",
                "type": "gateway",
                "depends_on": ["review"],
                "routes": [
                    {"when": "steps.review.output.approved", "next": ["publish"]},
                    {"default": True, "next": ["shelve"]},
                ],
            },
            {"id": "publish", "type": "agent_task", "agent": "echo", "input": {"go": True}},
            {"id": "shelve", "type": "agent_task", "agent": "echo", "input": {"go": False}},
        ],
        "output": {"review": "{{ steps.review.output }}"},
    }
    admin = token(SECRET, "root", "admin")
    with server.client(admin) as client:
        response = client.put(f"/v1/processes/{name}", json=document)
    assert response.status_code == 201, response.text
    return name


def send(
    server: Server,
    token: str,
    execution_id: str,
    payload: Any,
    name: str = "approval",
    **headers: str,
) -> httpx.Response:
    with server.client(token) as client:
        return client.post(
            f"/v1/executions/{execution_id}/signals/{name}",
            json={"payload": payload},
            headers=headers,
        )


def events(server: Server, token: str, execution_id: str) -> list[dict[str, Any]]:
    with server.client(token) as client:
        body: list[dict[str, Any]] = client.get(f"/v1/executions/{execution_id}/events").json()[
            "items"
        ]
    return body


def follow_until(ws: Any, execution_id: str, kind: str) -> list[dict[str, Any]]:
    seen = []
    while True:
        message = json.loads(ws.recv(timeout=15))
        if message.get("execution_id") != execution_id:
            continue
        seen.append(message)
        if message["type"] == kind or ends(message, execution_id):
            return seen


def test_an_approval_is_refused_until_it_fits_then_recorded_once_and_branches(
    server: Server, tmp_path: Path
) -> None:
    process = register(server)
    owner = token(SECRET, "ann")
    url = server.url.replace("http", "ws", 1) + "/v1/stream"
    with connect(url, additional_headers={"Authorization": f"Bearer {owner}"}) as ws:
        execution_id = start(server, owner, {"process": process, "input": {}})
        awaited = follow_until(ws, execution_id, "signal_awaited")[-1]
        assert awaited["type"] == "signal_awaited"
        assert awaited["data"]["signal"] == "approval"
        with server.client(owner) as client:
            view = client.get(
                f"/v1/executions/{execution_id}", params={"after": awaited["position"]}
            ).json()
            listed = client.get("/v1/executions", params={"status": "waiting"}).json()
        assert view["status"] == "waiting"
        review = next(step for step in view["steps"] if step["id"] == "review")
        assert (review["status"], review["awaiting"]) == ("waiting", "approval")
        assert execution_id in [item["id"] for item in listed["items"]]
        recorded = len(events(server, owner, execution_id))

        auditor = token(SECRET, "audrey", "auditor")
        assert send(server, auditor, execution_id, {"approved": True}).status_code == 403
        assert (
            send(server, token(SECRET, "bob"), execution_id, {"approved": True}).status_code == 404
        )
        unfit = send(server, owner, execution_id, {"approved": "yes"})
        assert unfit.status_code == 422
        assert unfit.headers["content-type"] == "application/problem+json"
        assert "'yes' is not of type 'boolean'" in unfit.json()["detail"]
        assert send(server, owner, execution_id, {}, name="other").status_code == 409
        assert len(events(server, owner, execution_id)) == recorded  # nothing was stored

        payload = {"approved": True, "comment": "ship it"}
        sent = send(server, owner, execution_id, payload, **{"Idempotency-Key": "ok-1"})
        assert sent.status_code == 202, sent.text
        again = send(server, owner, execution_id, payload, **{"Idempotency-Key": "ok-1"})
        assert again.status_code == 202
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json()["position"] == sent.json()["position"]
        rest = follow_until(ws, execution_id, "execution_completed")

    types = [m["type"] for m in rest]
    assert types.count("signal_received") == 1
    received = next(m for m in rest if m["type"] == "signal_received")
    assert received["data"]["actor"] == "ann"
    assert received["data"]["payload"] == payload
    assert rest[-1]["data"]["output"] == {"review": payload}
    steps = {m["data"]["step_id"] for m in rest if m["type"] == "step_completed"}
    assert "publish" in steps
    assert "shelve" not in steps
    assert send(server, owner, execution_id, payload).status_code == 409  # finished

    admin = token(SECRET, "root", "admin")
    with server.client(admin) as client:
        bundle = client.get(f"/v1/executions/{execution_id}/export")
    path = tmp_path / "approved.jsonl"
    path.write_bytes(bundle.content)
    verified = server.cli("audit", "verify", str(path))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("ok")
    assert '"actor":"ann"' in bundle.text.replace(" ", "")


def test_a_signal_sent_before_its_step_is_ready_is_kept(server: Server) -> None:
    process = register(server, before=[{"id": "pause", "type": "timer", "seconds": 0.5}])
    owner = token(SECRET, "cat")
    execution_id = start(server, owner, {"process": process, "input": {}})
    assert send(server, owner, execution_id, {"approved": False}).status_code == 202
    url = server.url.replace("http", "ws", 1) + f"/v1/stream?after=0&execution_id={execution_id}"
    with connect(url, additional_headers={"Authorization": f"Bearer {owner}"}) as ws:
        history = follow_until(ws, execution_id, "execution_completed")
    types = [m["type"] for m in history]
    assert types.index("signal_received") < types.index("signal_awaited")
    assert history[-1]["data"]["output"] == {"review": {"approved": False}}


def test_a_wait_past_its_timeout_times_out_and_its_on_error_applies(server: Server) -> None:
    process = register(server, timeout_seconds=0.3, on_error="skip_step")
    owner = token(SECRET, "dan")
    url = server.url.replace("http", "ws", 1) + "/v1/stream"
    with connect(url, additional_headers={"Authorization": f"Bearer {owner}"}) as ws:
        execution_id = start(server, owner, {"process": process, "input": {}})
        history = follow_until(ws, execution_id, "execution_completed")
    types = [m["type"] for m in history]
    assert types.index("signal_awaited") < types.index("step_timed_out")
    skipped = [m["data"]["step_id"] for m in history if m["type"] == "step_skipped"]
    assert "review" in skipped


def test_the_demo_approves_the_sample_process(server: Server) -> None:
    demo = server.cli("demo", "--url", server.url, "--approve")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "waits for signal 'approval'" in demo.stdout
    assert "'approval' from demo-user" in demo.stdout
    assert "The recommendation was approved." in demo.stdout


def test_two_waits_on_one_name_take_two_signals_in_order(server: Server) -> None:
    name = f"twice-{uuid.uuid4().hex[:8]}"
    document = {
        "name": name,
        "steps": [
            {"id": "first", "type": "wait_for_signal", "signal": "note"},
            {"id": "second", "type": "wait_for_signal", "signal": "note", "depends_on": ["first"]},
        ],
        "output": ["{{ steps.first.output.n }}", "{{ steps.second.output.n }}"],
    }
    with server.client(token(SECRET, "root", "admin")) as client:
        assert client.put(f"/v1/processes/{name}", json=document).status_code == 201
    owner = token(SECRET, "eve")
    execution_id = start(server, owner, {"process": name, "input": {}})
    for n in (1, 2):
        assert send(server, owner, execution_id, {"n": n}, name="note").status_code == 202
    assert send(server, owner, execution_id, {"n": 3}, name="note").status_code == 409
    url = server.url.replace("http", "ws", 1) + f"/v1/stream?after=0&execution_id={execution_id}"
    with connect(url, additional_headers={"Authorization": f"Bearer {owner}"}) as ws:
        history = follow_until(ws, execution_id, "execution_completed")
    assert history[-1]["data"]["output"] == [1, 2]
