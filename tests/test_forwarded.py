"""``llmwall_trusted_proxies``: ip.src behind a load balancer, and X-Forwarded-For that cannot be spoofed.

The resolution rule in isolation (``llmwall.proxy.forwarded``), then in process with
mitmproxy's ``taddons``: the screening addon's rules and the rate limiter's ``ip.src``
budgets read the same resolved address. A real HAProxy in front of two instances is
tests/test_scale_out.py.
"""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path

import pytest
from conftest import chat_request_flow
from hypothesis import given
from hypothesis import strategies as st
from mitmproxy import exceptions
from mitmproxy.test import taddons, tflow

from llmwall import fields
from llmwall.analytics.addon import Analytics
from llmwall.proxy.addon import LLMWall, request_fields
from llmwall.proxy.forwarded import client_address, parse_trusted
from llmwall.ratelimit.addon import RateLimiter

BALANCER = "10.0.0.5"
TRUSTED = parse_trusted("10.0.0.5, 10.1.0.0/16")
CLIENT = "203.0.113.7"


# --------------------------------------------------------------------------- the rule itself


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        # the balancer's own address is replaced by the client it forwarded for
        (BALANCER, [CLIENT], CLIENT),
        # a client-supplied left-most entry never wins over what the balancer appended
        (BALANCER, [f"198.51.100.1, {CLIENT}"], CLIENT),
        (BALANCER, ["198.51.100.1", CLIENT], CLIENT),  # the same, as two header lines
        # spoofing a trusted address on the left does not help either
        (BALANCER, [f"10.1.2.3, {CLIENT}"], CLIENT),
        # a chain of trusted proxies is walked through
        (BALANCER, [f"{CLIENT}, 10.1.0.9"], CLIENT),
        (BALANCER, [f"{CLIENT}, 10.1.0.9, 10.1.0.8"], CLIENT),
        # every hop trusted: the furthest one
        (BALANCER, ["10.1.0.9, 10.1.0.8"], "10.1.0.9"),
        # no header (the balancer's own health check): the balancer
        (BALANCER, [], BALANCER),
        # ports some balancers append; IPv6 with and without brackets
        (BALANCER, [f"{CLIENT}:4711"], CLIENT),
        (BALANCER, ["[2001:db8::7]:4711"], "2001:db8::7"),
        (BALANCER, ["2001:DB8::7"], "2001:db8::7"),
        (BALANCER, ["::ffff:203.0.113.7"], CLIENT),
        # dual-stack sockets report an IPv4 balancer as IPv4-mapped IPv6
        ("::ffff:10.0.0.5", [CLIENT], CLIENT),
        # an untrusted peer's header is ignored entirely, whatever it says
        ("198.51.100.1", [CLIENT], "198.51.100.1"),
        ("198.51.100.1", [BALANCER], "198.51.100.1"),
        ("10.0.0.6", [CLIENT], "10.0.0.6"),
        # malformed entries on the walk: the peer stands, nothing raises
        (BALANCER, ["unknown"], BALANCER),
        (BALANCER, [""], BALANCER),
        (BALANCER, [","], BALANCER),
        (BALANCER, [f"{CLIENT},"], BALANCER),
        (BALANCER, [f"{CLIENT}, 10.1.0.9, nonsense"], BALANCER),
        (BALANCER, ["999.0.0.1"], BALANCER),
        (BALANCER, [f"{CLIENT}:"], BALANCER),
        (BALANCER, [f"{CLIENT}:http"], BALANCER),
        (BALANCER, ["[2001:db8::7"], BALANCER),
        (BALANCER, ["for=203.0.113.7"], BALANCER),  # RFC 7239 syntax is another header's
        # junk left of the client is never reached (the client wrote it)
        (BALANCER, [f"unknown, {CLIENT}"], CLIENT),
        # a peer that is not an address at all (a unix socket, say) stays what it was
        ("", [CLIENT], ""),
    ],
)
def test_client_address(peer: str, xff: list[str], expected: str) -> None:
    assert client_address(peer, xff, TRUSTED) == expected


def test_nobody_is_trusted_by_default() -> None:
    assert parse_trusted("") == ()
    assert client_address(BALANCER, [CLIENT], ()) == BALANCER


def test_trusted_proxies_parse_addresses_and_networks() -> None:
    assert parse_trusted(" 10.0.0.5 ,10.1.0.0/16,,2001:db8::/32") == (
        ipaddress.ip_network("10.0.0.5/32"),
        ipaddress.ip_network("10.1.0.0/16"),
        ipaddress.ip_network("2001:db8::/32"),
    )
    assert parse_trusted("10.1.2.3/16") == (ipaddress.ip_network("10.1.0.0/16"),)  # host bits dropped
    assert parse_trusted("::ffff:10.0.0.0/104") == (ipaddress.ip_network("10.0.0.0/8"),)
    for bad in ("haproxy.internal", "10.0.0.0/33", "10.0.0.5;10.0.0.6"):
        with pytest.raises(ValueError, match="not an IP address"):
            parse_trusted(bad)


_hop = st.one_of(
    st.ip_addresses().map(str),
    st.sampled_from(["10.0.0.5", "10.1.4.4", "unknown", "", " ", "[::1]:80", "1.2.3.4:5", CLIENT]),
    st.text(max_size=12),
)
_header = st.lists(_hop, max_size=6).map(", ".join)


@given(st.lists(_header, max_size=3), st.sampled_from([BALANCER, "198.51.100.1"]))
def test_any_header_gives_the_peer_or_an_address(xff: list[str], peer: str) -> None:
    found = client_address(peer, xff, TRUSTED)
    if found != peer:
        assert peer == BALANCER  # only a trusted peer's header is read
        ipaddress.ip_address(found)


@given(st.lists(_header, max_size=3), st.booleans())
def test_whatever_the_client_sends_the_address_the_balancer_appends_wins(spoofed: list[str], one_line: bool) -> None:
    """The client controls every entry but the one the trusted balancer appends."""
    xff = [", ".join([*spoofed, CLIENT])] if one_line else [*spoofed, CLIENT]
    assert client_address(BALANCER, xff, TRUSTED) == CLIENT


# --------------------------------------------------------------------------- in process


RULES = """\
rules:
  - id: block-documentation-net
    expression: ip.src in {203.0.113.0/24}
    action: block
rate_limits:
  - id: per-ip
    characteristics: [ip.src]
    period: 1h
    limit: 2
    unit: requests
    action: block
"""


def _flow(peer: str, xff: str | None = None) -> tflow.HTTPFlow:
    flow = chat_request_flow(headers=((b"x-forwarded-for", xff.encode()),) if xff is not None else ())
    flow.client_conn.peername = (peer, 40000)
    return flow


async def _through(wall: LLMWall, rl: RateLimiter, flow: tflow.HTTPFlow) -> int:
    """The flow through screening and the rate limiter: the status it would get (200: forwarded)."""
    await wall.request(flow)
    await rl.request(flow)
    return flow.response.status_code if flow.response is not None else 200


def test_screening_and_rate_limits_read_the_resolved_address(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)

    async def test() -> None:
        wall, rl, analytics = LLMWall(), RateLimiter(), Analytics()
        with taddons.context(wall, rl, analytics) as tctx:
            tctx.configure(
                wall, llmwall_rules=str(rules), llmwall_models=str(tmp_path / "no-models"), llmwall_workers=2
            )
            tctx.configure(analytics, llmwall_db="")
            tctx.configure(rl, llmwall_ratelimit_secret=str(tmp_path / "secret"))
            try:
                # Trusting nobody (the default), the header is ignored: the balancer is the client.
                assert request_fields(_flow(BALANCER, CLIENT), wall.trusted_proxies)[fields.IP_SRC] == BALANCER
                assert await _through(wall, rl, _flow(BALANCER, CLIENT)) == 200

                tctx.configure(wall, llmwall_trusted_proxies=f"{BALANCER},10.1.0.0/16")
                # A rule on ip.src sees the client the balancer forwarded for...
                assert await _through(wall, rl, _flow(BALANCER, CLIENT)) == 403
                # ...which a client cannot fake by adding the blocked address on the left,
                assert await _through(wall, rl, _flow(BALANCER, f"{CLIENT}, 198.51.100.1")) == 200
                # nor by connecting directly with the header (an untrusted peer).
                assert await _through(wall, rl, _flow("198.51.100.9", CLIENT)) == 200

                # ip.src budgets: one per client behind the balancer, and 2 requests each.
                assert [await _through(wall, rl, _flow(BALANCER, "192.0.2.1")) for _ in range(3)] == [200, 200, 429]
                assert await _through(wall, rl, _flow(BALANCER, "192.0.2.2")) == 200
                # A client out of budget does not escape it with a spoofed header of its own...
                assert await _through(wall, rl, _flow(BALANCER, "192.0.2.77, 192.0.2.1")) == 429
                assert await _through(wall, rl, _flow(BALANCER, "10.1.0.3, 192.0.2.1")) == 429
                # ...and a malformed one falls back to the balancer's address, which has its own budget
                # (the first request above, from before the balancer was trusted, spent one of its two).
                assert await _through(wall, rl, _flow(BALANCER, "192.0.2.1, junk")) == 200
                assert await _through(wall, rl, _flow(BALANCER)) == 429

                wall.running()  # a live change to a bad value is refused, the old one stays
                with pytest.raises(exceptions.OptionsError, match="llmwall_trusted_proxies: 'lb.internal'"):
                    tctx.configure(wall, llmwall_trusted_proxies="lb.internal")
                assert request_fields(_flow(BALANCER, CLIENT), wall.trusted_proxies)[fields.IP_SRC] == CLIENT
            finally:
                rl.done()
                wall.done()
                analytics.done()

    asyncio.run(test())
