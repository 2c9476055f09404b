"""The model agent on the engine, against a real OpenAI-compatible server (the stub)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from agent_ledger.application.builtin_agents.tools import spend_by
from agent_ledger.application.chat_models import ChatChunk, ToolCallPiece, Turn
from agent_ledger.application.model_agent import ModelAgent
from agent_ledger.application.prices import ModelPrice, PriceTable
from agent_ledger.application.tool_box import ToolBox, parameters_of
from agent_ledger.infrastructure.agents.openai_chat import OpenAiChatModels, Provider
from tests.support.engine_harness import EngineHarness
from tests.support.openai_stub import OpenAiStub, Reply

SECRET_KEY = "sk-test-DO-NOT-LEAK-4f1c2a"


@pytest.fixture
def stub() -> Iterator[OpenAiStub]:
    with OpenAiStub.running() as stub:
        yield stub


def harness_with_models(stub: OpenAiStub, **coalescing: Any) -> EngineHarness:
    harness = EngineHarness()
    harness.runner.model_agent = ModelAgent(
        OpenAiChatModels({"default": Provider("default", stub.base_url, SECRET_KEY)}),
        ToolBox(harness.agents),
        PriceTable({"gpt-test": ModelPrice(1.0, 2.0)}),
        **coalescing,
    )
    return harness


def llm_process(**llm: Any) -> dict[str, Any]:
    return {
        "name": "ask",
        "steps": [
            {
                "id": "answer",
                "type": "agent_task",
                "agent": {"llm": {"model": "gpt-test", "prompt": "{{ input.q }}", **llm}},
            }
        ],
        "output": "{{ steps.answer.output }}",
    }


def test_the_tool_loop_runs_tools_and_feeds_their_results_back(stub: OpenAiStub) -> None:
    harness = harness_with_models(stub)
    stub.queue(
        "gpt-test",
        Reply(reasoning="I should look.", tool_calls=[("spend_overview", {"days": 7})]),
        Reply(text="LLM spend is the largest share."),
    )
    execution_id = harness.start(
        harness.process(llm_process(tools=["spend_overview"])), {"q": "Hi"}
    )
    execution = asyncio.run(harness.run(execution_id))

    assert execution.status.value == "completed"
    assert execution.output == "LLM spend is the largest share."
    types = harness.types(execution_id)
    assert types.index("agent_thinking") < types.index("tool_executing")
    assert types.index("tool_completed") < types.index("agent_output_delta")
    assert types.count("llm_call_completed") == 2
    started = harness.events(execution_id, "tool_executing")[0]
    assert (started.call_id, started.tool, started.args) == (
        "call_0_spend_overview",
        "spend_overview",
        {"days": 7},
    )
    # the second request carries the assistant's tool call and the tool's result
    second = stub.bodies("gpt-test")[1]["messages"]
    assert second[-2]["tool_calls"][0]["function"]["name"] == "spend_overview"
    assert second[-1]["role"] == "tool"
    assert json.loads(second[-1]["content"])["days"] == 7
    # the tools were offered with a schema derived from their signature
    offered = stub.bodies("gpt-test")[0]["tools"][0]["function"]
    assert offered["name"] == "spend_overview"
    assert offered["parameters"]["properties"]["days"] == {"type": "integer", "default": 30}


def test_deltas_concatenate_to_the_final_text_and_usage_is_priced(stub: OpenAiStub) -> None:
    harness = harness_with_models(stub, coalesce_pieces=4)
    text = "The quick brown fox jumps over the lazy dog, " * 4
    stub.queue("gpt-test", Reply(text=text, piece=2, prompt_tokens=1000, completion_tokens=500))
    execution_id = harness.start(harness.process(llm_process()), {"q": "Hi"})
    execution = asyncio.run(harness.run(execution_id))

    deltas = harness.events(execution_id, "agent_output_delta")
    assert "".join(d.text for d in deltas) == text == execution.output
    assert [d.index for d in deltas] == list(range(len(deltas)))
    assert 1 < len(deltas) <= len(text) // 2 // 4 + 1  # coalesced: 4 pieces per event at most
    call = harness.events(execution_id, "llm_call_completed")[0]
    assert (call.prompt_tokens, call.completion_tokens) == (1000, 500)
    assert call.cost_usd == pytest.approx((1000 * 1.0 + 500 * 2.0) / 1e6)
    completed = harness.events(execution_id, "agent_completed")[0]
    assert completed.usage == {
        "model_calls": 1,
        "prompt_tokens": 1000,
        "completion_tokens": 500,
        "cost_usd": pytest.approx(0.002),
    }
    assert harness.events(execution_id, "agent_started")[0].agent == "llm:gpt-test"


def test_an_unknown_model_costs_null_not_zero(stub: OpenAiStub) -> None:
    harness = harness_with_models(stub)
    document = llm_process()
    document["steps"][0]["agent"]["llm"]["model"] = "unpriced"
    execution_id = harness.start(harness.process(document), {"q": "Hi"})
    asyncio.run(harness.run(execution_id))
    assert harness.events(execution_id, "llm_call_completed")[0].cost_usd is None
    assert harness.events(execution_id, "agent_completed")[0].usage["cost_usd"] is None


def test_a_builtin_tools_parameters_come_from_its_signature() -> None:
    schema = parameters_of(spend_by)
    assert schema["required"] == ["dimension"]
    assert schema["properties"]["top"] == {"type": "integer", "default": 5}
    assert schema["additionalProperties"] is False


def test_tool_call_pieces_are_joined_by_index_and_a_new_id_under_a_used_index_is_a_new_call() -> (
    None
):
    turn = Turn()
    for chunk in (
        ChatChunk(tool_calls=(ToolCallPiece(0, "a", "spend_by", '{"dimen'),)),
        ChatChunk(tool_calls=(ToolCallPiece(1, "b", "model_prices", ""),)),
        ChatChunk(tool_calls=(ToolCallPiece(0, None, None, 'sion": "team"}'),)),
        ChatChunk(tool_calls=(ToolCallPiece(0, "c", "idle_capacity", "{}"),)),  # index reused
        ChatChunk(finish_reason="tool_calls", prompt_tokens=5, completion_tokens=3),
    ):
        turn.add(chunk)

    assert [(c.id, c.name, c.arguments) for c in turn.tool_calls] == [
        ("a", "spend_by", '{"dimension": "team"}'),
        ("b", "model_prices", ""),
        ("c", "idle_capacity", "{}"),
    ]
    assert (turn.finish_reason, turn.prompt_tokens, turn.completion_tokens) == ("tool_calls", 5, 3)
