"""The egress rule for HTTP agents: which addresses agent URLs may reach, and the allow-list."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from typing import Any, cast

import pytest
from pydantic import ValidationError

from agent_ledger.application.agents import AgentError, RemoteAgentContext
from agent_ledger.application.processes import AgentUrlRefusedError
from agent_ledger.domain.processes import HttpAgent, ProcessDefinition
from agent_ledger.infrastructure.agents.egress import (
    AgentUrlPolicy,
    EgressRefusedError,
    HostNotResolvedError,
)
from agent_ledger.infrastructure.agents.http import HttpAgentClient
from agent_ledger.infrastructure.allow_list import parse_allow_list
from agent_ledger.infrastructure.settings import Settings

SETTING = "AGENT_LEDGER_AGENT_URL_ALLOW"


class FakeDns:
    """Host names and what they resolve to; a test may change an answer, as DNS may."""

    def __init__(self, **answers: Sequence[str]):
        self.answers = {host.replace("_", "."): list(a) for host, a in answers.items()}
        self.asked: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.answers[host]


def strict(dns: FakeDns | None = None, allow: str = "") -> AgentUrlPolicy:
    return AgentUrlPolicy.from_setting(allow, resolver=dns or FakeDns())


def refusal(policy: AgentUrlPolicy, url: str) -> str:
    with pytest.raises(EgressRefusedError) as caught:
        policy.check(url)
    return str(caught.value)


REFUSED = [
    ("http://127.0.0.1:9/x", "loopback"),
    ("http://127.255.0.7/", "loopback"),
    ("http://10.1.2.3/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://192.168.1.10/", "private"),
    ("http://169.254.169.254/latest/meta-data", "link-local"),
    ("http://0.0.0.0:8000/", "unspecified"),
    ("http://100.64.0.1/", "special-purpose"),
    ("http://192.0.2.1/", "special-purpose"),
    ("http://224.0.0.1/", "multicast"),
    ("http://239.1.2.3/", "multicast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://255.255.255.255/", "reserved"),
    ("http://[::1]:9/x", "loopback"),
    ("http://[::]/", "unspecified"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fc00::1]/", "private"),
    ("http://[fd12:3456::1]/", "private"),
    ("http://[ff02::1]/", "multicast"),
    ("http://[fec0::1]/", "site-local"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[::ffff:10.0.0.1]/", "private"),
    ("http://[::ffff:169.254.169.254]/", "link-local"),
    ("http://[2002:7f00:1::]/", "loopback"),  # 6to4 of 127.0.0.1
    ("http://[64:ff9b::a00:1]/", "private"),  # NAT64 of 10.0.0.1
    ("http://[::127.0.0.1]/", "reserved"),  # IPv4-compatible, deprecated
]


@pytest.mark.parametrize(("url", "kind"), REFUSED, ids=[u for u, _ in REFUSED])
def test_an_address_that_is_not_public_is_refused_naming_what_it_is(url: str, kind: str) -> None:
    message = refusal(strict(), url)

    assert f"a {kind} address" in message
    assert SETTING in message


PUBLIC = [
    "http://8.8.8.8/run",
    "https://1.1.1.1:8443/run",
    "http://[2606:4700::1111]/run",
    "http://[::ffff:8.8.8.8]/run",
    "http://[64:ff9b::808:808]/run",  # NAT64 of a public address (IPv6-only networks)
    "http://[2002:808:808::]/run",  # 6to4 of a public address
]


@pytest.mark.parametrize("url", PUBLIC)
def test_a_public_address_is_allowed(url: str) -> None:
    strict().check(url)


def test_numeric_host_spellings_are_judged_by_the_address_they_resolve_to() -> None:
    policy = AgentUrlPolicy()  # the real resolver: these need no DNS server

    for url in ("http://2130706433/", "http://127.1/", "http://0x7f.0.0.1/", "http://0/"):
        message = refusal(policy, url)
        assert "loopback" in message or "unspecified" in message, url


def test_a_name_is_judged_by_every_address_it_resolves_to() -> None:
    dns = FakeDns(
        agents_example=["93.184.216.34", "2606:2800:220:1::"],
        mixed_example=["93.184.216.34", "10.0.0.8"],
        inner_example=["fd00::5"],
    )
    policy = strict(dns)

    policy.check("https://agents.example/run")
    mixed = refusal(policy, "https://mixed.example/run")
    inner = refusal(policy, "http://inner.example:8080/run")

    assert "host 'mixed.example' resolves to 10.0.0.8, a private address" in mixed
    assert "host 'inner.example' resolves to fd00::5, a private address" in inner


def test_a_name_that_does_not_resolve_is_refused_at_registration() -> None:
    message = refusal(strict(), "http://nowhere.invalid/run")

    assert "host 'nowhere.invalid' does not resolve" in message
    assert SETTING in message


def test_an_allowed_name_is_not_resolved_and_matches_in_any_case_and_with_a_final_dot() -> None:
    dns = FakeDns(agents_internal=["10.0.0.8"])
    policy = strict(dns, allow="agents.internal")

    policy.check("http://agents.internal/run")
    policy.check("http://AGENTS.Internal./run")

    assert dns.asked == []
    assert "other.internal" in refusal(policy, "http://other.internal/run")


def test_an_allowed_network_lets_its_addresses_through_and_no_others() -> None:
    dns = FakeDns(localhost=["127.0.0.1", "::1"], loop4_test=["127.0.0.1"])
    policy = strict(dns, allow="127.0.0.0/8")

    policy.check("http://127.0.0.1:9/x")
    policy.check("http://[::ffff:127.0.0.1]:9/x")
    policy.check("http://loop4.test/x")  # the name is not allowed, but every address is
    assert "::1, a loopback address" in refusal(policy, "http://localhost/x")
    assert "loopback" in refusal(policy, "http://[::1]/x")
    assert "link-local" in refusal(policy, "http://169.254.169.254/")
    assert "private" in refusal(policy, "http://10.0.0.1/")


def test_an_allow_list_with_an_ipv6_network_and_a_single_address() -> None:
    policy = strict(allow=" ::1/128 , 10.0.0.5 ,, fd00::/8")

    policy.check("http://[::1]/x")
    policy.check("http://10.0.0.5/x")
    policy.check("http://[fd00::7]/x")
    assert "private" in refusal(policy, "http://10.0.0.6/x")


def test_the_allow_list_is_parsed_into_networks_and_lower_case_names() -> None:
    networks, hosts = parse_allow_list("127.0.0.0/8, Agents.Internal., ::1, ,localhost")

    assert [str(n) for n in networks] == ["127.0.0.0/8", "::1/128"]
    assert hosts == frozenset({"agents.internal", "localhost"})
    assert parse_allow_list("") == ((), frozenset())


BAD_ENTRIES = [
    "10.0.0.0/33",
    "127.0.0.1/8",
    "300.1.2.3",
    "fe80::/129",
    "http://agents.internal",
    "agents internal",
    "agents.internal/run",
    "*.internal",
    "-agents.internal",
    "a" * 64 + ".internal",
]


@pytest.mark.parametrize("entry", BAD_ENTRIES)
def test_a_bad_allow_list_entry_is_refused_naming_the_setting_and_the_entry(entry: str) -> None:
    with pytest.raises(ValueError, match=SETTING) as caught:
        parse_allow_list(f"127.0.0.0/8,{entry}")

    assert repr(entry) in str(caught.value)
    assert "CIDR" in str(caught.value)


def test_settings_refuse_a_bad_allow_list_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SETTING, "127.0.0.0/8,10.0.0.0/33")

    with pytest.raises(ValidationError) as caught:
        Settings()

    assert SETTING in str(caught.value)
    assert "'10.0.0.0/33'" in str(caught.value)


def test_settings_read_the_allow_list_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SETTING, "127.0.0.0/8,agents.internal")

    policy = AgentUrlPolicy.from_setting(Settings().agent_url_allow)

    assert Settings().agent_url_allow == "127.0.0.0/8,agents.internal"
    assert policy.hosts == frozenset({"agents.internal"})
    policy.check("http://127.0.0.1:9/x")


def test_the_default_setting_allows_nothing_but_public_addresses() -> None:
    policy = AgentUrlPolicy.from_setting(Settings().agent_url_allow)

    assert "loopback" in refusal(policy, "http://127.0.0.1:9/x")


def test_credentials_in_the_url_are_refused_and_never_repeated() -> None:
    policy = strict(FakeDns(agents_example=["93.184.216.34"]))

    for url in (
        "http://ops-user:hunter2@agents.example/run",
        "https://tok3n-only@agents.example/run",
        "http://ops-user:hunter2@10.0.0.1/run",
    ):
        message = refusal(policy, url)
        assert "credentials" in message
        assert "hunter2" not in message
        assert "ops-user" not in message
        assert "tok3n" not in message


def test_only_http_and_https_urls_are_accepted() -> None:
    policy = strict()

    for url in ("ftp://8.8.8.8/x", "file:///etc/passwd", "gopher://8.8.8.8/", "//8.8.8.8/x"):
        assert "http:// or https://" in refusal(policy, url)
    assert "not a valid URL" in refusal(policy, "http://8.8.8.8:99999/x")


def definition_with(*urls: str) -> ProcessDefinition:
    steps: list[dict[str, Any]] = [{"id": "local", "type": "agent_task", "agent": "echo"}]
    steps += [
        {"id": f"remote{n}", "type": "agent_task", "agent": {"url": url}}
        for n, url in enumerate(urls)
    ]
    return ProcessDefinition.from_document({"name": "remote", "steps": steps})


def test_a_definition_is_refused_naming_the_step_whose_url_is_refused() -> None:
    policy = strict(allow="127.0.0.0/8")
    definition = definition_with("http://127.0.0.1:9/x", "http://169.254.169.254/")

    with pytest.raises(AgentUrlRefusedError) as caught:
        policy.check_definition(definition)

    assert caught.value.step_id == "remote1"
    assert str(caught.value).startswith("step 'remote1': ")
    assert "169.254.169.254 is a link-local address" in str(caught.value)
    policy.check_definition(definition_with("http://127.0.0.1:9/x"))


def test_the_call_time_check_sees_what_the_name_resolves_to_now() -> None:
    dns = FakeDns(agents_example=["93.184.216.34"])
    policy = strict(dns)
    policy.check_definition(definition_with("http://agents.example/run"))

    dns.answers["agents.example"] = ["10.0.0.7"]  # the name was moved into the network
    with pytest.raises(EgressRefusedError, match=r"resolves to 10\.0\.0\.7, a private address"):
        asyncio.run(policy.check_call("http://agents.example/run"))

    del dns.answers["agents.example"]
    with pytest.raises(HostNotResolvedError, match=r"agents\.example"):
        asyncio.run(policy.check_call("http://agents.example/run"))


class NoContext:
    """A context the client must never use: the call is refused before it starts."""

    @property
    def run(self) -> Any:
        raise AssertionError("a refused call must not be prepared")


async def call(client: HttpAgentClient, url: str) -> Any:
    try:
        return await client(HttpAgent(url), cast(RemoteAgentContext, NoContext()), {})
    finally:
        await client.aclose()


def test_the_worker_refuses_a_call_whose_host_now_resolves_to_a_private_address() -> None:
    dns = FakeDns(agents_example=["10.0.0.7"])
    client = HttpAgentClient(egress=strict(dns))

    with pytest.raises(AgentError) as caught:
        asyncio.run(call(client, "http://ops:hunter2@agents.example/run"))

    assert caught.value.error_type == "AgentUrlRefused"
    assert caught.value.retryable is False
    assert "10.0.0.7, a private address" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_a_name_that_does_not_resolve_at_call_time_is_a_retryable_failure() -> None:
    client = HttpAgentClient(egress=strict(FakeDns()))

    with pytest.raises(AgentError) as caught:
        asyncio.run(call(client, "http://agents.example/run"))

    assert caught.value.error_type == "AgentUnreachable"
    assert caught.value.retryable is True


def test_the_worker_refuses_loopback_unless_allowed() -> None:
    refused = HttpAgentClient()  # the default policy: public addresses only

    with pytest.raises(AgentError) as caught:
        asyncio.run(call(refused, "http://127.0.0.1:9/x"))

    assert caught.value.error_type == "AgentUrlRefused"
    assert "loopback" in str(caught.value)
