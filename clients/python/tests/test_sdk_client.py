"""The sync and async clients against a real server: start, get, list, wait, the audit calls."""

from __future__ import annotations

import asyncio
import json
from contextlib import aclosing, closing
from uuid import uuid4

import httpx
import pytest
from tests.support.server import Server

from agent_ledger_client import (
    AsyncClient,
    Client,
    ConflictError,
    NotFoundError,
    Started,
    StreamClosedError,
)
from agent_ledger_client.schemas import MODELS


def test_a_start_repeated_with_its_key_is_the_same_execution(client: Client) -> None:
    key = f"sdk-{uuid4()}"
    first = client.start("echo", {"n": 1}, idempotency_key=key)
    again = client.start("echo", {"n": 1}, idempotency_key=key)
    assert isinstance(first, Started)
    assert isinstance(again, Started)
    assert (again.id, first.created, again.created) == (first.id, True, False)
    with pytest.raises(ConflictError):
        client.start("echo", {"n": 2}, idempotency_key=key)
    assert client.start("echo", {"n": 1}).id != first.id  # a fresh key per call by default


def test_wait_returns_the_finished_execution_and_the_audit_calls_read_it(client: Client) -> None:
    started = client.start("echo", {"said": "hello"})
    finished = client.wait(started.id, timeout=30)
    assert (finished.status, finished.output, finished.finished) == (
        "completed",
        {"said": "hello"},
        True,
    )
    assert client.wait(started.id, timeout=5).status == "completed"  # already over: at once

    history = list(client.events(started.id, page_size=2))
    assert history[0].type == "execution_started"
    assert history[-1].type == "execution_completed"
    assert [e.version for e in history] == list(range(1, len(history) + 1))
    assert client.state(started.id, version=1).status in ("pending", "running")
    assert client.state(started.id, at=finished.finished_at).status == "completed"
    verification = client.verify(started.id)
    assert (verification.ok, verification.events) == (True, len(history))
    bundle = [json.loads(line) for line in client.export(started.id).splitlines() if line]
    assert len(bundle) > len(history)  # the events and a header or checkpoint line


def test_list_iterates_over_every_page_newest_first(server: Server) -> None:
    with Client(server.url, server.token(f"lister-{uuid4()}")) as client:
        ids = [client.start("echo", {"i": i}).id for i in range(5)]
        for execution_id in ids:
            client.wait(execution_id, timeout=30)
        listed = [e.id for e in client.list(page_size=2)]
        assert listed == ids[::-1]
        assert [e.id for e in client.list(page_size=2, status="failed")] == []


def test_errors_are_typed_and_a_refused_tail_is_not_retried(client: Client) -> None:
    with pytest.raises(NotFoundError):
        client.get(uuid4())
    with pytest.raises(StreamClosedError) as closed:
        next(client.stream(after=0, execution_id=uuid4(), max_reconnects=0))
    assert closed.value.code == 4404


def test_a_401_asks_the_token_provider_once_then_goes_on(server: Server, token: str) -> None:
    tokens = iter(["not-a-token", token])
    with Client(server.url, token_provider=lambda: next(tokens)) as client:
        started = client.start("echo", {})
        assert client.get(started.id).id == started.id


def test_the_async_client_starts_lists_waits_and_streams(server: Server) -> None:
    async def scenario() -> None:
        async with AsyncClient(server.url, server.token(f"async-{uuid4()}")) as client:
            started = await client.start("echo", {"a": 1})
            finished = await client.wait(started.id, timeout=30)
            assert finished.status == "completed"
            assert [e.id async for e in client.list(page_size=1)] == [started.id]
            types = [e.type async for e in client.events(started.id)]
            seen = []
            tail = client.stream(after=0, execution_id=started.id, timeout=10)
            async with aclosing(tail):
                async for event in tail:
                    seen.append(event.type)
                    if event.type == "execution_completed":
                        break
            assert seen == types

    asyncio.run(scenario())


def test_the_models_agree_with_the_servers_openapi(server: Server) -> None:
    schemas = httpx.get(f"{server.url}/openapi.json").json()["components"]["schemas"]
    for model in MODELS:
        schema = schemas[model.schema_name]
        declared = set(model.model_fields)
        required = {name for name, field in model.model_fields.items() if field.is_required()}
        assert declared <= set(schema["properties"]), (
            model.__name__,
            declared - set(schema["properties"]),
        )
        assert set(schema.get("required", [])) <= declared, (
            model.__name__,
            set(schema["required"]) - declared,
        )
        assert required <= set(schema.get("required", [])), (
            model.__name__,
            required - set(schema["required"]),
        )


def test_a_stream_opened_before_a_start_yields_all_of_its_events(server: Server) -> None:
    with Client(server.url, server.token(f"live-{uuid4()}")) as client:
        tail = client.stream(timeout=30)  # after=None: from the head as of this call
        started = client.start("echo", {"live": True})
        with closing(tail):
            seen = []
            for event in tail:
                seen.append(event.type)
                if event.type == "execution_completed":
                    break
        assert seen == [e.type for e in client.events(started.id)]
