"""Rate limits in process: the rate_limits: section, the sliding window, usage parsing and the addon."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest
from conftest import chat_request_flow, free_port
from mitmproxy import ctx, exceptions
from mitmproxy.test import taddons, tflow, tutils
from provider_samples import SAMPLES

from llmwall.analytics.addon import Analytics
from llmwall.analytics.store import Store
from llmwall.providers import registry
from llmwall.proxy.addon import LLMWall
from llmwall.ratelimit.addon import RateLimiter, _error_response
from llmwall.ratelimit.backends import MemoryBackend
from llmwall.ratelimit.rules import Characteristic
from llmwall.ratelimit.window import admits, estimate, retry_after_s
from llmwall.rules import RulesError, parse_rules

VALID = """\
rules: []
rate_limits:
  - id: per-key
    description: 10k tokens a minute per API key
    characteristics:
      - http.request.headers["Authorization"]
      - cf.llm.request.model
    period: 1m
    limit: 10000
    action: block
  - id: injection-suspects
    expression: cf.llm.prompt.injection_score lt 30
    characteristics: [ip.src]
    period: 3600
    limit: 1000
    unit: prompt_tokens
    action: log
"""


class Clock:
    """A settable clock for the in-memory backend."""

    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# --------------------------------------------------------------------------- rules


def test_rate_limits_parse_with_their_defaults() -> None:
    rs = parse_rules(VALID)
    first, second = rs.rate_limits
    assert (first.id, first.period, first.limit, first.unit, first.action) == (
        "per-key",
        60,
        10000,
        "total_tokens",
        "block",
    )
    assert first.characteristics == (
        Characteristic('http.request.headers["authorization"]', "authorization"),
        Characteristic("cf.llm.request.model"),
    )
    assert first.test({}) is True  # no expression: every screened LLM request
    assert (second.unit, second.period, second.action) == ("prompt_tokens", 3600, "log")
    assert second.test({"cf.llm.prompt.injection_score": 12}) is True
    assert second.test({"cf.llm.prompt.injection_score": 80}) is False
    # the injection detector must run for the rate limit even though no rule reads the field
    assert "cf.llm.prompt.injection_score" in rs.fields


def test_rate_limit_errors_are_positioned_and_all_reported() -> None:
    text = """\
rules: []
rate_limits:
  - id: a
    expression: cf.llm.prompt.injection_scor lt 30
    characteristics: [ip.dst]
    period: 2w
    limit: 0
    unit: tokens
    action: deny
  - id: b
    characteristics: [ip.src]
    period: 60
    limit: 5
    action: block
    burst: 3
"""
    with pytest.raises(RulesError) as err:
        parse_rules(text, "r.yaml")
    got = [(e.line, e.column, e.message.split(";")[0]) for e in err.value.errors]
    assert (4, 17, "unknown field 'cf.llm.prompt.injection_scor'") in got
    assert (5, 23, "unknown characteristic 'ip.dst'") in got
    assert any(line == 6 and msg.startswith("period must be") for line, _, msg in got)
    assert any(line == 7 and msg.startswith("limit must be") for line, _, msg in got)
    assert (8, 11, "unknown unit 'tokens'") in got
    assert (9, 13, "unknown action 'deny'") in got
    assert (15, 5, "unknown key 'burst' in a rate limit") in got
    assert all(str(e).startswith("r.yaml:") for e in err.value.errors)


def test_duplicate_rate_limit_ids_and_characteristics_are_errors() -> None:
    text = (
        VALID
        + """\
  - id: per-key
    characteristics: [ip.src, ip.src]
    period: 10
    limit: 1
    unit: requests
    action: block
"""
    )
    with pytest.raises(RulesError) as err:
        parse_rules(text)
    messages = [e.message for e in err.value.errors]
    assert any("duplicate characteristic 'ip.src'" in m for m in messages)


def test_rules_check_cli_reports_a_bad_rate_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from llmwall.cli.main import main

    path = tmp_path / "rules.yaml"
    path.write_text(VALID.replace("unit: prompt_tokens", "unit: prompt_token"))
    assert main(["rules", "check", str(path)]) != 0
    out = capsys.readouterr()
    assert "unknown unit 'prompt_token'; did you mean 'prompt_tokens'?" in out.out + out.err
    path.write_text(VALID)
    assert main(["rules", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "rate limits: 2 (2 enabled)" in out and "cf.llm.prompt.injection_score" in out


# --------------------------------------------------------------------------- window


def test_sliding_window_estimate_and_admission() -> None:
    assert estimate(prev=100, cur=10, elapsed_ms=15_000, period_ms=60_000) == pytest.approx(85)
    assert admits(used=90, cost=10, limit=100)
    assert not admits(used=90, cost=11, limit=100)
    assert not admits(used=100, cost=0, limit=100)  # a spent budget admits nothing, not even 0 tokens
    assert admits(used=99.5, cost=0, limit=100)


@pytest.mark.parametrize(
    ("prev", "cur", "elapsed", "cost", "limit"),
    [(100, 0, 0, 10, 100), (100, 50, 30_000, 20, 100), (0, 100, 10_000, 1, 100), (40, 90, 59_000, 30, 100)],
)
def test_retry_after_is_when_the_charge_fits(prev: int, cur: int, elapsed: int, cost: int, limit: int) -> None:
    period = 60_000
    wait = retry_after_s(prev, cur, elapsed, period, cost, limit) * 1000

    def used_at(t: float) -> float:  # the estimate t ms from now, nothing else charged
        e = elapsed + t
        if e < period:
            return estimate(prev, cur, e, period)
        return estimate(cur, 0, e - period, period) if e < 2 * period else 0.0

    assert not admits(used_at(0), cost, limit)
    assert admits(used_at(wait), cost, limit)
    assert not admits(used_at(wait - 1000), cost, limit)  # whole seconds, rounded up: not a second early


def test_memory_backend_never_lets_a_prompt_overrun_the_budget() -> None:
    asyncio.run(_memory_backend_never_lets_a_prompt_overrun_the_budget())


async def _memory_backend_never_lets_a_prompt_overrun_the_budget() -> None:
    clock = Clock(60 * 20_000.0)  # the start of a window
    b = MemoryBackend(clock=clock)
    assert (await b.acquire("k", 60, 100, 60)).allowed
    over = await b.acquire("k", 60, 100, 41)
    assert not over.allowed and over.used == 60 and over.retry_after >= 1
    assert (await b.acquire("k", 60, 100, 40)).allowed
    assert not (await b.acquire("k", 60, 100, 1)).allowed
    assert (await b.acquire("other", 60, 100, 100)).allowed  # keys are independent
    # Half of the next window later, half of the previous window still counts.
    clock.t += 90
    assert (await b.acquire("k", 60, 100, 50)).allowed
    assert not (await b.acquire("k", 60, 100, 1)).allowed
    clock.t += 120  # two periods on: nothing counts any more
    assert (await b.acquire("k", 60, 100, 100)).allowed


def test_memory_backend_adjusts_and_refunds_the_charged_window() -> None:
    asyncio.run(_memory_backend_adjusts_and_refunds_the_charged_window())


async def _memory_backend_adjusts_and_refunds_the_charged_window() -> None:
    clock = Clock(600.0)
    b = MemoryBackend(clock=clock)
    first = await b.acquire("k", 60, 100, 80)
    await b.adjust("k", 60, first.window, -50)  # reserved 80, used 30
    assert (await b.acquire("k", 60, 100, 70)).allowed
    await b.adjust("k", 60, first.window, -1000)  # never below zero
    assert (await b.acquire("k", 60, 100, 100)).allowed


def test_memory_backend_is_bounded() -> None:
    asyncio.run(_memory_backend_is_bounded())


async def _memory_backend_is_bounded() -> None:
    clock = Clock()
    b = MemoryBackend(max_keys=100, clock=clock)
    for i in range(1000):
        await b.acquire(f"k{i}", 60, 10, 1)
        assert len(b) <= 100
    clock.t += 1000
    await b.acquire("fresh", 60, 10, 1)
    assert len(b) <= 100


# --------------------------------------------------------------------------- usage


def _sse(*events: dict) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def answer(fmt: str, body: bytes, ctype: str):
    """What the rate limiter reads from a whole answer: the provider module's ``read_answer``."""
    return registry.BY_NAME[fmt].read_answer(body, ctype)


def test_usage_from_plain_responses_of_each_provider() -> None:
    cases = {
        "openai.chat": ({"choices": [], "usage": {"prompt_tokens": 48, "completion_tokens": 12}}, (48, 12)),
        "openai.responses": ({"output": [], "usage": {"input_tokens": 9, "output_tokens": 7}}, (9, 7)),
        "anthropic.messages": (
            {"content": [{"type": "text", "text": "x"}], "usage": {"input_tokens": 5, "output_tokens": 3}},
            (5, 3),
        ),
        "gemini.generate": (
            {"usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 6, "thoughtsTokenCount": 10}},
            (4, 16),
        ),
        "ollama.chat": (
            {"message": {"content": "hi"}, "done": True, "prompt_eval_count": 26, "eval_count": 290},
            (26, 290),
        ),
        "bedrock.converse": ({"output": {}, "usage": {"inputTokens": 11, "outputTokens": 22}}, (11, 22)),
        "cohere.chat": ({"usage": {"billed_units": {"input_tokens": 2, "output_tokens": 8}, "tokens": {}}}, (2, 8)),
    }
    for fmt, (body, expected) in cases.items():
        found = answer(fmt, json.dumps(body).encode(), "application/json")
        assert (found.prompt_tokens, found.completion_tokens) == expected, fmt
    sample = SAMPLES["openai.chat"].response
    found = answer("openai.chat", json.dumps(sample).encode(), "application/json")
    assert found.completion_tokens == sample["usage"]["completion_tokens"]


def test_usage_from_streamed_responses() -> None:
    openai = _sse(
        {"choices": [{"delta": {"content": "Hel"}}], "usage": None},
        {"choices": [{"delta": {"content": "lo"}}], "usage": None},
        {"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 2}},
    )
    anthropic = b"".join(
        b"event: %s\ndata: %s\n\n" % (e["type"].encode(), json.dumps(e).encode())
        for e in (
            {"type": "message_start", "message": {"usage": {"input_tokens": 25, "output_tokens": 1}}},
            {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Hi"}},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 15}},
        )
    )
    gemini = _sse(
        {
            "candidates": [{"content": {"parts": [{"text": "a"}]}}],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1},
        },
        {
            "candidates": [{"content": {"parts": [{"text": "b"}]}}],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 9},
        },
    )
    ollama = b'{"message":{"content":"a"},"done":false}\n{"done":true,"prompt_eval_count":7,"eval_count":33}\n'
    responses = _sse(
        {"type": "response.output_text.delta", "delta": "Hi"},
        {"type": "response.completed", "response": {"usage": {"input_tokens": 4, "output_tokens": 21}}},
    )
    for fmt, body, ctype, expected in (
        ("openai.chat", openai, "text/event-stream", 2),
        ("anthropic.messages", anthropic, "text/event-stream; charset=utf-8", 15),
        ("gemini.generate", gemini, "text/event-stream", 9),
        ("ollama.chat", ollama, "application/x-ndjson", 33),
        ("openai.responses", responses, "text/event-stream", 21),
    ):
        assert answer(fmt, body, ctype).completion_tokens == expected, fmt


def test_without_usage_the_completion_text_is_collected() -> None:
    stream = _sse({"choices": [{"delta": {"content": "Hello"}}]}, {"choices": [{"delta": {"content": " world"}}]})
    found = answer("openai.chat", stream, "text/event-stream")
    assert found.completion_tokens is None and found.text == "Hello world"
    plain = answer("openai.chat", b'{"choices":[{"message":{"content":"Bonjour"}}]}', "application/json")
    assert plain.text == "Bonjour"
    assert answer("openai.chat", b"not json", "text/plain").text == ""
    # a stream sent without its content type is still read event by event
    assert answer("openai.chat", stream, "application/octet-stream").text == "Hello world"


def test_requested_output_cap_per_provider() -> None:
    def cap(fmt: str, data: object) -> int | None:
        return registry.BY_NAME[fmt].max_output_tokens(data)

    assert cap("openai.chat", {"max_tokens": 100}) == 100
    assert cap("openai.chat", {"max_completion_tokens": 50, "max_tokens": 100}) == 50
    assert cap("anthropic.messages", {"max_tokens": 100}) == 100
    assert cap("openai.responses", {"max_output_tokens": 80}) == 80
    assert cap("gemini.generate", {"generationConfig": {"maxOutputTokens": 64}}) == 64
    assert cap("ollama.chat", {"options": {"num_predict": 32}}) == 32
    assert cap("bedrock.converse", {"inferenceConfig": {"maxTokens": 16}}) == 16
    assert cap("tgi.generate", {"inputs": "x", "parameters": {"max_new_tokens": 8}}) == 8
    assert cap("openai.chat", {"max_tokens": "lots"}) is None
    assert cap("openai.chat", {"max_tokens": -1}) is None
    assert cap("gemini.generate", {"max_tokens": 100}) is None  # not where Gemini asks for it
    assert cap("openai.chat", [1]) is None
    assert registry.for_format("custom") is registry.BY_NAME["openai.chat"]  # force-included endpoints


# --------------------------------------------------------------------------- the addon, in process

ADDON_RULES = """\
rules: []
rate_limits:
  - id: per-key
    characteristics:
      - http.request.headers["authorization"]
    period: 60
    limit: {limit}
    unit: total_tokens
    action: block
"""


@contextlib.asynccontextmanager
async def limiter(tmp_path: Path, limit: int, **opts: object):
    """LLMWall and RateLimiter in a mitmproxy test context (no models: pattern detectors and tokens)."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(ADDON_RULES.format(limit=limit))
    wall, rl, analytics = LLMWall(), RateLimiter(), Analytics()
    with taddons.context(wall, rl, analytics) as tctx:
        tctx.configure(
            wall,
            llmwall_rules=str(rules),
            llmwall_models=str(tmp_path / "no-models"),
            llmwall_workers=2,
        )
        tctx.configure(analytics, llmwall_db=str(tmp_path / "events.sqlite"))
        tctx.configure(rl, llmwall_ratelimit_secret=str(tmp_path / "secret"), **opts)
        try:
            yield wall, rl
        finally:
            rl.done()
            wall.done()
            analytics.done()


def test_addon_blocks_with_a_provider_shaped_429_and_counts_the_completion(tmp_path: Path) -> None:
    asyncio.run(_addon_blocks(tmp_path))


async def _send(wall: LLMWall, rl: RateLimiter, auth: str, completion_tokens: int = 5, max_tokens: int = 0):
    """One chat completion through both addons; the fake provider reports ``completion_tokens``."""
    flow = chat_request_flow(auth, fmt_extra={"max_tokens": max_tokens} if max_tokens else None)
    await wall.request(flow)
    await rl.request(flow)
    if flow.response is None:
        body = {"choices": [{"message": {"content": "Paris."}}], "usage": {"completion_tokens": completion_tokens}}
        headers = [(b"content-type", b"application/json")]
        flow.response = tutils.tresp(content=json.dumps(body).encode(), headers=headers)
        await rl.response(flow)
    return flow


async def _addon_blocks(tmp_path: Path) -> None:
    async with limiter(tmp_path, limit=40) as (wall, rl):
        first = await _send(wall, rl, "Bearer sk-one")
        prompt = first.metadata["llmwall"]["fields"]["cf.llm.prompt.token_count"]
        assert prompt > 0
        used = prompt + 5
        while used + prompt <= 40:
            assert (await _send(wall, rl, "Bearer sk-one")).response.status_code == 200
            used += prompt + 5
        refused = await _send(wall, rl, "Bearer sk-one")
        assert refused.response.status_code == 429
        assert int(refused.response.headers["retry-after"]) >= 1
        error = json.loads(refused.response.content)["error"]
        assert error["type"] == "rate_limit_exceeded" and "per-key" in error["message"]
        # another key has its own budget; a request whose output cap alone overruns it is refused
        assert (await _send(wall, rl, "Bearer sk-two")).response.status_code == 200
        assert (await _send(wall, rl, "Bearer sk-three", max_tokens=1000)).response.status_code == 429

        rl._flush()
        rl._io.submit(lambda: None).result()  # the event writes are done
        store = Store(tmp_path / "events.sqlite")
        try:
            top = store.rate_limit_consumers(since=0)
        finally:
            store.close()
        first_key = next(r for r in top if r["charged"] == used)
        assert first_key["blocked"] == 1 and first_key["remaining"] < 40
        dump = (tmp_path / "events.sqlite").read_bytes()
        assert b"sk-one" not in dump and b"Bearer" not in dump
        text = ctx.master.addons.get("analytics").metrics.render()[0].decode()
        assert 'llmwall_rate_limited_total{action="block",rule="per-key"} 2.0' in text


def test_addon_counts_the_response_text_when_usage_is_absent(tmp_path: Path) -> None:
    async def run() -> None:
        async with limiter(tmp_path, limit=1000) as (wall, rl):
            flow = chat_request_flow("Bearer sk-x")
            await wall.request(flow)
            await rl.request(flow)
            (charge,) = flow.metadata["llmwall_ratelimit"]
            stream = _sse({"choices": [{"delta": {"content": "one two three four"}}]})
            flow.response = tutils.tresp(content=stream, headers=[(b"content-type", b"text/event-stream")])
            await rl.response(flow)
            backend = rl.backend
            assert isinstance(backend, MemoryBackend)
            now = backend.acquire_now(charge["key"], 60, 1000, 0)
            assert now.used == charge["cost"] + 4  # "one two three four" is 4 Llama 3 tokens
            assert now.window == charge["window"]

    asyncio.run(run())


def test_addon_ignores_flows_it_does_not_act_on(tmp_path: Path) -> None:
    async def run() -> None:
        async with limiter(tmp_path, limit=1) as (wall, rl):
            flow = tflow.tflow()  # not LLM traffic
            original = flow.request.content
            await wall.request(flow)
            await rl.request(flow)
            assert flow.response is None and flow.request.content == original
            assert "llmwall_ratelimit" not in flow.metadata

    asyncio.run(run())


def test_bad_options_are_refused(tmp_path: Path) -> None:
    async def run() -> None:
        rl = RateLimiter()
        with taddons.context(rl) as tctx:
            with pytest.raises(exceptions.OptionsError, match="open' or 'closed"):
                tctx.configure(rl, llmwall_ratelimit_on_error="maybe")
            short = tmp_path / "short"
            short.write_text("abc")
            with pytest.raises(exceptions.OptionsError, match="at least 16 bytes"):
                tctx.configure(rl, llmwall_ratelimit_secret=str(short))
            with pytest.raises(exceptions.OptionsError, match="llmwall_ratelimit_redis"):
                tctx.configure(rl, llmwall_ratelimit_redis="http://not-redis")
        rl.done()

    asyncio.run(run())


def test_parallel_requests_through_the_addon_never_overrun_the_budget(tmp_path: Path) -> None:
    async def run() -> None:
        async with limiter(tmp_path, limit=200) as (wall, rl):
            flows = [chat_request_flow("Bearer sk-par", fmt_extra={"max_tokens": 10}) for _ in range(60)]

            async def request(flow) -> None:
                await wall.request(flow)
                await rl.request(flow)

            await asyncio.gather(*(request(f) for f in flows))  # all sixty in flight at once
            admitted = [f for f in flows if f.response is None]
            prompt = admitted[0].metadata["llmwall"]["fields"]["cf.llm.prompt.token_count"]
            # each admitted request holds its prompt and its max_tokens until the response
            assert len(admitted) * (prompt + 10) <= 200 < (len(admitted) + 1) * (prompt + 10)
            key = admitted[0].metadata["llmwall_ratelimit"][0]["key"]
            body = json.dumps({"choices": [], "usage": {"completion_tokens": 5}}).encode()
            for f in admitted:
                f.response = tutils.tresp(content=body, headers=[(b"content-type", b"application/json")])
            await asyncio.gather(*(rl.response(f) for f in admitted))
            assert isinstance(rl.backend, MemoryBackend)
            assert rl.backend.acquire_now(key, 60, 200, 0).used == len(admitted) * (prompt + 5)

    asyncio.run(run())


def test_store_refuses_raw_values_in_rate_limit_events(tmp_path: Path) -> None:
    store = Store(tmp_path / "e.sqlite")
    event = {
        "ts": 1.0,
        "rule": "r",
        "key": "ab" * 16,
        "phase": "request",
        "action": "block",
        "unit": "requests",
        "cost": 1,
        "used": 5,
        "limit": 5,
        "period": 60,
        "retry_after": 3,
    }
    try:
        store.record_rate_limits([event])
        with pytest.raises(ValueError, match="hex digest"):
            store.record_rate_limits([{**event, "key": "Bearer sk-secret"}])
        with pytest.raises(ValueError, match="unknown rate-limit event keys"):
            store.record_rate_limits([{**event, "header": "sk-secret"}])
        with pytest.raises(ValueError, match="integer"):
            store.record_rate_limits([{**event, "cost": "lots"}])
        (row,) = store.rate_limit_consumers(since=0, now=31.0)
        assert (row["blocked"], row["charged"], row["requests"]) == (1, 0, 1)
        assert row["remaining"] == 2  # 5 - 5 x (1 - 30/60) = 2.5, rounded down: half the usage still counts
    finally:
        store.close()


def test_unreachable_redis_fails_open_or_closed_as_configured(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there

    async def run() -> None:
        async with limiter(tmp_path, limit=1000, llmwall_ratelimit_redis=dead) as (wall, rl):
            flow = await _send(wall, rl, "Bearer sk-open")
            assert flow.response.status_code == 200  # passed, uncounted
            assert (
                'llmwall_rate_limit_unchecked_total{rule="per-key"} 1.0'
                in ctx.master.addons.get("analytics").metrics.render()[0].decode()
            )
            ctx.options.update(llmwall_ratelimit_on_error="closed")
            refused = await _send(wall, rl, "Bearer sk-closed")
            assert refused.response.status_code == 503 and refused.response.headers["retry-after"] == "1"
            assert json.loads(refused.response.content)["error"]["type"] == "server_error"

    asyncio.run(run())


@pytest.mark.parametrize(
    ("fmt", "path", "expected"),
    [
        ("anthropic.messages", ("error", "type"), "rate_limit_error"),
        ("gemini.generate", ("error", "status"), "RESOURCE_EXHAUSTED"),
        ("openai.chat", ("error", "code"), "rate_limit_exceeded"),
    ],
)
def test_429_bodies_follow_each_providers_error_schema(fmt: str, path: tuple[str, str], expected: str) -> None:
    resp = _error_response(fmt, 429, "Rate limit exceeded", 7, "r")
    body = json.loads(resp.content)
    assert body[path[0]][path[1]] == expected
    assert resp.status_code == 429 and resp.headers["retry-after"] == "7"
    bedrock = _error_response("bedrock.converse", 429, "m", 3, "r")
    assert bedrock.headers["x-amzn-ErrorType"] == "ThrottlingException"
    assert json.loads(_error_response("ollama.chat", 429, "m", 3, "r").content) == {"error": "m"}
