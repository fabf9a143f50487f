"""The client's address when llmwall runs behind a load balancer (``llmwall_trusted_proxies``).

Behind HAProxy or Envoy every TCP connection comes from the balancer, so the peer address
alone would make every client one ``ip.src`` and a rate limit keyed on it one shared
bucket. A balancer says who its client was in ``X-Forwarded-For``, appending the address
it saw to whatever the client sent. Only the entries appended by proxies llmwall trusts
can be believed: the client writes the rest, so a left-most entry proves nothing.

The rule (the one nginx's ``real_ip_recursive`` and most frameworks follow): when the TCP
peer is a trusted proxy, walk ``X-Forwarded-For`` from the right, skipping trusted
proxies; the first address that is not one is the client. An untrusted peer's header is
ignored entirely, and a malformed entry reached on the walk means the chain cannot be
believed, so the peer address stands.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from llmwall.fields import IP_SRC
from llmwall.rules.ruleset import coerce_value

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: The header a balancer appends its client's address to (HAProxy ``option forwardfor``,
#: Envoy ``use_remote_address``, nginx ``$proxy_add_x_forwarded_for``).
HEADER = "x-forwarded-for"


def parse_trusted(text: str) -> tuple[Network, ...]:
    """Comma-separated addresses and CIDR networks; raises ``ValueError`` naming a bad item."""
    networks: list[Network] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(_unmapped_network(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
    return tuple(networks)


def client_address(peer: str, forwarded_for: Iterable[str], trusted: tuple[Network, ...]) -> str:
    """The client's address: ``peer``, or when ``peer`` is trusted, the right-most
    ``X-Forwarded-For`` entry that is not a trusted proxy (``forwarded_for``: every value of
    the header, in order). Never raises; anything unreadable leaves ``peer``."""
    if not trusted:
        return peer
    peer_ip = _address(peer)
    if peer_ip is None or not _trusted(peer_ip, trusted):
        return peer
    entries = [entry.strip() for value in forwarded_for for entry in value.split(",")]
    found: Address | None = None
    for entry in reversed(entries):
        found = _address(_without_port(entry))
        if found is None:
            return peer  # an unreadable (or empty) hop: nothing left of it can be placed
        if not _trusted(found, trusted):
            return str(found)
    # No header (the balancer's own request, a health check say): the peer. Every hop a
    # trusted proxy: the furthest one is the best that is known.
    return str(found) if found is not None else peer


def _trusted(addr: Address, trusted: tuple[Network, ...]) -> bool:
    return any(addr.version == net.version and addr in net for net in trusted)


def _address(text: str) -> Address | None:
    """An address as the rules read ``ip.src`` (IPv4-mapped IPv6, as dual-stack sockets report
    IPv4 peers, read as IPv4); None when ``text`` is not one."""
    addr = coerce_value(IP_SRC, text)
    return addr if isinstance(addr, (ipaddress.IPv4Address, ipaddress.IPv6Address)) else None


def _without_port(entry: str) -> str:
    """``203.0.113.7:4711`` and ``[2001:db8::7]:4711`` (some balancers append the port) without it."""
    if entry.startswith("["):
        host, bracket, _ = entry[1:].partition("]")
        return host if bracket else entry
    host, colon, port = entry.partition(":")
    return host if colon and ":" not in port and port.isdigit() else entry


def _unmapped_network(net: Network) -> Network:
    """``::ffff:10.0.0.0/104`` is the IPv4 network 10.0.0.0/8 (peers are compared as IPv4)."""
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96:
        mapped = net.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network(f"{mapped}/{net.prefixlen - 96}", strict=False)
    return net
