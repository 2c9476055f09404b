"""Model agents against a real OpenAI-compatible server (the stub), on real PostgreSQL:
retries on 429 and 5xx, a stream cut in the middle, cancellation mid-stream, the tool loop's
limits, JSON answers, failing tools, providers by name, and no secret in any event or log."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from agent_ledger.domain.errors import InvalidProcessDefinitionError
from agent_ledger.domain.execution_state import ExecutionStatus
from agent_ledger.projections.traces import attempt_traceparent
from tests.support.engine_scenarios import Engine, Message, engine_settings, process, running_engine
from tests.support.openai_stub import OpenAiStub, Reply
from tests.support.waiting import wait_until

pytestmark = pytest.mark.postgres

SECRET_KEY = "sk-live-DO-NOT-LEAK-9c4e0b7d"
OTHER_KEY = "sk-other-DO-NOT-LEAK-11aa22"
FAST_RETRY = {"max_attempts": 3, "initial_interval": 0.01, "max_interval": 0.05}


@pytest.fixture(scope="module")
def stub() -> Iterator[OpenAiStub]:
    with OpenAiStub.running() as stub:
        yield stub


@pytest.fixture(scope="module")
def engine(
    postgres_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    stub: OpenAiStub,
    monkeypatch_module: pytest.MonkeyPatch,
) -> Iterator[Engine]:
    monkeypatch_module.setenv("OTHER_PROVIDER_KEY", OTHER_KEY)
    settings = engine_settings(
        postgres_url,
        tmp_path_factory.mktemp("models"),
        llm_base_url=stub.base_url,
        llm_api_key=SECRET_KEY,
        llm_providers={"other": {"base_url": stub.base_url, "api_key_env": "OTHER_PROVIDER_KEY"}},
        llm_prices={"priced": {"input_per_million": 2.5, "output_per_million": 10.0}},
    )
    with running_engine(settings) as running:
        yield running


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def model() -> str:
    """A model name of one test's own: the stub's script is per model."""
    return f"m-{uuid.uuid4().hex[:8]}"


def model_process(name: str, retry: dict[str, Any] | None = None, **llm: Any) -> dict[str, Any]:
    step: dict[str, Any] = {
        "id": "answer",
        "type": "agent_task",
        "agent": {"llm": {"prompt": "{{ input.q }}", **llm}},
    }
    if retry is not None:
        step["retry"] = retry
    return process(name, step, output="{{ steps.answer.output }}")


def of_type(messages: list[Message], kind: str) -> list[dict[str, Any]]:
    return [m["data"] for m in messages if m["type"] == kind]


def test_a_429_and_a_500_are_retried_as_recorded_attempts(engine: Engine, stub: OpenAiStub) -> None:
    name = model()
    stub.queue(name, Reply(status=429), Reply(status=500), Reply(text="third time lucky"))
    execution_id, execution = engine.run(
        model_process("retried", retry=FAST_RETRY, model=name), {"q": "hi"}
    )

    assert execution.status is ExecutionStatus.COMPLETED
    assert execution.output == "third time lucky"
    messages = engine.history(execution_id)
    retries = of_type(messages, "step_retrying")
    assert [r["error"]["type"] for r in retries] == ["ModelRateLimited", "ModelUnavailable"]
    assert "HTTP 429" in retries[0]["error"]["message"]
    assert len(stub.bodies(name)) == 3
    body = stub.bodies(name)[0]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_a_stream_cut_in_the_middle_keeps_its_partial_answer_under_its_attempt(
    engine: Engine, stub: OpenAiStub
) -> None:
    name, text = model(), "A complete answer that arrives in many small pieces."
    stub.queue(name, Reply(text=text, cut_after=6), Reply(text=text))
    execution_id, execution = engine.run(
        model_process("cut", retry=FAST_RETRY, model=name), {"q": "hi"}
    )

    assert execution.status is ExecutionStatus.COMPLETED
    messages = engine.history(execution_id)
    assert of_type(messages, "step_retrying")[0]["error"]["type"] == "BrokenStream"
    deltas = of_type(messages, "agent_output_delta")
    first = "".join(d["text"] for d in deltas if d["attempt"] == 1)
    second = "".join(d["text"] for d in deltas if d["attempt"] == 2)
    assert first  # what streamed before the cut stays recorded
    assert text.startswith(first)
    assert first != text
    assert second == text == execution.output
    assert next(d["index"] for d in deltas if d["attempt"] == 2) == 0


def test_a_stream_that_ends_without_finishing_is_broken(engine: Engine, stub: OpenAiStub) -> None:
    name = model()
    stub.queue(name, Reply(text="half an ans", finish=False, usage=False))
    _, execution = engine.run(model_process("unfinished", model=name), {"q": "hi"})
    assert execution.status is ExecutionStatus.FAILED
    assert execution.error is not None
    assert execution.error["type"] == "BrokenStream"


def test_cancelling_aborts_the_model_stream_at_once(engine: Engine, stub: OpenAiStub) -> None:
    name = model()
    stub.paused.clear()
    abandoned = stub.abandoned
    stub.queue(name, Reply(text="never finished " * 20, pause_after=5))
    execution_id = engine.start(model_process("cancel", model=name), {"q": "hi"}, user="stopper")
    assert stub.paused.wait(10), "the stream did not start"

    engine.runtime.executions.request_cancellation(
        execution_id, user_id="stopper", by="stopper", reason="enough"
    )
    execution = engine.finish(execution_id)
    assert execution.status is ExecutionStatus.CANCELLED
    wait_until(lambda: stub.abandoned > abandoned, what="the model server to see the hang-up")


def test_a_model_that_never_stops_calling_tools_fails_at_max_turns_without_retry(
    engine: Engine, stub: OpenAiStub
) -> None:
    name = model()
    asking = Reply(tool_calls=[("model_prices", {})])
    stub.queue(name, asking, asking, asking)
    execution_id, execution = engine.run(
        model_process("loop", retry=FAST_RETRY, model=name, tools=["model_prices"], max_turns=2),
        {"q": "hi"},
    )

    assert execution.status is ExecutionStatus.FAILED
    assert execution.error is not None
    assert execution.error["type"] == "MaxTurnsExceeded"
    messages = engine.history(execution_id)
    assert len(of_type(messages, "tool_completed")) == 1  # the last turn's call is not run
    assert len(of_type(messages, "llm_call_completed")) == 2
    assert of_type(messages, "step_retrying") == []
    assert len(stub.bodies(name)) == 2


def test_a_json_answer_is_parsed_and_an_unparseable_one_retried(
    engine: Engine, stub: OpenAiStub
) -> None:
    name = model()
    stub.queue(name, Reply(text="Sure! Here it is."), Reply(text='```json\n{"saving": 42}\n```'))
    execution_id, execution = engine.run(
        model_process("json", retry=FAST_RETRY, model=name, response_format="json"),
        {"q": "hi"},
    )

    assert execution.status is ExecutionStatus.COMPLETED
    assert execution.output == {"saving": 42}
    retry = of_type(engine.history(execution_id), "step_retrying")[0]
    assert retry["error"]["type"] == "BadModelOutput"
    assert stub.bodies(name)[0]["response_format"] == {"type": "json_object"}


def test_a_failing_tool_is_reported_to_the_model_which_still_answers(
    engine: Engine, stub: OpenAiStub
) -> None:
    name = model()
    stub.queue(
        name,
        Reply(
            tool_calls=[
                ("spend_by", {"dimension": "planet"}),
                ("spend_by", {"dimension": "team", "top": 2}),
                ("not_offered", {}),
            ]
        ),
        Reply(text="Teams first."),
    )
    execution_id, execution = engine.run(
        model_process("tools", model=name, tools=["spend_by"]), {"q": "hi"}
    )

    assert execution.status is ExecutionStatus.COMPLETED
    assert execution.output == "Teams first."
    messages = engine.history(execution_id)
    failed = of_type(messages, "tool_failed")
    assert [f["tool"] for f in failed] == ["spend_by", "not_offered"]
    assert "dimension must be one of" in failed[0]["error"]["message"]
    assert of_type(messages, "tool_completed")[0]["result"]["dimension"] == "team"
    results = [m for m in stub.bodies(name)[1]["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in results] == [
        "call_0_spend_by",
        "call_1_spend_by",
        "call_2_not_offered",
    ]
    assert "error" in json.loads(results[0]["content"])
    assert json.loads(results[1]["content"])["dimension"] == "team"


def test_a_named_provider_gets_its_own_key_and_a_priced_model_its_cost(
    engine: Engine, stub: OpenAiStub
) -> None:
    stub.queue("priced", Reply(text="cheap", prompt_tokens=1000, completion_tokens=100))
    execution_id, execution = engine.run(
        model_process("named", model="priced", provider="other"), {"q": "hi"}
    )

    assert execution.status is ExecutionStatus.COMPLETED
    seen = [s for s in stub.requests if s.body.get("model") == "priced"][-1]
    assert seen.headers["Authorization"] == f"Bearer {OTHER_KEY}"
    # the model call joins the execution's trace, as a child of the attempt's span
    assert seen.headers["traceparent"] == attempt_traceparent(execution_id, "answer", 1)
    messages = engine.history(execution_id)
    call = of_type(messages, "llm_call_completed")[0]
    assert call["cost_usd"] == pytest.approx((1000 * 2.5 + 100 * 10.0) / 1e6)
    assert of_type(messages, "agent_started")[0]["agent"] == "llm:other/priced"
    assert of_type(messages, "agent_completed")[0]["usage"]["cost_usd"] == call["cost_usd"]


def test_a_definition_naming_an_unconfigured_provider_or_unknown_tool_is_refused(
    engine: Engine,
) -> None:
    with pytest.raises(InvalidProcessDefinitionError, match="no model provider named 'nowhere'"):
        engine.register(model_process("noprov", model="x", provider="nowhere"))
    with pytest.raises(InvalidProcessDefinitionError, match="no tool is registered as 'nope'"):
        engine.register(model_process("notool", model="x", tools=["nope"]))


def test_no_key_reaches_an_event_or_a_log_line(
    engine: Engine, stub: OpenAiStub, caplog: pytest.LogCaptureFixture
) -> None:
    name = model()
    echoed = {"error": {"message": f"Incorrect API key provided: {SECRET_KEY}"}}
    stub.queue(name, Reply(status=401, error_body=echoed))
    caplog.set_level(logging.DEBUG)
    execution_id, execution = engine.run(model_process("secret", model=name), {"q": "hi"})

    assert execution.status is ExecutionStatus.FAILED
    assert execution.error is not None
    assert execution.error["type"] == "ModelRejected"
    assert "HTTP 401" in execution.error["message"]
    assert stub.requests[-1].headers["Authorization"] == f"Bearer {SECRET_KEY}"  # it was used
    stored = json.dumps(engine.history(execution_id))
    assert SECRET_KEY not in stored
    assert "***" in stored  # the echoed key, masked
    assert SECRET_KEY not in caplog.text
    assert SECRET_KEY not in repr(engine.settings)
