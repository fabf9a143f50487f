"""Issue 15's scale-out recipe end to end: a real HAProxy in front of two llmwall instances sharing Redis.

What runs is docs/scale-out.md's HAProxy configuration (its first ``haproxy`` block, with
the addresses and ports replaced by local ones and a stats socket added to read the health
checks' verdicts): ``option forwardfor`` and HTTP health checks in front of two real
``mitmdump -s addon/llmwall/mitm_entry.py`` instances in reverse mode, each with its own
SQLite database, both with the embedded models, counters in one real ``redis-server``, one
key secret, and the balancer's address in ``llmwall_trusted_proxies``. Clients connect from
their own loopback addresses (127.0.0.2, 127.0.0.3, ...: Linux loopback accepts any 127/8
source), so each is a different ``ip.src`` only if the instances read HAProxy's
X-Forwarded-For.

The instances are started once for the module; every test uses client addresses of its own,
so the budgets do not interfere. The last test stops one instance. HAProxy is Debian's
package (scripts/test.sh installs it, as it does redis-server). No timing is asserted.
"""

from __future__ import annotations

import csv
import http.client
import io
import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import openai
import pytest
from conftest import (
    ROOT,
    FakeUpstream,
    Proxy,
    RedisServer,
    completion_reply,
    free_port,
    launch_proxy,
    serve_upstream,
    start_process,
    stop_process,
    stored_rows,
)
from security_support import UNSAFE

HAPROXY = shutil.which("haproxy")
RECIPE = ROOT / "docs" / "scale-out.md"
CHAT = "/v1/chat/completions"
#: Where HAProxy's connections to the instances come from: the one trusted proxy.
BALANCER = "127.0.0.1"
#: Requests per client address per hour, across both instances.
LIMIT = 4
RULES = f"""\
rules:
  - id: block-unsafe
    expression: cf.llm.prompt.unsafe_topic_detected
    action: block
rate_limits:
  - id: per-client
    characteristics: [ip.src]
    period: 1h
    limit: {LIMIT}
    unit: requests
    action: block
"""
BENIGN = "What is the capital of France?"


def chat(text: str = BENIGN) -> dict:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}


# --------------------------------------------------------------------------- the balancer


def documented_config() -> str:
    """The HAProxy configuration docs/scale-out.md gives (its first ``haproxy`` block)."""
    found = re.search(r"```haproxy\n(.*?)```", RECIPE.read_text(encoding="utf-8"), re.S)
    assert found, f"no ```haproxy block in {RECIPE}"
    return found.group(1)


def local_config(doc: str, port: int, servers: list[int], stats: Path) -> str:
    """The documented configuration on loopback: ``bind`` and each ``server`` address replaced,
    everything else (forwardfor, health checks, balancing) as documented; plus a stats socket."""
    out: list[str] = []
    ports = iter(servers)
    for line in doc.splitlines():
        words = line.split()
        if words[:1] == ["bind"]:
            line = f"    bind 127.0.0.1:{port}"
        elif words[:1] == ["server"]:
            line = "    " + " ".join(["server", words[1], f"127.0.0.1:{next(ports)}", *words[3:]])
        out.append(line)
        if words == ["global"]:
            out.append(f"    stats socket {stats} mode 600 level admin")
    assert next(ports, None) is None, "the documented backend lists fewer servers than the test starts"
    return "\n".join(out) + "\n"


@dataclass
class Balancer:
    """A running haproxy and its stats socket."""

    port: int
    stats: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def servers(self) -> dict[str, str]:
        """Each backend server's status as the health checks see it (``UP``, ``DOWN``, ``UP 1/2``, ...)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.stats))
            sock.sendall(b"show stat\n")
            data = b"".join(iter(lambda: sock.recv(65536), b""))
        rows = csv.DictReader(io.StringIO(data.decode().removeprefix("# ")))
        return {r["svname"]: r["status"] for r in rows if r["svname"] not in ("FRONTEND", "BACKEND")}

    def wait_until(self, server: str, status: str, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        while (seen := self.servers().get(server)) != status:
            if time.monotonic() > end:
                raise AssertionError(f"haproxy server {server} is {seen!r}, not {status!r}: {self.servers()}")
            time.sleep(0.2)


def start_balancer(tmp: Path, servers: list[int]) -> Balancer:
    assert HAPROXY is not None, "haproxy is missing: scripts/test.sh installs it (apt-get install haproxy)"
    port, stats = free_port(), tmp / "haproxy.sock"
    config = tmp / "haproxy.cfg"
    config.write_text(local_config(documented_config(), port, servers, stats))
    log_path = tmp / "haproxy.log"
    proc = start_process([HAPROXY, "-db", "-f", str(config)], port, log_path)
    return Balancer(port, stats, proc, log_path)


# --------------------------------------------------------------------------- the cluster


@dataclass
class Cluster:
    upstream: FakeUpstream
    instances: list[Proxy]  # instances[i] is the documented backend's i-th server
    names: list[str]  # their server names in the HAProxy backend
    balancer: Balancer


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("scale-out")
    secret = tmp / "ratelimit.key"
    secret.write_bytes(b"scale-out test secret, 32 bytes")
    redis = RedisServer(tmp)
    redis.start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with serve_upstream() as upstream:
            upstream.responses[CHAT] = completion_reply(5)
            instances: list[Proxy] = []
            for _ in range(2):
                instances.append(
                    launch_proxy(
                        tmp,
                        upstream,
                        RULES,
                        llmwall_ratelimit_redis=redis.url,
                        llmwall_ratelimit_secret=secret,
                        llmwall_trusted_proxies=BALANCER,
                    )
                )
                procs.append(instances[-1].process)
            balancer = start_balancer(tmp, [p.port for p in instances])
            procs.append(balancer.process)
            names = [line.split()[1] for line in documented_config().splitlines() if line.split()[:1] == ["server"]]
            for name in names:
                balancer.wait_until(name, "UP")
            yield Cluster(upstream, instances, names, balancer)
    finally:
        for proc in reversed(procs):
            stop_process(proc)
        redis.stop()


# --------------------------------------------------------------------------- clients


def post_from(source: str, url: str, body: dict, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """POST from the loopback address ``source`` (a new connection each time)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60, source_address=(source, 0))
    try:
        conn.request("POST", parts.path, json.dumps(body), {"content-type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def sdk_from(source: str, url: str) -> openai.OpenAI:
    """The official OpenAI client, connecting from ``source``; no retries (a 429 is the answer)."""
    transport = httpx.HTTPTransport(local_address=source)
    client = httpx.Client(transport=transport, trust_env=False, timeout=60)
    return openai.OpenAI(base_url=url + "/v1", api_key="sk-scale-out", max_retries=0, http_client=client)


def chats_received(cluster: Cluster) -> int:
    """Chat requests the upstream received (the balancer's health checks reach it too)."""
    return sum(r.path == CHAT for r in cluster.upstream.received)


def marks(cluster: Cluster, table: str) -> list[int]:
    """The last row id of ``table`` in each instance's database once no more writes are pending
    (earlier tests' rows are written in batches every 250 ms): what a test writes comes after it."""
    last: list[int] = []
    for _ in range(50):
        now = [max((r["id"] for r in stored_rows(p, table, 0, 0)), default=0) for p in cluster.instances]
        if now == last:
            break
        last = now
        time.sleep(0.6)
    return last


def written_since(cluster: Cluster, table: str, since: list[int], total: int) -> list[list[dict]]:
    """Each instance's rows of ``table`` after ``since``, once ``total`` were written (writes are batched)."""
    end = time.monotonic() + 20
    while True:
        pairs = zip(cluster.instances, since, strict=True)
        rows = [[r for r in stored_rows(p, table, 0, 0) if r["id"] > m] for p, m in pairs]
        if sum(map(len, rows)) >= total or time.monotonic() > end:
            return rows
        time.sleep(0.1)


# --------------------------------------------------------------------------- the recipe


def test_the_documented_haproxy_config_is_valid_as_written(tmp_path: Path) -> None:
    assert HAPROXY is not None, "haproxy is missing: scripts/test.sh installs it (apt-get install haproxy)"
    (tmp_path / "doc.cfg").write_text(documented_config())
    res = subprocess.run([HAPROXY, "-c", "-f", str(tmp_path / "doc.cfg")], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_requests_through_the_balancer_reach_both_instances(cluster: Cluster) -> None:
    since, forwarded = marks(cluster, "events"), chats_received(cluster)
    statuses = [post_from("127.0.0.10", cluster.balancer.url + CHAT, chat())[0] for _ in range(LIMIT)]
    assert statuses == [200] * LIMIT
    events = written_since(cluster, "events", since, LIMIT)
    assert [len(e) > 0 for e in events] == [True, True], [len(e) for e in events]  # both screened some
    assert sum(map(len, events)) == LIMIT
    assert all(e["status"] == "screened" and e["action"] is None for rows in events for e in rows)
    assert chats_received(cluster) == forwarded + LIMIT


def test_a_budget_keyed_by_ip_src_is_shared_by_the_instances(cluster: Cluster) -> None:
    since = marks(cluster, "rate_limit_events")
    statuses = [post_from("127.0.0.2", cluster.balancer.url + CHAT, chat())[0] for _ in range(2 * LIMIT)]
    assert statuses == [200] * LIMIT + [429] * LIMIT
    decisions = written_since(cluster, "rate_limit_events", since, 2 * LIMIT)
    for rows in decisions:
        # each instance admitted some and refused some: the budget is one, wherever a request lands
        assert {r["action"] for r in rows} == {"allow", "block"}, rows
    assert len({r["key"] for rows in decisions for r in rows}) == 1  # one client, one (hashed) key


def test_clients_behind_the_balancer_get_their_own_budgets(cluster: Cluster) -> None:
    sdk = sdk_from("127.0.0.3", cluster.balancer.url)
    for _ in range(LIMIT):
        answer = sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": BENIGN}])
        assert answer.choices[0].message.content == "One, two, three."
    with pytest.raises(openai.RateLimitError) as refused:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": BENIGN}])
    assert "per-client" in refused.value.message and int(refused.value.response.headers["retry-after"]) >= 1
    # Another address behind the same balancer: its own budget, untouched.
    assert [post_from("127.0.0.4", cluster.balancer.url + CHAT, chat())[0] for _ in range(LIMIT)] == [200] * LIMIT


def test_a_spoofed_forwarded_for_does_not_escape_the_budget(cluster: Cluster) -> None:
    url = cluster.balancer.url + CHAT
    assert [post_from("127.0.0.5", url, chat())[0] for _ in range(LIMIT)] == [200] * LIMIT
    for spoofed in ("198.51.100.23", "127.0.0.6", BALANCER, f"{BALANCER}, 198.51.100.23", "unknown", ""):
        status, body = post_from("127.0.0.5", url, chat(), {"x-forwarded-for": spoofed})
        assert status == 429, (spoofed, body)
    # The address it claimed to be (127.0.0.6) was not charged either.
    assert [post_from("127.0.0.6", url, chat())[0] for _ in range(LIMIT)] == [200] * LIMIT


def test_with_one_instance_stopped_the_other_takes_everything_and_still_screens(cluster: Cluster) -> None:
    """Last in the module: it stops the first instance."""
    since = marks(cluster, "events")
    stop_process(cluster.instances[0].process)
    cluster.balancer.wait_until(cluster.names[0], "DOWN")  # the health check took it out
    assert cluster.balancer.servers()[cluster.names[1]] == "UP"

    sdk = sdk_from("127.0.0.7", cluster.balancer.url)
    with pytest.raises(openai.PermissionDeniedError) as blocked:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": UNSAFE}])
    assert blocked.value.response.json()["error"]["rule"] == "block-unsafe"
    statuses = [post_from("127.0.0.7", cluster.balancer.url + CHAT, chat())[0] for _ in range(LIMIT)]
    assert statuses == [200] * LIMIT  # every request answered: none sent to the stopped instance

    stopped, alive = written_since(cluster, "events", since, LIMIT + 1)
    assert stopped == [] and len(alive) == LIMIT + 1
    assert [(e["action"], e["rule"]) for e in alive].count(("block", "block-unsafe")) == 1
    # The blocked prompt's text is in neither instance's log nor database.
    for instance in cluster.instances:
        assert "pipe bomb" not in instance.log()
        assert b"pipe bomb" not in instance.db_path.read_bytes()
