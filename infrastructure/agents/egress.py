"""The egress rule for HTTP agents: agent URLs reach public addresses only, unless allowed.

A URL whose host is, or resolves to, a loopback, link-local, private, unspecified,
multicast, reserved or otherwise non-public address is refused, unless the setting
`AGENT_LEDGER_AGENT_URL_ALLOW` (comma-separated CIDRs and host names) allows the host name
or every such address. IPv6 addresses that carry an IPv4 one (mapped `::ffff:a.b.c.d`,
6to4, NAT64) are judged by the IPv4 address too. The rule is applied when a definition is
registered and again by the worker before each call, since a name may resolve elsewhere
later. Messages name the host and address, never the URL's credentials.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from agent_ledger.application.processes import AgentUrlRefusedError
from agent_ledger.domain.processes import HttpAgent, ProcessDefinition
from agent_ledger.infrastructure.allow_list import SETTING, Network, normal_name, parse_allow_list

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]
"""(host, port) → the addresses the host resolves to; raises OSError when it does not."""

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_PRIVATE = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
_HINT = (
    f"agents may be called on public addresses only, unless {SETTING} "
    "(comma-separated CIDRs and host names) allows the address or the host name"
)


class EgressRefusedError(ValueError):
    """An agent URL the egress rule refuses; the message never repeats credentials."""


class HostNotResolvedError(OSError):
    """An agent URL's host name does not resolve (now): no address to judge or call."""


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, as a connection to it would find them."""
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def forbidden_kind(address: Address) -> tuple[str, Address] | None:
    """What makes `address` non-public (and the address judged), or None if it is public."""
    for view in _views(address):
        kind = _kind(view)
        if kind is not None:
            return kind, view
    return None


@dataclass(frozen=True)
class AgentUrlPolicy:
    """The egress rule with this deployment's allow-list; the default allows no exception."""

    networks: tuple[Network, ...] = ()
    hosts: frozenset[str] = frozenset()
    resolver: Resolver = resolve

    @classmethod
    def from_setting(cls, text: str, resolver: Resolver = resolve) -> AgentUrlPolicy:
        """The policy of `AGENT_LEDGER_AGENT_URL_ALLOW`; ValueError names a bad entry."""
        networks, hosts = parse_allow_list(text)
        return cls(networks, hosts, resolver)

    def check(self, url: str) -> None:
        """At registration: an http(s) URL, no credentials, and every address it reaches allowed.

        A host name that does not resolve is refused as well (nothing to judge it by).
        """
        parts = _split(url)
        if parts.username is not None or parts.password is not None:
            raise EgressRefusedError(
                "the agent url must not hold credentials (user:password@): they would be "
                "stored with the definition and its events (the url is not repeated here)"
            )
        host, port = _host_and_port(parts)
        try:
            self._check_addresses(host, self._addresses(host, port))
        except HostNotResolvedError as error:
            raise EgressRefusedError(f"{error}; {_HINT}") from None

    async def check_call(self, url: str) -> None:
        """Before a call: every address the host resolves to now is allowed.

        Raises `EgressRefusedError`, or `HostNotResolvedError` when the name does not
        resolve at the moment (a failure another attempt may not meet).
        """
        host, port = _host_and_port(_split(url))
        if host in self.hosts or _literal(host) is not None:
            addresses = self._addresses(host, port)  # no look-up: nothing to wait for
        else:
            addresses = await asyncio.to_thread(self._addresses, host, port)
        self._check_addresses(host, addresses)

    def check_definition(self, definition: ProcessDefinition) -> None:
        """A registration check: raises `AgentUrlRefusedError` naming the first refused step."""
        for step in definition.steps:
            if isinstance(step.agent, HttpAgent):
                try:
                    self.check(step.agent.url)
                except EgressRefusedError as error:
                    raise AgentUrlRefusedError(str(error), step.id) from None

    def _addresses(self, host: str, port: int) -> list[Address]:
        if host in self.hosts:
            return []  # allowed by name: whatever it resolves to
        literal = _literal(host)
        if literal is not None:
            return [literal]
        try:
            found = self.resolver(host, port)
        except (OSError, UnicodeError) as error:
            reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
            raise HostNotResolvedError(f"host {host!r} does not resolve ({reason})") from None
        addresses = [_literal(text) for text in found]
        if not found or None in addresses:
            raise HostNotResolvedError(f"host {host!r} does not resolve to an IP address")
        return [a for a in addresses if a is not None]

    def _check_addresses(self, host: str, addresses: Sequence[Address]) -> None:
        for address in addresses:
            found = forbidden_kind(address)
            if found is None or self._allows(address):
                continue
            kind, view = found
            what = str(address) if view == address else f"{address} (carrying {view})"
            literal = _literal(host) is not None
            subject = f"{what} is" if literal else f"host {host!r} resolves to {what},"
            raise EgressRefusedError(f"{subject} a {kind} address; {_HINT}")

    def _allows(self, address: Address) -> bool:
        views = (address, *_views(address))
        return any(
            view.version == network.version and view in network
            for view in views
            for network in self.networks
        )


def _split(url: str) -> SplitResult:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing it raises ValueError when it is out of range
    except ValueError:
        raise EgressRefusedError("the agent url is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EgressRefusedError("the agent url must be an http:// or https:// URL with a host")
    return parts


def _host_and_port(parts: SplitResult) -> tuple[str, int]:
    host = normal_name(parts.hostname or "")
    return host, parts.port or (443 if parts.scheme == "https" else 80)


def _literal(host: str) -> Address | None:
    """The address `host` spells in standard form (a zone index dropped), else None."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def _views(address: Address) -> tuple[Address, ...]:
    """The address, or the IPv4 address it carries, as reaching it would reach that one."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return (address.ipv4_mapped,)
        if address in _NAT64:
            return (ipaddress.IPv4Address(int(address) & 0xFFFFFFFF),)
        if address.sixtofour is not None:
            return (address, address.sixtofour)
    return (address,)


def _kind(address: Address) -> str | None:
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("site-local", isinstance(address, ipaddress.IPv6Address) and address.is_site_local),
        ("private", any(address.version == n.version and address in n for n in _PRIVATE)),
        ("special-purpose", not address.is_global),
    )
    return next((kind for kind, applies in checks if applies), None)
