"""The allow-list of `AGENT_LEDGER_AGENT_URL_ALLOW`: CIDRs and host names, parsed once.

Settings check it at start-up and the egress rule for HTTP agents uses it; it knows only
the standard library, so both may import it.
"""

from __future__ import annotations

import ipaddress
import re

SETTING = "AGENT_LEDGER_AGENT_URL_ALLOW"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_HOST_NAME = re.compile(
    r"(?=.{1,253}\Z)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
    r"(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*"
)


def normal_name(name: str) -> str:
    """A host name as compared: lower case, no trailing dot."""
    return name.lower().removesuffix(".")


def parse_allow_list(text: str) -> tuple[tuple[Network, ...], frozenset[str]]:
    """The networks and host names of the setting; ValueError names a bad entry."""
    networks: list[Network] = []
    hosts: set[str] = set()
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        if re.fullmatch(r"[0-9.]+|.*[:/].*", entry):  # an address or network, or a URL
            try:
                networks.append(ipaddress.ip_network(entry))
            except ValueError as error:
                raise ValueError(
                    f"{SETTING}: {entry!r} is not a CIDR (e.g. 10.0.0.0/8, ::1): {error}"
                ) from None
        else:
            name = normal_name(entry)
            if not _HOST_NAME.fullmatch(name):
                raise ValueError(
                    f"{SETTING}: {entry!r} is neither a CIDR (e.g. 10.0.0.0/8, ::1) "
                    "nor a host name (e.g. agents.internal)"
                )
            hosts.add(name)
    return tuple(networks), frozenset(hosts)
