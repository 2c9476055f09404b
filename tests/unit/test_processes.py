"""Process definitions: parsing, every validation rule, the canonical form and the graph."""

from __future__ import annotations

import copy
import datetime
import json
from typing import Any

import pytest

from agent_ledger.application.agents import AgentRegistry
from agent_ledger.application.builtin_agents import register_builtin_agents
from agent_ledger.application.processes import (
    InMemoryProcessCatalog,
    UnknownBuiltinAgentError,
    UnknownProcessError,
    known_agents_check,
)
from agent_ledger.domain.errors import InvalidProcessDefinitionError
from agent_ledger.domain.processes import (
    HttpAgent,
    OnError,
    ProcessConfig,
    ProcessDefinition,
    RetryPolicy,
    Route,
    StepType,
)

SAMPLE: dict[str, Any] = {
    "name": "cost_optimization",
    "config": {"parallel_execution": True, "stop_on_failure": True, "timeout_seconds": 300},
    "steps": [
        {
            "id": "triage",
            "type": "agent_task",
            "agent": "triage",
            "input": {"question": "{{ input.question }}"},
            "timeout_seconds": 5,
            "retry": {
                "max_attempts": 3,
                "initial_interval": 0.5,
                "backoff_coefficient": 2.0,
                "max_interval": 10,
            },
            "on_error": "fail",
        },
        {
            "id": "route",
            "type": "gateway",
            "depends_on": ["triage"],
            "routes": [
                {"when": "steps.triage.output.category == 'cost'", "next": ["data"]},
                {"default": True, "next": ["summary"]},
            ],
        },
        {
            "id": "data",
            "type": "agent_task",
            "agent": "data",
            "input": {"focus": "{{ steps.triage.output }}"},
        },
        {"id": "pause", "type": "timer", "seconds": 2, "depends_on": ["data"]},
        {"id": "optimize", "type": "agent_task", "agent": "optimization", "depends_on": ["pause"]},
        {"id": "summary", "type": "agent_task", "agent": "summary"},
    ],
    "output": "{{ steps.optimize.output }}",
}

DELETE = object()


def sample(**edits: Any) -> dict[str, Any]:
    """Return a fresh copy of the sample, edited by path: `pause__seconds=0`, `name=DELETE`."""
    document = copy.deepcopy(SAMPLE)
    steps = {step["id"]: step for step in document["steps"]}
    for path, value in edits.items():
        *parents, last = path.split("__")
        target: Any = document
        for part in parents:
            is_step = target is document and part in steps
            target = steps[part] if is_step else target[_key(target, part)]
        if value is DELETE:
            del target[_key(target, last)]
        else:
            target[_key(target, last)] = value
    return document


def _key(target: Any, part: str) -> Any:
    return int(part) if isinstance(target, list) else part


def test_the_sample_definition_is_parsed_into_its_model() -> None:
    definition = ProcessDefinition.from_document(SAMPLE)

    assert definition.name == "cost_optimization"
    assert definition.config == ProcessConfig(timeout_seconds=300.0)
    assert [step.type for step in definition.steps] == [
        StepType.AGENT_TASK,
        StepType.GATEWAY,
        StepType.AGENT_TASK,
        StepType.TIMER,
        StepType.AGENT_TASK,
        StepType.AGENT_TASK,
    ]
    triage = definition.step("triage")
    assert triage.agent == "triage"
    assert triage.timeout_seconds == 5.0
    assert triage.retry == RetryPolicy(3, 0.5, 2.0, 10.0)
    assert triage.on_error is OnError.FAIL
    assert definition.step("route").routes == (
        Route(next=("data",), when="steps.triage.output.category == 'cost'"),
        Route(next=("summary",), default=True),
    )
    assert definition.step("pause").seconds == 2.0
    assert definition.output == "{{ steps.optimize.output }}"


def test_an_agent_reached_over_http_is_parsed_as_an_http_agent() -> None:
    document = sample(summary__agent={"url": "https://agents.example/summary"})

    definition = ProcessDefinition.from_document(document)

    assert definition.step("summary").agent == HttpAgent("https://agents.example/summary")


def test_null_stands_for_an_absent_optional_key() -> None:
    document = sample(triage__timeout_seconds=None, triage__retry=None, output=None)

    definition = ProcessDefinition.from_document(document)

    assert definition.step("triage").timeout_seconds is None
    assert definition.step("triage").retry == RetryPolicy()
    assert definition.output is None


def test_the_definition_does_not_share_its_templates_with_the_document() -> None:
    document = sample()
    definition = ProcessDefinition.from_document(document)

    document["steps"][0]["input"]["question"] = "changed"

    assert definition.step("triage").input == {"question": "{{ input.question }}"}


def test_the_canonical_document_round_trips() -> None:
    definition = ProcessDefinition.from_document(SAMPLE)

    document = definition.to_document()

    assert ProcessDefinition.from_document(document) == definition
    assert json.loads(json.dumps(document)) == document
    assert ProcessDefinition.from_document(document).to_document() == document


def test_an_http_agent_round_trips() -> None:
    document = sample(summary__agent={"url": "http://localhost:9000/run"})
    definition = ProcessDefinition.from_document(document)

    assert ProcessDefinition.from_document(definition.to_document()) == definition


def test_writing_the_defaults_out_does_not_change_the_content_hash() -> None:
    terse = ProcessDefinition.from_document(SAMPLE)
    explicit = ProcessDefinition.from_document(
        sample(
            config__timeout_seconds=300.0,
            data__retry={"max_attempts": 1, "non_retryable_errors": []},
            data__on_error="fail",
            data__depends_on=[],
            description="",
        )
    )

    assert explicit == terse
    assert explicit.content_hash() == terse.content_hash()


def test_the_content_hash_is_the_sha256_of_canonical_json_and_follows_the_content() -> None:
    definition = ProcessDefinition.from_document(SAMPLE)
    changed = ProcessDefinition.from_document(sample(pause__seconds=3))

    assert len(definition.content_hash()) == 64
    assert definition.content_hash() == ProcessDefinition.from_document(SAMPLE).content_hash()
    assert changed.content_hash() != definition.content_hash()


def test_steps_named_by_a_route_depend_on_the_gateway() -> None:
    definition = ProcessDefinition.from_document(SAMPLE)

    assert definition.dependencies("triage") == ()
    assert definition.dependencies("route") == ("triage",)
    assert definition.dependencies("data") == ("route",)
    assert definition.dependencies("summary") == ("route",)
    assert definition.dependencies("pause") == ("data",)


def test_a_gateway_also_written_in_depends_on_is_a_dependency_once() -> None:
    definition = ProcessDefinition.from_document(sample(data__depends_on=["route", "triage"]))

    assert definition.dependencies("data") == ("route", "triage")


def test_the_topological_order_prefers_declaration_order_among_ready_steps() -> None:
    document = {
        "name": "order",
        "steps": [
            {"id": "z", "type": "agent_task", "agent": "a"},
            {"id": "y", "type": "agent_task", "agent": "a", "depends_on": ["w"]},
            {"id": "x", "type": "agent_task", "agent": "a", "depends_on": ["z"]},
            {"id": "w", "type": "agent_task", "agent": "a"},
        ],
    }

    definition = ProcessDefinition.from_document(document)

    assert definition.topological_order() == ("z", "x", "w", "y")
    assert ProcessDefinition.from_document(SAMPLE).topological_order() == (
        "triage",
        "route",
        "data",
        "pause",
        "optimize",
        "summary",
    )


def test_a_step_is_found_by_id_and_an_unknown_id_is_a_clear_error() -> None:
    definition = ProcessDefinition.from_document(SAMPLE)

    assert definition.step("pause").type is StepType.TIMER
    with pytest.raises(InvalidProcessDefinitionError, match="no such step") as caught:
        definition.step("nope")
    assert caught.value.step_id == "nope"
    with pytest.raises(InvalidProcessDefinitionError):
        definition.dependencies("nope")


@pytest.mark.parametrize(
    ("attempt", "delay"),
    [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 10.0), (50, 10.0), (10_000, 10.0)],
)
def test_retry_delays_grow_by_the_backoff_coefficient_up_to_the_cap(
    attempt: int, delay: float
) -> None:
    policy = RetryPolicy(max_attempts=100, initial_interval=0.5, max_interval=10.0)

    assert policy.delay_after(attempt) == delay


def test_a_coefficient_of_one_keeps_the_delay_constant() -> None:
    policy = RetryPolicy(initial_interval=3.0, backoff_coefficient=1.0)

    assert [policy.delay_after(attempt) for attempt in (1, 2, 3)] == [3.0, 3.0, 3.0]


@pytest.mark.parametrize(
    ("attempt", "error_type", "allowed"),
    [
        (1, "AgentTimeout", True),
        (2, "AgentTimeout", True),
        (3, "AgentTimeout", False),
        (1, "InvalidInput", False),
    ],
)
def test_another_attempt_is_allowed_until_the_limit_unless_the_error_is_final(
    attempt: int, error_type: str, allowed: bool
) -> None:
    policy = RetryPolicy(max_attempts=3, non_retryable_errors=("InvalidInput",))

    assert policy.allows_another_attempt(attempt, error_type) is allowed


def test_a_cycle_is_rejected_and_named() -> None:
    document = sample(triage__depends_on=["optimize"])

    with pytest.raises(InvalidProcessDefinitionError, match="dependency cycle") as caught:
        ProcessDefinition.from_document(document)

    cycle = ["triage", "route", "data", "pause", "optimize"]
    message = str(caught.value)
    assert caught.value.step_id in cycle
    assert all(f"{step_id}" in message for step_id in cycle)
    assert "summary" not in message


def _too_many_steps() -> list[dict[str, Any]]:
    return [{"id": f"s{n}", "type": "agent_task", "agent": "a"} for n in range(101)]


RULES = [
    # The document as a whole.
    ({"stepz": []}, None, "unknown key 'stepz' in the definition"),
    ({"name": DELETE}, None, "needs a 'name'"),
    ({"name": "Cost Optimization"}, None, "name 'Cost Optimization' must match"),
    ({"name": "x" * 65}, None, "must match"),
    ({"description": 5}, None, "description must be a string"),
    ({"steps": []}, None, "steps must be a list of 1 to 100 steps"),
    ({"steps": _too_many_steps()}, None, "steps must be a list of 1 to 100 steps"),
    ({"steps__2": "data"}, None, "steps[2] must be an object"),
    ({"config__paralel_execution": True}, None, "unknown key 'paralel_execution' in config"),
    ({"config__stop_on_failure": "yes"}, None, "config.stop_on_failure must be true or false"),
    ({"config__timeout_seconds": 0}, None, "config.timeout_seconds must be greater than 0"),
    ({"config__timeout_seconds": 86_401}, None, "at most 86400"),
    ({"output": "{{ steps.optimize.output "}, None, "output: invalid template"),
    ({"output": "{{ steps.nope.output }}"}, None, "output references unknown step 'nope'"),
    # Ids and types.
    ({"triage__id": "Triage!"}, None, "steps[0]: id 'Triage!' must match"),
    ({"triage__id": DELETE}, None, "steps[0] has no 'id'"),
    ({"summary__id": "data"}, "data", "the id is used by more than one step"),
    ({"pause__type": "sleep"}, "pause", "type must be one of agent_task, gateway, timer"),
    ({"pause__depends_no": ["data"]}, "pause", "unknown key 'depends_no'"),
    ({"triage__routes": []}, "triage", "'routes' does not apply to agent_task steps"),
    ({"pause__agent": "clock"}, "pause", "'agent' does not apply to timer steps"),
    ({"route__input": {}}, "route", "'input' does not apply to gateway steps"),
    # References.
    ({"pause__depends_on": ["nope"]}, "pause", "depends_on names unknown step 'nope'"),
    ({"pause__depends_on": ["pause"]}, "pause", "depends_on names the step itself"),
    ({"pause__depends_on": ["data", "data"]}, "pause", "depends_on names 'data' twice"),
    ({"pause__depends_on": "data"}, "pause", "depends_on must be a list of step ids"),
    ({"route__routes__1__next": ["nope"]}, "route", "route 2 names unknown step 'nope'"),
    ({"route__routes__0__next": ["route"]}, "route", "route 1 names the step itself"),
    ({"route__routes__0__next": []}, "route", "route 1 needs 'next': a non-empty list"),
    ({"route__routes__0__next": DELETE}, "route", "route 1 needs 'next'"),
    ({"data__input": {"x": "{{ steps.nope.output }}"}}, "data", "input references unknown step"),
    ({"data__input": "{{ steps.data.output }}"}, "data", "references the step's own output"),
    ({"triage__input": "{{ steps.summary.output }}"}, "triage", "reads step 'summary', which"),
    ({"route__routes__0__when": "steps.nope.output"}, "route", "route 1 references unknown"),
    ({"route__routes__0__when": "steps.data.output"}, "route", "route 1 reads step 'data'"),
    # Agents.
    ({"summary__agent": DELETE}, "summary", "an agent_task needs an 'agent'"),
    ({"summary__agent": ""}, "summary", "agent must be a non-empty name"),
    ({"summary__agent": " summary"}, "summary", "agent must be a non-empty name"),
    ({"summary__agent": {"url": "ftp://x/agent"}}, "summary", "must be an http:// or https://"),
    ({"summary__agent": {"url": "http://[::1"}}, "summary", "must be an http:// or https://"),
    ({"summary__agent": {"uri": "http://x"}}, "summary", "unknown key 'uri' in agent"),
    # Gateways and routes.
    ({"route__routes": DELETE}, "route", "a gateway needs at least one route"),
    ({"route__routes": []}, "route", "a gateway needs at least one route"),
    ({"route__routes__0__nxt": ["data"]}, "route", "unknown key 'nxt' in route 1"),
    ({"route__routes__0__default": True}, "route", "routes 1 and 2 are both the default"),
    ({"route__routes__1__when": "true"}, "route", "route 2 needs exactly one of 'when' or"),
    ({"route__routes__0__when": DELETE}, "route", "route 1 needs exactly one of 'when' or"),
    ({"route__routes__1__default": "yes"}, "route", "route 2: default must be true or false"),
    ({"route__routes": [{"default": True, "next": ["data"]}, {"when": "1", "next": ["summary"]}]},
     "route", "route 1: the default route must be the last one"),
    ({"route__routes__0__when": "steps.triage.output =="}, "route", "route 1: invalid expression"),
    ({"route__routes__0__when": 3}, "route", "route 1: when must be a string"),
    # Timers.
    ({"pause__seconds": DELETE}, "pause", "a timer needs 'seconds'"),
    ({"pause__seconds": 0}, "pause", "seconds must be greater than 0 and at most 604800"),
    ({"pause__seconds": 7 * 86_400 + 1}, "pause", "seconds must be greater than 0"),
    ({"pause__seconds": "2"}, "pause", "seconds must be a number"),
    # Timeouts, retries, errors.
    ({"triage__timeout_seconds": 0}, "triage", "timeout_seconds must be greater than 0"),
    ({"triage__timeout_seconds": 86_401}, "triage", "timeout_seconds must be greater than 0"),
    ({"triage__timeout_seconds": True}, "triage", "timeout_seconds must be a number"),
    ({"triage__retry__max_attempt": 3}, "triage", "unknown key 'max_attempt' in retry"),
    ({"triage__retry__max_attempts": 0}, "triage", "retry.max_attempts must be an integer"),
    ({"triage__retry__max_attempts": 101}, "triage", "retry.max_attempts must be an integer"),
    ({"triage__retry__max_attempts": 2.5}, "triage", "retry.max_attempts must be an integer"),
    ({"triage__retry__max_attempts": True}, "triage", "retry.max_attempts must be an integer"),
    ({"triage__retry__initial_interval": -1}, "triage", "initial_interval must be at least 0"),
    ({"triage__retry__max_interval": -1}, "triage", "retry.max_interval must be at least 0"),
    ({"triage__retry__backoff_coefficient": 0.5}, "triage", "coefficient must be at least 1"),
    ({"triage__retry__non_retryable_errors": "Boom"}, "triage", "errors must be a list"),
    ({"triage__retry": 3}, "triage", "retry must be an object"),
    ({"triage__on_error": "ignore"}, "triage", "on_error must be 'fail' or 'skip_step'"),
    # Templates.
    ({"triage__input__question": "{{ input.question "}, "triage", "input: invalid template"),
    ({"triage__input__question": "{{ input.q | attr('x') }}"}, "triage", "No filter named 'attr'"),
    ({"triage__input__question": "{% include 'x' %}"}, "triage", "unsupported tag 'include'"),
    # Sizes and JSON.
    ({"triage__input__question": "x" * 16_385}, "triage", "input.question is 16385 characters"),
    ({"triage__input__blob": ["x" * 16_000] * 17}, None, "bytes long; the limit is 262144"),
    ({"triage__input__when": datetime.date(2024, 1, 1)}, "triage", "input.when holds a date"),
    ({"triage__input__ratio": float("inf")}, "triage", "input.ratio is not a finite number"),
    ({"triage__input__deep": json.loads("[" * 40 + "]" * 40)}, "triage", "nested more than 32"),
    ({"triage__input__big": 2**64}, "triage", "input.big is an integer too large for JSON"),
    ({"triage__input__map": {1: "x"}}, "triage", "has a key that is not a short string"),
    ({"description": "x" * 16_385}, None, "description is 16385 characters long"),
]  # fmt: skip


@pytest.mark.parametrize(("edits", "step_id", "problem"), RULES, ids=[r[2] for r in RULES])
def test_a_broken_rule_is_rejected_naming_the_step_and_the_problem(
    edits: dict[str, Any], step_id: str | None, problem: str
) -> None:
    document = sample(**edits)

    with pytest.raises(InvalidProcessDefinitionError) as caught:
        ProcessDefinition.from_document(document)

    assert caught.value.step_id == step_id
    assert problem in str(caught.value)
    if step_id is not None:
        assert str(caught.value).startswith(f"step {step_id!r}: ")


def test_the_error_message_reads_as_step_and_problem() -> None:
    document = sample(route__routes__1__next=["nope"])

    with pytest.raises(InvalidProcessDefinitionError) as caught:
        ProcessDefinition.from_document(document)

    assert str(caught.value) == "step 'route': route 2 names unknown step 'nope'"


def test_a_step_may_read_any_step_it_waits_for_transitively() -> None:
    document = sample(optimize__input={"category": "{{ steps.triage.output.category }}"})

    assert ProcessDefinition.from_document(document).step("optimize").input == {
        "category": "{{ steps.triage.output.category }}"
    }


def test_a_bad_agent_url_is_refused_without_repeating_its_credentials() -> None:
    document = sample(summary__agent={"url": "ftp://ops-user:hunter2@files.example/agent"})

    with pytest.raises(InvalidProcessDefinitionError) as caught:
        ProcessDefinition.from_document(document)

    assert "must be an http:// or https:// URL" in str(caught.value)
    assert "files.example/agent" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    assert "ops-user" not in str(caught.value)


def test_an_http_agents_shown_url_leaves_out_credentials() -> None:
    agent = HttpAgent("http://ops-user:hunter2@agents.example:8080/run?x=1")

    assert agent.shown_url == "http://agents.example:8080/run?x=1"
    assert HttpAgent("https://agents.example/run").shown_url == "https://agents.example/run"


def builtin_registry() -> AgentRegistry:
    registry = AgentRegistry()
    register_builtin_agents(registry)
    return registry


def test_an_unknown_built_in_agent_is_refused_at_registration_listing_the_known_ones() -> None:
    catalog = InMemoryProcessCatalog(checks=[known_agents_check(builtin_registry())])

    with pytest.raises(UnknownBuiltinAgentError) as caught:
        catalog.register(sample(data__agent="dta"))

    assert caught.value.step_id == "data"
    assert caught.value.agent == "dta"
    assert str(caught.value) == (
        "step 'data': no built-in agent is registered as 'dta' "
        "(known: data, echo, optimization, summary, triage); "
        "an agent reached over HTTP is written {url: ...}"
    )
    with pytest.raises(UnknownProcessError):
        catalog.get("cost_optimization")


def test_known_agents_and_http_agents_pass_the_known_agents_check() -> None:
    registry = builtin_registry()
    catalog = InMemoryProcessCatalog(checks=[known_agents_check(registry)])
    registry.register_agent("late", registry.agent("echo"))  # registered after the catalog

    registered, created = catalog.register(
        sample(summary__agent={"url": "https://agents.example/s"}, data__agent="late")
    )

    assert created
    assert registered.definition.step("data").agent == "late"


def test_every_check_runs_before_anything_is_registered() -> None:
    seen: list[str] = []

    def refuse(definition: ProcessDefinition) -> None:
        seen.append(definition.name)
        raise InvalidProcessDefinitionError("refused by this deployment", "triage")

    catalog = InMemoryProcessCatalog(checks=[refuse])

    with pytest.raises(InvalidProcessDefinitionError, match="refused by this deployment"):
        catalog.register(SAMPLE)

    assert seen == ["cost_optimization"]
    assert catalog.list_latest() == []
