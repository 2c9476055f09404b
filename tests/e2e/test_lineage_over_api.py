"""Operator control over the real server: resume a failed or cancelled execution where it
stopped (one resume wins a race), fork a new execution from a step with or without input."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.support.server import Server, running_server, start
from tests.support.switchable_agent import SwitchableAgent as Flaky
from tests.support.switchable_agent import switchable_agent
from tests.support.tokens import token
from tests.support.waiting import wait_until

pytestmark = pytest.mark.postgres

SECRET = "e2e-lineage-secret-" + "l" * 32
TERMINAL = {"completed", "failed", "cancelled", "timed_out"}


@pytest.fixture(scope="module")
def flaky() -> Iterator[Flaky]:
    """An HTTP agent that is unavailable (HTTP 503) while `down` is set."""
    with switchable_agent("middle") as agent:
        agent.down.set()
        yield agent


@pytest.fixture(scope="module")
def server(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(
        tmp_path_factory.mktemp("lineage-e2e"),
        AGENT_LEDGER_DATABASE_URL=postgres_url,
        AGENT_LEDGER_JWT_SECRET=SECRET,
        AGENT_LEDGER_AGENT_URL_ALLOW="127.0.0.0/8",
    ) as running:
        yield running


def register(server: Server, flaky: Flaky, **retry: Any) -> str:
    """first → side → middle (the flaky agent) → last, one at a time."""
    name = f"chain-{uuid.uuid4().hex[:8]}"
    echo = "echo"
    document = {
        "name": name,
        "config": {"parallel_execution": False},
        "steps": [
            {"id": "first", "type": "agent_task", "agent": echo, "input": {"q": "{{ input.q }}"}},
            {"id": "side", "type": "agent_task", "agent": echo, "depends_on": ["first"]},
            {
                "id": "middle",
                "type": "agent_task",
                "agent": {"url": flaky.url},
                "depends_on": ["side"],
                "input": {"from": "{{ steps.first.output.q }}"},
                "retry": {"max_attempts": 1, **retry},
            },
            {
                "id": "last",
                "type": "agent_task",
                "agent": echo,
                "depends_on": ["middle"],
                "input": {"m": "{{ steps.middle.output }}"},
            },
        ],
        "output": "{{ steps.last.output }}",
    }
    with server.client(token(SECRET, "root", "admin")) as client:
        assert client.put(f"/v1/processes/{name}", json=document).status_code == 201
    return name


def finished(server: Server, owner: str, execution_id: str, after: int = 0) -> dict[str, Any]:
    with server.client(owner) as client:
        return wait_until(
            lambda: (
                (
                    view := client.get(
                        f"/v1/executions/{execution_id}", params={"after": after}
                    ).json()
                )["status"]
                in TERMINAL
                and view
            ),
            timeout=20,
            what=f"execution {execution_id} to finish",
        )


def events(server: Server, owner: str, execution_id: str) -> list[dict[str, Any]]:
    with server.client(owner) as client:
        page = client.get(f"/v1/executions/{execution_id}/events").json()
    assert page["next_after"] is None
    return list(page["items"])


def step_runs(server: Server, owner: str, execution_id: str) -> Counter[str]:
    """How many attempts of each step were started."""
    history = events(server, owner, execution_id)
    return Counter(m["data"]["step_id"] for m in history if m["type"] == "step_started")


def test_resuming_after_a_failed_middle_step_runs_only_it_and_what_follows(
    server: Server, flaky: Flaky
) -> None:
    owner = token(SECRET, "ops")
    process = register(server, flaky)
    flaky.down.set()
    execution_id = start(server, owner, {"process": process, "input": {"q": "x"}})
    assert finished(server, owner, execution_id)["status"] == "failed"
    flaky.down.clear()

    def resume() -> httpx.Response:
        with server.client(owner) as client:
            return client.post(f"/v1/executions/{execution_id}/resume", json={"reason": "fixed"})

    with ThreadPoolExecutor(2) as pool:
        answers = sorted(pool.map(lambda _: resume(), range(2)), key=lambda r: r.status_code)
    assert [r.status_code for r in answers] == [202, 409]  # one resume wins the race
    done = finished(server, owner, execution_id, after=answers[0].json()["position"])

    assert done["status"] == "completed"
    assert done["resumes"] == 1
    assert done["output"] == {"m": {"middle": {"from": "x"}}}
    assert step_runs(server, owner, execution_id) == {"first": 1, "side": 1, "middle": 2, "last": 1}
    assert resume().status_code == 409  # completed


def test_a_cancelled_execution_resumes_and_forks_run_from_their_step(
    server: Server, flaky: Flaky
) -> None:
    owner = token(SECRET, "ops2")
    process = register(server, flaky)
    flaky.down.clear()
    parent = start(server, owner, {"process": process, "input": {"q": "p"}})
    assert finished(server, owner, parent)["status"] == "completed"

    def fork(from_step: str, **body: Any) -> dict[str, Any]:
        with server.client(owner) as client:
            response = client.post(
                f"/v1/executions/{parent}/fork", json={"from_step": from_step, **body}
            )
        assert response.status_code == 201, response.text
        return dict(response.json())

    from_first = fork("first", input={"q": "new"})
    from_middle = fork("middle")
    from_last = fork("last")
    assert from_first["copied"] == []
    assert sorted(from_middle["copied"]) == ["first", "side"]
    assert sorted(from_last["copied"]) == ["first", "middle", "side"]
    runs = {}
    for child in (from_first, from_middle, from_last):
        view = finished(server, owner, child["id"])
        assert view["status"] == "completed"
        runs[child["id"]] = (view["output"], step_runs(server, owner, child["id"]))
    assert runs[from_first["id"]] == (
        {"m": {"middle": {"from": "new"}}},
        {"first": 1, "side": 1, "middle": 1, "last": 1},
    )
    assert runs[from_middle["id"]] == ({"m": {"middle": {"from": "p"}}}, {"middle": 1, "last": 1})
    assert runs[from_last["id"]][1] == {"last": 1}
    with server.client(owner) as client:
        history = events(server, owner, from_middle["id"])
        forked = next(m for m in history if m["type"] == "execution_forked")
        assert forked["data"]["parent_id"] == parent
        assert forked["data"]["from_step"] == "middle"
        family = client.get(f"/v1/executions/{parent}").json()
        assert set(family["children"]) == {c["id"] for c in (from_first, from_middle, from_last)}
        child = client.get(f"/v1/executions/{from_middle['id']}").json()
        assert (child["parent_id"], child["forked_from_step"]) == (parent, "middle")
        assert [s["id"] for s in child["steps"] if s["copied"]] == ["first", "side"]
        verified = client.get(f"/v1/executions/{parent}/verify").json()
        assert forked["data"]["parent_chain_head"] == verified["head_hash"]
        assert (
            client.post(f"/v1/executions/{parent}/fork", json={"from_step": "nope"}).status_code
            == 422
        )

    patient = register(server, flaky, max_attempts=3, initial_interval=600)
    flaky.down.set()  # middle fails and waits 10 minutes to retry: cancel it meanwhile
    cancelled = start(server, owner, {"process": patient, "input": {"q": "c"}})
    with server.client(owner) as client:
        wait_until(
            lambda: (
                step_runs(server, owner, cancelled)["middle"] == 1
                and "step_retrying" in [m["type"] for m in events(server, owner, cancelled)]
            ),
            what="middle to wait for its retry",
        )
        assert client.post(f"/v1/executions/{cancelled}/cancel").status_code == 202
        assert finished(server, owner, cancelled)["status"] == "cancelled"
        flaky.down.clear()
        resumed = client.post(f"/v1/executions/{cancelled}/resume")
        assert resumed.status_code == 202
    after = resumed.json()["position"]
    assert finished(server, owner, cancelled, after=after)["status"] == "completed"
    assert step_runs(server, owner, cancelled)["middle"] == 2
    with server.client(token(SECRET, "intruder")) as client:
        assert (
            client.post(f"/v1/executions/{parent}/fork", json={"from_step": "last"}).status_code
            == 404
        )
        assert client.post(f"/v1/executions/{parent}/resume").status_code == 404
