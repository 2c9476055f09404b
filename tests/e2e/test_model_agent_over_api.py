"""The sample model process over the real server: started over HTTP, its answer followed
token by token on the WebSocket tail while the model is still streaming (the OpenAI stub),
with its tool call, usage and cost; the provider's key appears nowhere."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.support.openai_stub import OpenAiStub, Reply
from tests.support.server import Server, running_server, start
from tests.support.tokens import token
from tests.support.walking_skeleton import ends

pytestmark = pytest.mark.postgres

SECRET = "e2e-model-secret-" + "m" * 32
API_KEY = "sk-e2e-DO-NOT-LEAK-77b1"
MODEL = "e2e-model"
ANSWER = "Your largest saving is idle GPU capacity: about $2,100 a month. Release it first."


@pytest.fixture(scope="module")
def stub() -> Iterator[OpenAiStub]:
    with OpenAiStub.running() as stub:
        yield stub


@pytest.fixture(scope="module")
def server(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory, stub: OpenAiStub
) -> Iterator[Server]:
    with running_server(
        tmp_path_factory.mktemp("model-e2e"),
        AGENT_LEDGER_DATABASE_URL=postgres_url,
        AGENT_LEDGER_JWT_SECRET=SECRET,
        AGENT_LEDGER_LLM_BASE_URL=stub.base_url,
        AGENT_LEDGER_LLM_API_KEY=API_KEY,
        AGENT_LEDGER_LLM_MODEL=MODEL,
        AGENT_LEDGER_LLM_PRICES=json.dumps(
            {MODEL: {"input_per_million": 0.15, "output_per_million": 0.6}}
        ),
    ) as running:
        yield running


def test_the_answer_streams_on_the_tail_before_the_model_has_finished(
    server: Server, stub: OpenAiStub, tmp_path: Path
) -> None:
    bearer = token(SECRET, "model-user")
    stub.queue(
        MODEL,
        Reply(reasoning="Start from the overview.", tool_calls=[("spend_overview", {"days": 30})]),
        Reply(text=ANSWER, piece=2, pause_after=15, prompt_tokens=900, completion_tokens=40),
    )
    url = server.url.replace("http", "ws", 1) + "/v1/stream"
    messages: list[dict[str, Any]] = []
    with connect(url, additional_headers={"Authorization": f"Bearer {bearer}"}) as ws:
        execution_id = start(
            server, bearer, {"process": "cost_optimization_llm", "input": {"question": "Cut?"}}
        )

        def receive() -> dict[str, Any]:
            message: dict[str, Any] = json.loads(ws.recv(timeout=15))
            messages.append(message)
            return message

        while receive()["type"] != "agent_output_delta":
            pass
        # a piece of the answer is on the tail while the model's stream is held mid-way
        assert stub.paused.is_set()
        assert stub.finished_streams == 1  # only the tool-call turn has ended
        stub.release()
        while not ends(receive(), execution_id):
            pass

    mine = [m for m in messages if m["execution_id"] == execution_id]
    types = [m["type"] for m in mine]
    assert types.index("agent_thinking") < types.index("tool_executing")
    assert types.index("tool_completed") < types.index("agent_output_delta")
    assert types[-1] == "execution_completed"
    deltas = [m["data"] for m in mine if m["type"] == "agent_output_delta"]
    assert "".join(d["text"] for d in deltas) == ANSWER
    assert [d["index"] for d in deltas] == list(range(len(deltas)))
    calls = [m["data"] for m in mine if m["type"] == "llm_call_completed"]
    assert [c["model"] for c in calls] == [MODEL, MODEL]
    assert calls[1]["cost_usd"] == pytest.approx((900 * 0.15 + 40 * 0.6) / 1e6)
    usage = next(m["data"]["usage"] for m in mine if m["type"] == "agent_completed")
    assert usage["model_calls"] == 2
    with server.client(bearer) as client:
        body = client.get(f"/v1/executions/{execution_id}").json()
    assert body["output"] == ANSWER
    assert API_KEY not in json.dumps(messages)
    assert API_KEY not in server.log_path.read_text()
    assert stub.requests[0].headers["Authorization"] == f"Bearer {API_KEY}"


def test_the_demo_runs_the_model_process_and_prints_the_answer_as_it_streams(
    server: Server, stub: OpenAiStub
) -> None:
    stub.queue(MODEL, Reply(text=ANSWER, prompt_tokens=100, completion_tokens=20))
    demo = server.cli("demo", "--url", server.url, "--process", "cost_optimization_llm")

    assert demo.returncode == 0, demo.stderr
    assert f"» {ANSWER}\n" in demo.stdout  # the pieces joined on one line
    assert f"{MODEL}: 100 in, 20 out" in demo.stdout
    assert "$0.000027" in demo.stdout  # (100 * 0.15 + 20 * 0.6) per million
