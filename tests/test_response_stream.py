"""End to end: the official openai/anthropic SDKs stream answers through a real mitmdump
running llmwall, from a mock upstream that splits the answer at any byte."""

from __future__ import annotations

import http.client
import json
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest
from conftest import Proxy

from llmwall.analytics.store import Store

sys.path.insert(0, str(Path(__file__).parent / "support"))
from streams import (  # noqa: E402
    Reply,
    StreamUpstream,
    anthropic_events,
    events_of,
    openai_chat_events,
    openai_chat_json,
    serve,
    split_at,
)

RESPONSE_RULES = """\
rules:
  - id: block-prompt-pii
    expression: cf.llm.prompt.pii_detected
    action: block
  - id: redact-answer-pii
    expression: cf.llm.response.pii_detected
    action: redact
  - id: block-answer-secrets
    expression: cf.llm.response.secret_detected
    action: block
"""
EMAIL = "alice.liddell@example.com"
TOKEN = "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
ASK = [{"role": "user", "content": "Who should I write to?"}]


@pytest.fixture
def upstream() -> Iterator[StreamUpstream]:
    """Replaces conftest's upstream: start_proxy puts mitmdump in front of this one."""
    state = StreamUpstream()
    server = serve(state)
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(start_proxy, tmp_path: Path) -> Proxy:
    running = start_proxy(rules=RESPONSE_RULES, models=tmp_path / "no-models")
    running.wait_for_log("listening at")  # the port may accept before the addon has loaded
    return running


def oai(proxy: Proxy) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-test", max_retries=0, timeout=20)


def response_events(proxy: Proxy, expect: int = 1, timeout: float = 10.0) -> list[dict]:
    end = time.monotonic() + timeout
    found: list[dict] = []
    while time.monotonic() < end:
        if proxy.db_path.exists():
            store = Store(proxy.db_path)
            try:
                found = [e for e in store.events(limit=1000) if e["status"] == "response"]
            finally:
                store.close()
            if len(found) >= expect:
                return found
        time.sleep(0.1)
    raise AssertionError(f"expected {expect} response events, found {len(found)}:\n{proxy.log()[-2000:]}")


def streamed_text(stream) -> tuple[str, list]:
    chunks = list(stream)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks


def test_first_event_arrives_at_once_not_when_the_stream_ends(proxy: Proxy, upstream: StreamUpstream) -> None:
    words = [f"word{i} " for i in range(9)]
    upstream.answer = lambda path, body: Reply(events_of(openai_chat_events(words)), delay=0.2)
    stream = oai(proxy).chat.completions.create(model="gpt-test", messages=ASK, stream=True)
    arrivals = [time.monotonic() for _ in stream]
    sent = upstream.exchanges[0].chunk_times
    # The upstream needs 2.2 s for its 12 events; buffered, every event would arrive after that.
    # Events arrive as they are sent; one whose window is still being screened when the
    # proxy moves on goes out with the next piece (0.2 s later), never later than that.
    lags = sorted(arrived - sent[i] for i, arrived in enumerate(arrivals[: len(sent) - 1]))
    assert lags[len(lags) // 2] < 0.1 and lags[-1] < 0.2 + 0.15, lags
    assert arrivals[0] - sent[0] < 0.15
    assert response_events(proxy)[0]["action"] is None


def test_email_split_across_events_and_bytes_is_redacted(proxy: Proxy, upstream: StreamUpstream) -> None:
    sentence = f"Please write to {EMAIL} today."
    cut = sentence.index("@") - 3
    data = openai_chat_events([sentence[:cut], sentence[cut:]], usage=9)
    rng = random.Random(13)
    upstream.answer = lambda path, body: Reply(split_at(data, rng.sample(range(1, len(data)), 12)), delay=0.01)
    with oai(proxy).chat.completions.create(model="gpt-test", messages=ASK, stream=True) as stream:
        text, _ = streamed_text(stream)
    assert text == "Please write to <EMAIL_ADDRESS> today."
    event = response_events(proxy)[0]
    assert event["action"] == "redact" and event["redacted"] == ["EMAIL_ADDRESS"]
    assert event["fields"]["cf.llm.response.pii_categories"] == ["EMAIL_ADDRESS"]
    assert event["fields"]["cf.llm.response.token_count"] == 9  # from the stream's usage
    assert EMAIL not in proxy.log() and "liddell" not in proxy.db_path.read_bytes().decode("latin-1")


def test_tool_call_arguments_are_redacted_across_events(proxy: Proxy, upstream: StreamUpstream) -> None:
    args = json.dumps({"to": EMAIL, "body": "hello"})
    cut = args.index("@") + 4
    data = openai_chat_events(["Sending it now."], tool_pieces=[args[:cut], args[cut:]])
    upstream.answer = lambda path, body: Reply(events_of(data), delay=0.01)
    with oai(proxy).chat.completions.create(model="gpt-test", messages=ASK, stream=True) as stream:
        chunks = list(stream)
    pieces = [
        call.function.arguments or ""
        for c in chunks
        if c.choices and c.choices[0].delta.tool_calls
        for call in c.choices[0].delta.tool_calls
    ]
    assert json.loads("".join(pieces)) == {"to": "<EMAIL_ADDRESS>", "body": "hello"}


def test_secret_mid_stream_cuts_the_openai_stream_cleanly(proxy: Proxy, upstream: StreamUpstream) -> None:
    pieces = ["Here is ", "the token: ", TOKEN[:10], TOKEN[10:], " keep it safe. ", "More text."]
    upstream.answer = lambda path, body: Reply(events_of(openai_chat_events(pieces)), delay=0.05)
    with oai(proxy).chat.completions.create(model="gpt-test", messages=ASK, stream=True) as stream:
        text, chunks = streamed_text(stream)  # ends: no exception, no hang
    assert text == "Here is the token: "
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    assert "block-answer-secrets" in (chunks[-1].choices[0].delta.refusal or "")
    event = response_events(proxy)[0]
    assert event["action"] == "block" and event["rule"] == "block-answer-secrets"
    assert event["response"]["end"] == "cut"


def test_secret_mid_stream_raises_in_the_anthropic_sdk(proxy: Proxy, upstream: StreamUpstream) -> None:
    pieces = ["Your token is ", TOKEN[:15], TOKEN[15:], ". Bye."]
    upstream.answer = lambda path, body: Reply(events_of(anthropic_events(pieces)), delay=0.02)
    claude = anthropic.Anthropic(base_url=proxy.url, api_key="sk-ant-test", max_retries=0, timeout=20)
    received = []
    with pytest.raises(anthropic.APIStatusError) as err:
        with claude.messages.stream(model="claude-test", max_tokens=100, messages=ASK) as stream:
            for text in stream.text_stream:
                received.append(text)
    assert "".join(received) == "Your token is "
    assert "block-answer-secrets" in str(err.value)
    assert response_events(proxy)[0]["format"] == "anthropic.messages"


def test_streamed_and_whole_answers_get_the_same_treatment(proxy: Proxy, upstream: StreamUpstream) -> None:
    def answer(path: str, body: bytes) -> Reply:
        text = f"Contact {EMAIL} please."
        if json.loads(body).get("stream"):
            return Reply(events_of(openai_chat_events([text[:14], text[14:]])))
        return Reply([openai_chat_json(text)], "application/json")

    upstream.answer = answer
    client = oai(proxy)
    whole = client.chat.completions.create(model="gpt-test", messages=ASK).choices[0].message.content
    with client.chat.completions.create(model="gpt-test", messages=ASK, stream=True) as stream:
        streamed, _ = streamed_text(stream)
    assert whole == streamed == "Contact <EMAIL_ADDRESS> please."

    def secret(path: str, body: bytes) -> Reply:
        text = f"The token is {TOKEN}."
        if json.loads(body).get("stream"):
            return Reply(events_of(openai_chat_events([text[:20], text[20:]])))
        return Reply([openai_chat_json(text)], "application/json")

    upstream.answer = secret
    with pytest.raises(openai.PermissionDeniedError) as err:
        client.chat.completions.create(model="gpt-test", messages=ASK)
    assert "Response blocked by llmwall (rule block-answer-secrets)" in str(err.value)
    with client.chat.completions.create(model="gpt-test", messages=ASK, stream=True) as stream:
        streamed, chunks = streamed_text(stream)
    assert TOKEN[:8] not in streamed and chunks[-1].choices[0].finish_reason == "content_filter"
    actions = sorted(e["action"] for e in response_events(proxy, expect=4))
    assert actions == ["block", "block", "redact", "redact"]


def _stream_request(proxy: Proxy) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    body = json.dumps({"model": "gpt-test", "messages": ASK, "stream": True})
    conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
    return conn


def test_client_hanging_up_mid_stream_releases_everything(proxy: Proxy, upstream: StreamUpstream) -> None:
    words = [f"w{i} " for i in range(200)]
    upstream.answer = lambda path, body: Reply(events_of(openai_chat_events(words)), delay=0.02)
    conn = _stream_request(proxy)
    resp = conn.getresponse()
    assert resp.status == 200
    resp.read1(64)
    conn.sock.close()  # the client goes away after its first bytes
    conn.close()
    exchange = upstream.exchanges[0]
    assert exchange.done.wait(10)
    assert exchange.client_gone  # the proxy dropped the upstream too instead of draining it
    event = response_events(proxy)[0]
    assert event["response"]["end"] == "interrupted"
    log = proxy.log()
    assert "Traceback" not in log and "llmwall: response" not in log


def test_upstream_hanging_up_mid_stream_ends_the_client_stream(proxy: Proxy, upstream: StreamUpstream) -> None:
    words = [f"w{i} " for i in range(20)]
    upstream.answer = lambda path, body: Reply(events_of(openai_chat_events(words)), delay=0.02, hang_up_after=5)
    received = []
    with pytest.raises((openai.APIError, openai.APIConnectionError)):
        with oai(proxy).chat.completions.create(model="gpt-test", messages=ASK, stream=True) as stream:
            for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")
    assert "".join(received).startswith("w0 w1 w2")
    event = response_events(proxy)[0]
    assert event["response"]["end"] == "interrupted"
    assert "Traceback" not in proxy.log()


def test_whole_answers_of_every_format_are_redacted(proxy: Proxy, upstream: StreamUpstream) -> None:
    from provider_samples import SAMPLES

    from llmwall.providers import registry
    from llmwall.responses.formats import locate

    answers: dict[str, bytes] = {}
    for fmt, sample in SAMPLES.items():
        provider = registry.get(fmt)
        assert provider is not None
        response = json.loads(json.dumps(sample.response))
        path = locate(response, provider.response_text(response).text, "text")[0].path
        assert path is not None, fmt
        node = response
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = f"Write to {EMAIL} today."
        answers[sample.path.partition("?")[0]] = json.dumps(response).encode()

    upstream.answer = lambda path, body: Reply([answers[path.partition("?")[0]]], "application/json")
    for fmt, sample in SAMPLES.items():
        status, _, body = _post(proxy, sample.path, sample.body)
        assert status == 200, (fmt, body[:300])
        text = registry.get(fmt).response_text(json.loads(body)).text  # type: ignore[union-attr]
        assert "Write to <EMAIL_ADDRESS> today." in text, (fmt, text)
        assert b"liddell" not in body, fmt
    assert {e["format"] for e in response_events(proxy, expect=len(SAMPLES))} == set(SAMPLES)


def _post(proxy: Proxy, path: str, body: dict) -> tuple[int, dict, bytes]:
    from conftest import post

    return post(proxy.url + path, body)


def test_gzip_stream_is_decoded_screened_and_forwarded_decoded(proxy: Proxy, upstream: StreamUpstream) -> None:
    import zlib

    sentence = f"Write to {EMAIL} today."
    data = openai_chat_events([sentence[:12], sentence[12:]])
    gzip = zlib.compressobj(wbits=31)
    packed = [gzip.compress(event) + gzip.flush(zlib.Z_SYNC_FLUSH) for event in events_of(data)]
    packed.append(gzip.flush())

    def answer(path: str, body: bytes) -> Reply:
        return Reply(packed, headers={"content-encoding": "gzip"})

    upstream.answer = answer
    with oai(proxy).chat.completions.create(model="gpt-test", messages=ASK, stream=True) as stream:
        text, _ = streamed_text(stream)
        assert "content-encoding" not in stream.response.headers
    assert text == "Write to <EMAIL_ADDRESS> today."
